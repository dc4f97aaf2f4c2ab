"""kinema.eval.code_locality against encoders whose locality is known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinema.eval.code_locality import code_locality, latent_spans, static_mask


def _latent_means(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1+4k, H, W) -> per-token means (1, 3, 1+k, H/8, W/8): frame 0 alone, then 4 frames each."""
    B, C, T, H, W = x.shape
    rest = x[:, :, 1:].reshape(B, C, (T - 1) // 4, 4, H, W).mean(3)
    return F.avg_pool3d(torch.cat([x[:, :, :1], rest], 2), (1, 8, 8))


def local_encode(x: torch.Tensor) -> torch.Tensor:
    """Each token: its own block's mean colour, 4 levels per channel. Perfectly local."""
    q = ((_latent_means(x) + 1) / 2 * 3.999).floor().long()
    return q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]


def global_encode(x: torch.Tensor) -> torch.Tensor:
    """The block mean shifted by the whole latent frame's mean: every token sees the whole frame."""
    m = _latent_means(x)
    z = (m - m.mean(dim=(-2, -1), keepdim=True)) * 40
    return z.round().long().clamp(-50, 50)[:, 0] + 50


def _moving_clips(n: int = 2) -> list[np.ndarray]:
    out = []
    for k in range(n):
        c = np.zeros((17, 64, 64, 3), dtype=np.uint8)
        c[:] = (20 + 40 * k, 80, 120)
        for t in range(17):
            c[t, 4:12, 2 * t:2 * t + 8] = (240 - 10 * t, 30, 30)  # slides right along the top, darkening
        out.append(c)
    return out


def test_latent_spans_and_bad_lengths():
    assert latent_spans(9, 4) == [(0, 1), (1, 5), (5, 9)]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        latent_spans(8, 4)


def test_static_mask_marks_tokens_whose_neighbourhood_never_changed():
    clip = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    clip[6, 0, 0] = 255  # one pixel of frame 6 (latent frame 2) changes in token (0, 0)
    m = static_mask(clip, (3, 4, 4), margin=1)
    assert m.shape == (2, 4, 4)
    # latent 1 vs 0 spans frames 0..4: nothing moved
    assert m[0].all()
    # latent 2 vs 1 spans frames 1..8: token (0, 0) and its neighbours changed
    assert not m[1, :2, :2].any() and m[1, 2:, :].all() and m[1, :, 2:].all()
    assert static_mask(clip, (3, 4, 4), margin=0)[1].sum() == 15


def test_local_encoder_scores_ideal_and_global_encoder_does_not():
    clips = _moving_clips()
    loc = code_locality(local_encode, clips, size=(64, 64), square=8, reach=2)
    assert loc["flat_codes_per_frame"] == 1.0
    assert loc["static_code_kept"] == 1.0 and loc["static_tokens"] > 50
    assert loc["far_change"] == 0.0
    glob = code_locality(global_encode, clips, size=(64, 64), square=8, reach=2)
    assert glob["far_change"] > 0.5
    assert glob["static_code_kept"] < 0.9


def test_wrong_clip_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="expected clips of shape"):
        code_locality(local_encode, [np.zeros((9, 64, 64, 3), dtype=np.uint8)], size=(64, 64))
