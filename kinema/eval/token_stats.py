"""How predictable a video token stream is, measured on extracted token shards.

:mod:`kinema.eval.code_locality` probes the tokenizer with made-up pixels; this module reads the codes
the LM actually trains on (``scripts/extract_tokens.py`` shards) and reports three numbers that bound
what the LM has to learn:

- ``distinct_per_clip``: distinct video codes in one clip, averaged over clips;
- ``unigram_entropy_bits``: entropy of the code histogram pooled over all clips (bits per token, the
  loss of a model that knows nothing but the code frequencies; ``log2(codebook_size)`` at most);
- ``repeat_previous``: fraction of tokens of latent frames 1.. whose code equals the code at the same
  position one latent frame earlier (a static background repeats when the codes are local).

Lower entropy and more repeats mean cheaper prediction, though not by themselves a better video: the
tokenizer's reconstruction and round trip (``scripts/bench_video_tokenizer.py``) decide that.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["video_token_stats", "video_token_stats_from_shards"]


def video_token_stats(clips: Iterable[np.ndarray], codebook_size: int) -> dict:
    """Statistics of video code arrays, each (t, h, w) of integer codes in [0, codebook_size)."""
    clips = [np.asarray(c) for c in clips]
    if not clips:
        raise ValueError("no clips to measure")
    for c in clips:
        if c.ndim != 3:
            raise ValueError(f"expected (t, h, w) code arrays, got shape {c.shape}")
        if c.size and (c.min() < 0 or c.max() >= codebook_size):
            raise ValueError(f"codes outside [0, {codebook_size}): {c.min()}..{c.max()}")
    pooled = np.concatenate([c.ravel() for c in clips]).astype(np.int64)
    p = np.bincount(pooled, minlength=codebook_size) / max(pooled.size, 1)
    p = p[p > 0]
    repeats = [(c[1:] == c[:-1]).ravel() for c in clips if c.shape[0] > 1]
    return {
        "clips": len(clips),
        "distinct_per_clip": float(np.mean([len(np.unique(c)) for c in clips])),
        "unigram_entropy_bits": float(-(p * np.log2(p)).sum()),
        "repeat_previous": float(np.concatenate(repeats).mean()) if repeats else float("nan"),
    }


def video_token_stats_from_shards(root: str | Path, limit: int | None = None) -> dict:
    """:func:`video_token_stats` over the first ``limit`` samples (all when None) of a shard directory."""
    from kinema.lm.shards import TokenShards

    shards = TokenShards(root)
    n = len(shards) if limit is None else min(limit, len(shards))
    clips = [shards[i].arrays["video"] for i in range(n) if "video" in shards.shapes(i)]
    return {"shards": str(root), **video_token_stats(clips, int(shards.meta["video_codebook_size"]))}
