"""Token-stream statistics (kinema.eval.token_stats): known values on hand-made codes, and on shards."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kinema.eval.token_stats import video_token_stats, video_token_stats_from_shards
from kinema.lm.shards import Record, ShardWriter
from conftest import load_script


def test_static_flat_clip_is_one_code_that_always_repeats():
    s = video_token_stats([np.full((5, 4, 4), 7)], codebook_size=16)
    assert s == {"clips": 1, "distinct_per_clip": 1.0, "unigram_entropy_bits": 0.0, "repeat_previous": 1.0}


def test_uniform_codes_reach_log2_codebook_and_changing_frames_never_repeat():
    clip = np.arange(2 * 16).reshape(2, 4, 4) % 16  # both frames use all 16 codes once
    clip[1] = (clip[0] + 1) % 16  # and every position changes
    s = video_token_stats([clip], codebook_size=16)
    assert s["distinct_per_clip"] == 16
    assert math.isclose(s["unigram_entropy_bits"], 4.0)
    assert s["repeat_previous"] == 0.0


def test_half_the_positions_repeat():
    clip = np.zeros((2, 2, 2), dtype=int)
    clip[1, 0] = 1  # first row changes, second keeps its code
    assert video_token_stats([clip], codebook_size=2)["repeat_previous"] == 0.5


@pytest.mark.parametrize("bad, match", [([], "no clips"), ([np.zeros((4, 4))], r"\(t, h, w\)"),
                                        ([np.full((1, 2, 2), 9)], "outside")])
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        video_token_stats(bad, codebook_size=8)


def test_reads_extracted_shards_and_the_script_prints_json(tmp_path, capsys):
    g = np.random.default_rng(0)
    clips = [g.integers(0, 32, size=(3, 2, 2)) for _ in range(4)]
    with ShardWriter(tmp_path / "s", meta={"video_codebook_size": 32}) as w:
        for i, c in enumerate(clips):
            w.write(Record(i, f"k{i}", "cap", [1, 2], {"video": c}))
    got = video_token_stats_from_shards(tmp_path / "s", limit=3)
    assert got["clips"] == 3
    assert got["distinct_per_clip"] == video_token_stats(clips[:3], 32)["distinct_per_clip"]
    assert load_script("token_stats").main([str(tmp_path / "s")]) == 0
    assert json.loads(capsys.readouterr().out.strip())["clips"] == 4
