"""Which guidance value applies at which output index of one LM window.

The caption alone decides a text-to-video window's first latent; the later latents, and every latent
of an image-to-video or continuation window, follow the frames before them. So the pipeline's
guidance scale and plausibility take one value on the first latent (and on sound and the other
tasks) and another after it, and the motion-guidance contrasts act only after it. These are the
per-output-index schedules :func:`kinema.decode.generate.generate` takes.

    first = 1 + h * w * vocab.video_tokens_per_code            # <bov> + latent 0 of a t2v plan
    later_schedule("t2v", plan.length, first, 2.0, 3.0)        # 2 up to index first, 3 after
    contrast_schedule("continue", plan.length, first, 4.0)     # 4 everywhere
"""
from __future__ import annotations

import torch

__all__ = ["later_schedule", "contrast_schedule"]


def later_schedule(task: str, n: int, first_len: int | None, first: float, later: float) -> torch.Tensor:
    """(n,) float32: ``later`` on the video latents the caption does not decide alone (outputs from
    ``first_len`` on in a "t2v"/"t2i" plan, all of an "i2v"/"continue" plan), ``first`` elsewhere.
    ``first_len`` (the <bov> and the first latent's outputs) is None for a plan with no video."""
    scales = torch.full((n,), first, dtype=torch.float32)
    if later == first or first_len is None:
        return scales
    if task in ("t2v", "t2i"):
        scales[first_len:] = later
    elif task in ("i2v", "continue"):
        scales[:] = later
    return scales


def contrast_schedule(task: str, n: int, first_len: int | None, scale: float) -> torch.Tensor:
    """(n,) float32: a motion-guidance contrast's ``scale`` where :func:`later_schedule` puts ``later``,
    0 elsewhere; a text-to-image plan has no later latents, so it gets none."""
    if task == "t2i":
        return torch.zeros(n, dtype=torch.float32)
    return later_schedule(task, n, first_len, 0.0, scale)
