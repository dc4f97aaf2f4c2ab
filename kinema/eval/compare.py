"""Compare two generators on the same evaluation prompts, with a paired bootstrap over prompts.

48 prompts leave wide error bars: one clip is 0.02 of alignment, and the same model drew 0.083 and
0.042 on two machines. Two models judged on the same prompts are compared clip by clip: each
bootstrap replicate resamples the prompts (with replacement) and recomputes both models' summaries
on that one resample, so the spread of the difference leaves out what the prompts share (Efron &
Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13 and 16). Several runs of one model
(``kinema eval --seed S``: the same prompts, independent draws) are pooled first: clip ``i`` of
every run belongs to prompt ``i``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kinema.eval.run import summarize

__all__ = ["METRICS", "load_runs", "paired_bootstrap"]

# summary keys compared (the table's rows); slide speed is a median over objects, the rest means
METRICS = ("prompt_alignment", "color_alignment", "shape_accuracy", "motion_correct", "persistence_frames",
           "reappeared", "slide_speed_px_per_frame", "av_sync_within_one_frame")


def load_runs(dirs: list[str | Path]) -> list[list[dict]]:
    """Per prompt, the clips of every run in ``dirs`` (each a ``kinema eval --out`` directory).
    Raises ValueError when the runs did not judge the same prompts in the same order."""
    if not dirs:
        raise ValueError("no evaluation directories given")
    runs = []
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass directories written by `kinema eval --out`")
        runs.append(json.loads(path.read_text())["clips"])
    captions = [c["caption"] for c in runs[0]]
    for d, clips in zip(dirs, runs):
        if [c["caption"] for c in clips] != captions:
            raise ValueError(f"{d} judged other prompts than {dirs[0]}: compare runs of the same prompt list")
    return [[clips[i] for clips in runs] for i in range(len(captions))]


def _summary(per_prompt: list[list[dict]], idx: np.ndarray) -> dict:
    return summarize([clip for i in idx for clip in per_prompt[i]])


def paired_bootstrap(a: list[list[dict]], b: list[list[dict]], boot: int = 2000, level: float = 0.9,
                     seed: int = 0) -> dict:
    """For each metric: A's and B's value on all prompts, B - A, and the ``level`` bootstrap interval
    of B - A over prompts resampled together for both. ``a`` and ``b`` come from :func:`load_runs`
    on the same prompt list."""
    if len(a) != len(b) or any(x[0]["caption"] != y[0]["caption"] for x, y in zip(a, b)):
        raise ValueError("the two sides judged different prompts")
    if boot < 1 or not 0 < level < 1:
        raise ValueError("boot must be >= 1 and level in (0, 1)")
    n = len(a)
    everything = np.arange(n)
    sa, sb = _summary(a, everything), _summary(b, everything)
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(boot):
        idx = rng.integers(0, n, n)
        ra, rb = _summary(a, idx), _summary(b, idx)
        for m in METRICS:
            if ra[m] is not None and rb[m] is not None:
                diffs[m].append(rb[m] - ra[m])
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for m in METRICS:
        d = np.array(diffs[m])
        both = sa[m] is not None and sb[m] is not None
        out[m] = {"a": sa[m], "b": sb[m], "diff": sb[m] - sa[m] if both else None,
                  "interval": [float(np.quantile(d, lo_q)), float(np.quantile(d, hi_q))] if len(d) else None}
    return {"prompts": n, "clips_per_prompt": [len(a[0]), len(b[0])], "boot": boot, "level": level,
            "metrics": out}
