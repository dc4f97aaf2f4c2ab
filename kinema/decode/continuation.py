"""Arbitrary-length video: the window schedule and the constant-memory latent stream.

Long videos are made window by window, as in VideoPoet (Kondratyuk et al., 2023, sec. 3.3
"long video generation"): generate a window of latent frames, then the next window conditioned on
the last ~1 s of tokens (the ``continue`` layout), and so on. Each window is one prefill + KV-cache
decode with a fresh cache, so the sequence the LM sees, and the memory it needs, do not grow with the
length of the video; only the last ``cond`` latents are carried over.

Latent frames are the video tokenizer's time steps: latent 0 is one frame, every later latent is
``temporal_factor`` frames (MAGVIT-v2's causal layout). A :class:`LatentStream` holds the codes of
one continuous stream and turns newly added latents into frames by decoding them after a bounded
amount of past context (the tokenizer's decoder is causal), so decoding cost is flat per window too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Window", "window_schedule", "latents_for_frames", "LatentStream"]


@dataclass(frozen=True)
class Window:
    """One generation step: condition on stream latents ``cond`` (half-open range), write ``new``."""

    index: int
    cond: tuple[int, int]
    new: tuple[int, int]

    @property
    def num_new(self) -> int:
        return self.new[1] - self.new[0]

    @property
    def num_cond(self) -> int:
        return self.cond[1] - self.cond[0]


def latents_for_frames(frames: int, temporal_factor: int, first: bool = True) -> int:
    """Latent frames needed to cover ``frames`` video frames; ``first``: the stream starts here
    (latent 0 is a single frame), otherwise every latent is ``temporal_factor`` frames."""
    if frames <= 0:
        return 0
    if first:
        return 1 + math.ceil((frames - 1) / temporal_factor)
    return math.ceil(frames / temporal_factor)


def window_schedule(total: int, window: int, cond: int, start: int = 0) -> list[Window]:
    """Windows that grow a latent stream holding ``start`` latents to exactly ``total`` latents.

    Every window spans at most ``window`` latents (condition + new). A stream that starts empty
    gets a first window of ``window`` new latents without condition; each later window conditions
    on the last ``min(cond, have)`` latents and writes up to ``window - cond`` new ones; the last
    window is shortened so the stream ends exactly at ``total``.
    """
    if window < 2 or not 1 <= cond < window:
        raise ValueError(f"need window >= 2 and 1 <= cond < window, got window={window}, cond={cond}")
    if total < start or start < 0:
        raise ValueError(f"cannot grow a stream of {start} latents to {total}")
    out: list[Window] = []
    j = start
    if j == 0 and total > 0:
        j = min(window, total)
        out.append(Window(0, (0, 0), (0, j)))
    while j < total:
        c = min(cond, j)
        j1 = min(total, j + window - c)
        out.append(Window(len(out), (j - c, j), (j, j1)))
        j = j1
    return out


class LatentStream:
    """Codes of one continuous latent stream plus incremental, bounded-context decoding.

    ``decode`` maps codes (1, t, h, w) to video (1, 3, T, H, W) with T = 1 + f (t - 1). New latents
    ``[j, j1)`` are decoded together with up to ``context`` latents before them and only their own
    frames are kept: ``1 + f (j1 - 1)`` frames for the first chunk of the stream, ``f (j1 - j)``
    after. Only the last ``context + window`` latents are needed for that; older codes are kept (they
    are small integers) for ``codes()`` / the output tokens.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], temporal_factor: int, context: int):
        self._decode = decode
        self.f = int(temporal_factor)
        self.context = max(0, int(context))
        self._codes: list[torch.Tensor] = []  # each (h, w) long
        self.decoded = 0  # latents already turned into frames

    def __len__(self) -> int:
        return len(self._codes)

    def append(self, codes: torch.Tensor) -> None:
        """Add latents (t, h, w)."""
        self._codes.extend(codes.reshape(-1, *codes.shape[-2:]).unbind(0))

    def tail(self, n: int) -> torch.Tensor:
        """The last ``n`` latents (n, h, w)."""
        return torch.stack(self._codes[len(self._codes) - n:])

    def span(self, a: int, b: int) -> torch.Tensor:
        return torch.stack(self._codes[a:b])

    def codes(self) -> torch.Tensor:
        return torch.stack(self._codes) if self._codes else torch.zeros(0, 0, 0, dtype=torch.long)

    def skip(self, n: int) -> None:
        """Mark the first ``n`` latents as already shown (e.g. a user's clip being continued)."""
        self.decoded = max(self.decoded, n)

    def decode_new(self) -> torch.Tensor:
        """Frames of the latents added since the last call: float (3, T, H, W) in [-1, 1]."""
        j, j1 = self.decoded, len(self._codes)
        if j1 <= j:
            raise ValueError("no new latents to decode")
        m = max(0, j - self.context - 1) if j > 0 else 0
        x = self._decode(torch.stack(self._codes[m:j1]).unsqueeze(0))[0]  # (3, T, H, W)
        self.decoded = j1
        return x if j == 0 else x[:, 1 + self.f * (j - m - 1):]
