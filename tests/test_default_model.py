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


def test_embedded_caption_scorer_matches_renders_to_their_captions():
    """The shipped caption scorer, on first frames of scenes it never saw (coded by the shipped video
    tokenizer), ranks each frame's own caption first among the 8 scenes' captions."""
    if not (DEFAULT_MODEL / "caption_scorer" / "config.json").is_file():
        pytest.skip("kinema-tiny has no caption scorer in this checkout")
    from kinema.data.synthetic import generate
    from kinema.pipeline import Pipeline
    from kinema.pipeline_io import to_model

    torch.set_num_threads(2)
    pipe = Pipeline.from_pretrained()
    W, H = pipe.config.size
    clips = [generate(900_000 + i, size=(W, H), seconds=0.125) for i in range(8)]
    with torch.no_grad():
        codes = torch.cat([pipe.vt.encode(to_model(c.frames[:1]))[:, 0] for c in clips])  # (8, h, w)
        texts = [pipe.tt.encode(c.caption) for c in clips]
        sim = torch.stack([pipe.caption_scorer.score(codes, t) for t in texts], dim=1)  # (frame, caption)
    assert int((sim.argmax(1) == torch.arange(8)).sum()) >= 7
    out = pipe("a red circle bouncing on a black background", seconds=1.0, seed=0, candidates=4, with_audio=False)
    assert out.stats[0]["candidates"] == 4 and out.video.shape[0] == 8
