"""The contrast prompt of motion guidance: the caption with its motion standing still, or reversed.

Classifier-free guidance (Ho & Salimans, 2022) pushes the LM away from its caption-less prediction,
which amplifies everything the caption says at once: colours, shapes, count and motion. Motion
guidance adds a second term (``kinema.decode.sampling.contrast_mix``, summed as in composable
diffusion, Liu et al., 2022, arXiv:2206.01714) that pushes away from the prediction for the same
caption with every motion phrase replaced by "standing still". The two captions agree on what is
in the scene, so their difference carries only how it moves: a negative prompt (the practice of
text-to-image samplers) made from the caption itself, in the synthetic world's own words, so the
LM has seen both sides in training.

    still_caption("a small red circle sliding left on a black background")
    # -> "a small red circle standing still on a black background"
    still_caption("a red square standing still on a white background")   # -> None: nothing moves
    reversed_caption("a small red circle sliding left on a black background")
    # -> "a small red circle sliding right on a black background"

``reversed_caption`` is the other contrast: every slide turned around. Against it only which way an
object goes differs, not whether it moves, so guidance amplifies the direction alone.
``unslid_caption`` stills only the motions a reversal cannot touch (bouncing and falling): the
pipeline's ``still_guidance`` contrasts with it at its own scale, beside the reversed slides.
"""
from __future__ import annotations

import re

from kinema.data.synthetic import MOTIONS

__all__ = ["CONTRASTS", "MOTION_PHRASES", "contrast_caption", "reversed_caption", "still_caption", "unslid_caption"]

STILL = "standing still"
# the synthetic world's motions as its captions say them, and the same directions said with "moving"
MOTION_PHRASES: tuple[str, ...] = tuple(m for m in MOTIONS if m != "static") + tuple(
    f"moving {d}" for d in ("left", "right", "up", "down"))
_PATTERN = re.compile(r"\b(" + "|".join(sorted((re.escape(p) for p in MOTION_PHRASES), key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
_SLIDE = re.compile(r"\b(sliding|moving) (left|right|up|down)\b", re.IGNORECASE)


def still_caption(caption: str) -> str | None:
    """``caption`` with every motion phrase replaced by "standing still"; None when it names no motion
    (the contrast would equal the caption, and its guidance term would be zero)."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    still, n = _PATTERN.subn(STILL, caption)
    return still if n else None


def reversed_caption(caption: str) -> str | None:
    """``caption`` with every slide going the other way (left <-> right, up <-> down); None when it
    names no slide."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    out, n = _SLIDE.subn(lambda m: f"{m.group(1)} {_OPPOSITE[m.group(2).lower()]}", caption)
    return out if n else None


_UNSLID = re.compile(r"\b(bouncing|falling)\b", re.IGNORECASE)


def unslid_caption(caption: str) -> str | None:
    """``caption`` with its bouncing and falling standing still and its slides as they are; None when
    it names neither."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    out, n = _UNSLID.subn(STILL, caption)
    return out if n else None


CONTRASTS = {"still": still_caption, "reversed": reversed_caption}


def contrast_caption(caption: str, kind: str = "still") -> str | None:
    """The contrast prompt of motion guidance: ``kind`` "still" (:func:`still_caption`) or
    "reversed" (:func:`reversed_caption`)."""
    if kind not in CONTRASTS:
        raise ValueError(f"unknown motion contrast {kind!r}; valid: {', '.join(CONTRASTS)}")
    return CONTRASTS[kind](caption)
