"""Aspect-ratio buckets: batch clips of equal token-grid shape instead of cropping all to a square.

Each clip is assigned the bucket resolution whose aspect ratio is nearest its own (in log space),
and :class:`BucketBatchSampler` draws batches from one bucket at a time (NaViT/SDXL-style
bucketing; arXiv 2307.06304 packs instead, which the DiT path does).
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Iterator

import torch
from torch.utils.data import Sampler

# (width, height), all multiples of 16 with about 128*128 pixels.
DEFAULT_BUCKETS: tuple[tuple[int, int], ...] = ((128, 128), (160, 96), (96, 160), (144, 112), (112, 144), (176, 96))


def nearest_bucket(width: int, height: int, buckets=DEFAULT_BUCKETS) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose ``key_fn(i)`` (e.g. target (w, h) or (T, h, w)) are equal.

    Shuffles within and across buckets each epoch (seeded); the last incomplete batch of a bucket
    is kept unless ``drop_last``.
    """

    def __init__(self, keys: list | Callable[[int], object], batch_size: int, num_items: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        n = len(keys) if not callable(keys) else num_items
        if n is None:
            raise ValueError("num_items is required when keys is a function")
        key_of = keys if callable(keys) else keys.__getitem__
        self.groups: dict[object, list[int]] = defaultdict(list)
        for i in range(n):
            self.groups[key_of(i)].append(i)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for key in sorted(self.groups, key=str):
            idx = list(self.groups[key])
            if self.shuffle:
                rng.shuffle(idx)
            for s in range(0, len(idx), self.batch_size):
                b = idx[s : s + self.batch_size]
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate_clips(items: list[dict]) -> dict:
    """Stack equally shaped clips (a bucket's batch); captions/paths as lists."""
    shapes = {tuple(it["video"].shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(f"a batch mixes clip shapes {sorted(shapes)}; use BucketBatchSampler")
    out = {"video": torch.stack([it["video"] for it in items]), "caption": [it["caption"] for it in items],
           "path": [it["path"] for it in items]}
    if "audio" in items[0]:
        out["audio"] = torch.stack([it["audio"] for it in items])
    return out
