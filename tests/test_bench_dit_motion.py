"""scripts/bench_dit_motion.py: given latents come back exactly as the tokenizer decodes them, the DiT
makes the rest, and every condition is judged."""
import json

import pytest
import torch
from conftest import load_script

from kinema.data.synthetic import generate
from kinema.decode.dit_generator import DiTGenerator
from kinema.tokenizers.text import TextTokenizer
from kinema.tokenizers.video import VideoTokenizer


def test_given_latents_are_kept_and_the_rest_is_generated():
    mod = load_script("bench_dit_motion")
    vt, tt, gen = VideoTokenizer.from_pretrained(), TextTokenizer.from_pretrained(), DiTGenerator.from_pretrained()
    clip = generate(7, size=(64, 64), fps=8.0, seconds=13 / 8)
    frames = clip.frames[:13]
    latents = mod.render_latents(vt, frames)
    assert latents.shape[2] == 4
    roundtrip = mod.decode_frames(vt, latents, 13)
    two = mod.continue_render(gen, vt, tt.encode(clip.caption), latents, 2, 13, 1, 2.0, seed=0)
    assert two.shape == roundtrip.shape == (13, 64, 64, 3) and two.dtype == torch.uint8
    # the decoder is causal: the frames of the two given latents (1 + 4) are the round trip's
    assert torch.equal(two[:5], roundtrip[:5])
    assert not torch.equal(two[5:], roundtrip[5:])


def test_judges_every_condition(tmp_path, capsys):
    assert load_script("bench_dit_motion").main(["--prompts", "1", "--seconds", "1.125", "--size", "64", "--steps", "1",
                           "--out", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["prompts"] == 1 and (tmp_path / "result.json").is_file()
    assert torch.is_grad_enabled()  # the bench turns gradients off only around its own work
    for name in ("tokenizer round trip", "text only", "first latent given", "first two latents given"):
        assert 0.0 <= res[name]["color_alignment"] <= 1.0


def test_too_short_a_clip_is_refused():
    with pytest.raises(SystemExit, match="at least 9 frames"):
        load_script("bench_dit_motion").main(["--seconds", "0.5"])


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--prompts must be at least 1"):
        load_script("bench_dit_motion").main(["--prompts", "0", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="no DiT at"):
        load_script("bench_dit_motion").main(["--dit", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
