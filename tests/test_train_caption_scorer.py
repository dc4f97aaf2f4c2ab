"""scripts/train_caption_scorer.py learns captions from code grids; scripts/eval_rerank.py runs end to end."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import load_script
from kinema.data.synthetic import COLORS, SHAPES, sample_scene
from kinema.decode.caption_scorer import CaptionScorer
from kinema.lm.shards import Record, ShardWriter

ts = load_script("train_caption_scorer")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_perturb_changes_one_attribute_of_one_object_or_drops_one():
    rng = random.Random(0)
    cap = "a small red circle bouncing and a large orange square falling on a gray background"
    kinds = set()
    for _ in range(60):
        twin = ts.perturb(cap, rng)
        assert twin != cap and twin.endswith("on a gray background")
        if twin in ("a small red circle bouncing on a gray background",
                    "a large orange square falling on a gray background"):
            kinds.add("drop")
            continue
        a, b = cap.split(), twin.split()
        diff = [(x, y) for x, y in zip(a, b) if x != y and x not in ("a", "an")]
        assert len(diff) == 1 and (diff[0][1] in COLORS or diff[0][1] in SHAPES), twin
        assert " a orange" not in twin and " an red" not in twin
        kinds.add("swap")
    assert kinds == {"drop", "swap"}
    assert ts.drop_object("a small red circle bouncing on a gray background", rng) is None
    three = "a small red circle bouncing, a small blue square falling and a large green circle static on a black background"
    assert ts.drop_object(three, random.Random(1)).count(" and ") == 1
    with pytest.raises(ValueError, match="no object"):
        ts.perturb("nothing here", rng)


def _toy_shards(root, n):
    """Captions of the synthetic world; each object's (colour, shape) written as one code of a 6x6 grid."""
    with ShardWriter(root, meta={"video_codebook_size": 64}) as wr:
        for i in range(n):
            cap = sample_scene(i).caption
            grid = np.zeros((2, 6, 6), np.int32)
            for k, m in enumerate(ts._OBJ.finditer(cap)):  # object k in row 2k, anywhere along it
                grid[0, 2 * k, (5 * i + 2 * k) % 6] = 1 + list(COLORS).index(m.group(3)) * 3 + SHAPES.index(m.group(4))
            wr.write(Record(i, key=f"c{i}", caption=cap, text=[1], arrays={"video": grid}))


def test_trained_scorer_tells_the_true_caption_from_its_perturbed_twin(tmp_path, capsys):
    _toy_shards(tmp_path / "shards", 400)
    assert ts.main(["--shards", str(tmp_path / "shards"), "--steps", "250", "--batch", "32", "--val", "64",
                    "--roll", "0", "--out", str(tmp_path / "sc")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held = res["heldout"]
    assert held["retrieval_top1_of_64"] > 0.2  # chance 1/64
    assert held["beats_perturbed_twin"] > 0.7  # chance 0.5
    assert res["clips"] == 400 and res["frames"] == 800  # both latent frames of every clip
    m = CaptionScorer.from_pretrained(tmp_path / "sc")
    assert m.cfg.code_bits == 6


def test_bad_arguments_are_one_line(tmp_path, capsys):
    _toy_shards(tmp_path / "shards", 20)
    assert ts.main(["--shards", str(tmp_path / "shards"), "--val", "16", "--batch", "8", "--out",
                    str(tmp_path / "sc")]) == 2
    assert "too few" in capsys.readouterr().err
    assert ts.main(["--steps", "0"]) == 2


def test_eval_rerank_runs_on_the_embedded_model(tmp_path, capsys):
    er = load_script("eval_rerank")
    assert er.main(["--prompts", "1", "--candidates", "2", "--exclude", "", "--out", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ff = res["picked"]
    assert res["candidates"] == 2 and {"first", "mean", "oracle", "pmi"} <= set(ff)
    for r in ff.values():  # the oracle picks the best candidate: no ranking aligns more often
        assert 0.0 <= r["aligned"] <= ff["oracle"]["aligned"]
    assert (tmp_path / "rerank.png").is_file() and (tmp_path / "rerank.json").is_file()
