"""scripts/eval_av_sources.py: A/V sync of the true renders' own sound, its codec round trip and the
embedded LM's video-to-audio, on the same held-out prompts."""
from __future__ import annotations

import json

from conftest import load_script


def test_sources_on_true_renders(tmp_path, capsys):
    ev = load_script("eval_av_sources")
    out = tmp_path / "av.json"
    assert ev.main(["--prompts", "6", "--seconds", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    src = result["sources"]
    assert set(src) == {"truth", "codec", "v2a kinema-tiny (embedded)"}
    truth = src["truth"]
    assert truth["contacts"] >= 1  # the first prompts include bouncing objects
    assert truth["within_one_frame"] == 1.0 and truth["mean_abs_offset_frames"] < 0.5  # the render's own tones
    for s in src.values():  # every source is judged on the same videos, so the same contacts
        assert s["contacts"] == truth["contacts"] and 0.0 <= s["within_one_frame"] <= 1.0


def test_summary_skips_clips_without_contacts():
    ev = load_script("eval_av_sources")
    rows = [None, {"contacts": 0, "onsets": 3, "within_one_frame": None, "mean_abs_offset_frames": None},
            {"contacts": 2, "onsets": 2, "within_one_frame": 0.5, "mean_abs_offset_frames": 1.5},
            {"contacts": 1, "onsets": 0, "within_one_frame": 0.0, "mean_abs_offset_frames": None}]
    s = ev.summarize_av(rows)
    assert s == {"clips_with_contacts": 2, "contacts": 3, "onsets": 2, "within_one_frame": 0.25,
                 "mean_abs_offset_frames": 1.5}
