"""The embedded default model kinema-tiny: it loads with no argument, is small, and generates a
1 s clip with sound at its native size."""
from __future__ import annotations

import pytest
import torch

from kinema.paths import DEFAULT_MODEL

COMPONENTS = ("video_tokenizer", "audio_codec", "text_tokenizer", "lm")


def _shipped() -> bool:
    return all((DEFAULT_MODEL / c / "config.json").is_file() for c in COMPONENTS)


def test_embedded_default_is_small():
    if not _shipped():
        pytest.skip("kinema-tiny is not complete in this checkout")
    total = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    assert total < 50 * 2**20, f"embedded default is {total / 2**20:.1f} MB"


def test_embedded_default_generates_one_second():
    if not _shipped():
        pytest.skip("kinema-tiny is not complete in this checkout")
    from kinema.pipeline import Pipeline

    torch.set_num_threads(2)
    pipe = Pipeline.from_pretrained()
    out = pipe("a red circle bouncing on a black background", seconds=1.0, seed=0)
    W, H = pipe.config.size
    assert W >= 128 and H >= 128
    assert out.video.dtype == torch.uint8 and out.video.shape == (8, H, W, 3)
    assert out.fps == 8.0
    assert out.audio is not None and out.sample_rate == 16000
    assert abs(out.audio.shape[-1] - 16000) <= 400
    assert out.video.float().std() > 1.0  # not a blank frame
    again = pipe("a red circle bouncing on a black background", seconds=1.0, seed=0)
    assert torch.equal(out.video, again.video)  # deterministic under a seed
