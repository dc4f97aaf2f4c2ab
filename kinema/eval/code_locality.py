"""How local a video tokenizer's codes are: does a token depend only on the pixels it covers?

An autoregressive LM predicts the tokens one by one, so it pays for every code that changes without
a visible reason. A code that is local (the token of an 8x8x4 block depends on that block and a small
neighbourhood) lets a static background repeat its code from latent frame to latent frame and gives
a flat background one code; a code that is global (every token sees the whole frame, e.g. through
normalisation statistics or padding borders that carry position) makes the LM predict, at every
position, a code that depends on where all objects are. This module measures that with three
numbers, each with a known ideal:

- ``flat_codes_per_frame``: distinct codes in one latent frame of a flat-colour clip (ideal 1);
- ``static_code_kept``: over clips, the fraction of tokens whose neighbourhood of pixels did not
  change between two latent frames that also kept their code (ideal 1);
- ``far_change``: one small square added to a flat clip; the fraction of tokens at least ``reach``
  tokens away from it (Chebyshev distance on the token grid) whose code changed (ideal 0).

The probes are plain pixel arrays, so any ``encode`` callable ((1, 3, T, H, W) in [-1, 1] -> (1, t,
h, w) integer codes) can be measured, not only :class:`kinema.tokenizers.video.VideoTokenizer`.
Motivated by the token-level view of MAGVIT-v2 (Yu et al., 2023, arXiv:2310.05737), whose causal
encoder this project follows; the metric itself is ours.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["code_locality", "latent_spans", "static_mask"]

Encode = Callable[[torch.Tensor], torch.Tensor]

_FLAT_COLOURS = ((0, 0, 0), (128, 128, 128), (40, 60, 150), (230, 230, 230))


def latent_spans(num_frames: int, time_factor: int) -> list[tuple[int, int]]:
    """Input frames [start, end) that latent frame t covers: frame 0 alone, then ``time_factor`` each."""
    if num_frames < 1 or (num_frames - 1) % time_factor:
        raise ValueError(f"expected 1 + {time_factor}k frames, got {num_frames}")
    return [(0, 1)] + [(1 + time_factor * k, 1 + time_factor * (k + 1)) for k in range((num_frames - 1) // time_factor)]


def static_mask(frames: np.ndarray, grid: tuple[int, int, int], margin: int = 1) -> np.ndarray:
    """(t-1, h, w) bool: for latent frames 1..t-1, tokens whose pixels, widened by ``margin`` tokens on
    every side, are the same in every input frame of this latent frame and the previous one.

    ``frames``: (T, H, W, 3) uint8 with T = 1 + f(t - 1); ``grid``: the token grid (t, h, w).
    """
    T, H, W = frames.shape[:3]
    t, h, w = grid
    if H % h or W % w:
        raise ValueError(f"frame size {H}x{W} is not a multiple of the token grid {h}x{w}")
    if t < 2:
        return np.zeros((0, h, w), dtype=bool)
    spans = latent_spans(T, (T - 1) // (t - 1))
    ph, pw = H // h, W // w
    moved = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=-1) > 0  # (T-1, H, W): pixel changed
    out = np.zeros((t - 1, h, w), dtype=bool)
    for k in range(1, t):
        lo, hi = spans[k - 1][0], spans[k][1]  # every frame of latent frames k-1 and k
        changed = moved[lo:hi - 1].any(axis=0).reshape(h, ph, w, pw).any(axis=(1, 3))  # (h, w) token changed
        if margin:
            pad = np.pad(changed, margin)
            changed = np.stack([pad[i:i + h, j:j + w] for i in range(2 * margin + 1)
                                for j in range(2 * margin + 1)]).any(axis=0)
        out[k - 1] = ~changed
    return out


def _to_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def code_locality(encode: Encode, clips: list[np.ndarray], size: tuple[int, int] = (128, 128),
                  num_frames: int = 17, square: int = 16, reach: int = 3, margin: int = 1) -> dict:
    """The three locality numbers of the module docstring for ``encode`` (see there).

    ``clips``: (T, H, W, 3) uint8 clips of ``num_frames`` frames at ``size`` (e.g. held-out synthetic
    clips); the probes (flat clips, and each with a ``square``-pixel square of the inverse colour) are made
    here at the same size.
    """
    H, W = size

    def codes_of(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            c = encode(_to_input(frames))
        return c[0].cpu().numpy()  # (t, h, w)

    flat_counts, far = [], []
    for colour in _FLAT_COLOURS:
        flat = np.empty((num_frames, H, W, 3), dtype=np.uint8)
        flat[:] = colour
        c0 = codes_of(flat)
        flat_counts.append(np.mean([len(np.unique(c0[k])) for k in range(c0.shape[0])]))
        probe = flat.copy()
        top, left = H // 8, W // 8
        probe[:, top:top + square, left:left + square] = 255 - np.asarray(colour, dtype=np.uint8)
        c1 = codes_of(probe)
        t, h, w = c1.shape
        ph, pw = H // h, W // w
        rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
        # Chebyshev distance in tokens from the tokens the square covers
        dr = np.maximum(0, np.maximum(top // ph - rows, rows - (top + square - 1) // ph))
        dc = np.maximum(0, np.maximum(left // pw - cols, cols - (left + square - 1) // pw))
        far_mask = np.maximum(dr, dc) >= reach
        if far_mask.any():
            far.append(float((c0 != c1)[:, far_mask].mean()))
    kept, n_static = 0, 0
    for frames in clips:
        if frames.shape != (num_frames, H, W, 3):
            raise ValueError(f"expected clips of shape {(num_frames, H, W, 3)}, got {frames.shape}")
        c = codes_of(frames)
        mask = static_mask(frames, c.shape, margin)
        same = c[1:] == c[:-1]
        kept += int(same[mask].sum())
        n_static += int(mask.sum())
    return {"flat_codes_per_frame": float(np.mean(flat_counts)),
            "static_code_kept": kept / n_static if n_static else float("nan"),
            "static_tokens": n_static,
            "far_change": float(np.mean(far)) if far else float("nan"),
            "reach_tokens": reach}
