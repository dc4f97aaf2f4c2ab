"""Where the objects are, on a video tokenizer's latent grid.

On the synthetic world, a clip is a plain background with a few small shapes on it, so a loss that
averages over every position is ruled by the background. :func:`object_pixels` says which pixels stand
out from the clip's median colour; the tokenizer's second stage weights them
(``kinema.tokenizers.video_trainer.reconstruction_loss``), and :func:`latent_object_mask` lifts the same
notion one level up, per latent position, so a generator of latents can weight the positions that carry
the objects (``scripts/train_dit.py``'s ``train.object_weight``).

The latent grid follows the causal tokenizer (MAGVIT-v2, arXiv 2310.05737): latent frame 0 covers
video frame 0 alone, latent frame j > 0 covers frames ``1 + tf*(j-1)`` to ``tf*j``; each latent
position covers an ``H/h x W/w`` pixel block. A position is an object position when any of its pixels,
in any frame it covers, differs from the clip's median colour by more than ``threshold`` (in [0, 255]
levels, per channel).

    mask = latent_object_mask(clip.frames, grid=(5, 16, 16))   # (5, 16, 16) bool for 17 frames
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["latent_object_mask", "object_pixels"]


def object_pixels(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """x (B, 3, T, H, W) in [-1, 1] -> (B, 1, T, H, W) bool: pixels whose colour differs from their clip's
    median (per channel) by more than ``threshold`` in some channel. The one definition of "object" for
    the tokenizer's weighted loss and for :func:`latent_object_mask`."""
    med = x.flatten(2).median(dim=2).values[:, :, None, None, None]  # (B, 3, 1, 1, 1)
    return (x - med).abs().amax(dim=1, keepdim=True) > threshold


def latent_object_mask(frames: torch.Tensor, grid: tuple[int, int, int], threshold: float = 12.75) -> torch.Tensor:
    """frames (T, H, W, 3) uint8 with T = 1 + tf * (t - 1) -> (t, h, w) bool: the latent positions with object pixels.

    The default threshold is the tokenizer's 0.1 on its [-1, 1] scale."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(frames.shape)}")
    t, h, w = grid
    T, H, W, _ = frames.shape
    if t < 1 or (t > 1 and (T - 1) % (t - 1)) or (t == 1 and T != 1) or H % h or W % w:
        raise ValueError(f"{T} frames of {H}x{W} do not map onto a latent grid {grid} "
                         f"(need T = 1 + k*(t-1) and H, W multiples of h, w)")
    x = frames.permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, T, H, W) in [-1, 1]
    fg = object_pixels(x, threshold / 127.5)[0, 0].float()  # (T, H, W)
    fg = F.max_pool2d(fg[:, None], kernel_size=(H // h, W // w))[:, 0]  # (T, h, w)
    out = [fg[0]]
    tf = (T - 1) // (t - 1) if t > 1 else 1
    for j in range(1, t):
        out.append(fg[1 + tf * (j - 1): 1 + tf * j].amax(dim=0))
    return torch.stack(out) > 0
