"""scripts/assemble_model.py: a model directory from kinema-tiny with components replaced."""
from __future__ import annotations

import json

import pytest

from kinema.paths import DEFAULT_MODEL
from kinema.pipeline import Pipeline
from conftest import load_script

assemble_model = load_script("assemble_model")


def test_new_video_tokenizer_drops_what_was_trained_on_the_old_codes(tmp_path, capsys):
    out = tmp_path / "model"
    # the embedded tokenizer stands in for a new one: what matters is that it was passed explicitly
    rc = assemble_model.main(["--out", str(out), "--video-tokenizer", str(DEFAULT_MODEL / "video_tokenizer")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res["dropped"]) == {"diffusion_decoder", "dit", "caption_scorer"}
    assert not (out / "dit").exists() and not (out / "diffusion_decoder").exists()
    cfg = json.loads((out / "pipeline.json").read_text())
    assert cfg["refine"] is False and cfg["candidates"] == 1
    pipe = Pipeline.from_pretrained(out)
    assert pipe.diffusion_decoder is None and pipe.caption_scorer is None and pipe.ac is not None


def test_lm_only_keeps_every_other_component(tmp_path):
    out = tmp_path / "model"
    assert assemble_model.main(["--out", str(out), "--lm", str(DEFAULT_MODEL / "lm")]) == 0
    assert {p.name for p in out.iterdir() if p.is_dir()} == {p.name for p in DEFAULT_MODEL.iterdir() if p.is_dir()}
    assert json.loads((out / "pipeline.json").read_text()) == json.loads((DEFAULT_MODEL / "pipeline.json").read_text())


def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "model"
    assert assemble_model.main(["--out", str(out), "--lm", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    # an audio codec directory in the LM's place: the assembled pipeline does not load, so nothing is kept
    assert assemble_model.main(["--out", str(out), "--lm", str(DEFAULT_MODEL / "audio_codec")]) == 2
    assert "assemble_model:" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "x").write_text("keep me")
    assert assemble_model.main(["--out", str(out), "--lm", str(DEFAULT_MODEL / "lm")]) == 2
    assert (out / "x").read_text() == "keep me"
