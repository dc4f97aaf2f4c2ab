"""Window schedule and the constant-memory latent stream (kinema.decode.continuation)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kinema.decode.continuation import LatentStream, latents_for_frames, window_schedule
from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 200), window=st.integers(2, 12), cond=st.integers(1, 11), start=st.integers(0, 50))
def test_schedule_covers_exactly_with_bounded_windows(total, window, cond, start):
    if cond >= window or start > total:
        return
    ws = window_schedule(total, window, cond, start)
    j = start
    for i, w in enumerate(ws):
        assert w.index == i
        assert w.new[0] == j and w.num_new >= 1  # contiguous, no gaps or overlap of new latents
        assert w.num_cond + w.num_new <= window  # every LM call sees at most one window
        if j > 0:
            assert w.cond == (j - min(cond, j), j)  # conditions on the last `cond` latents it has
        else:
            assert w.num_cond == 0 and w.num_new == min(window, total)
        j = w.new[1]
    assert j == max(total, start)  # ends exactly at the requested length


def test_schedule_is_flat():
    ws = window_schedule(100, 5, 2)
    sizes = {w.num_cond + w.num_new for w in ws[:-1]}
    assert sizes == {5}
    assert all(w.num_cond == 2 for w in ws[1:])


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        window_schedule(10, 3, 3)
    with pytest.raises(ValueError):
        window_schedule(10, 1, 0)
    with pytest.raises(ValueError):
        window_schedule(3, 4, 1, start=5)


def test_latents_for_frames():
    assert latents_for_frames(1, 4) == 1
    assert latents_for_frames(5, 4) == 2
    assert latents_for_frames(6, 4) == 3
    assert latents_for_frames(8, 4, first=False) == 2
    assert latents_for_frames(9, 4, first=False) == 3
    assert latents_for_frames(0, 4) == 0


def test_stream_decode_with_full_context_equals_whole_decode():
    torch.manual_seed(0)
    vt = VideoTokenizer(VideoTokenizerConfig.preset("tiny")).eval()
    codes = torch.randint(0, vt.codebook_size, (1, 7, 2, 2))
    whole = vt.decode(codes)[0]  # (3, 25, 16, 16)
    stream = LatentStream(vt.decode, vt.temporal_factor, context=vt.cfg.context_latents)
    parts = []
    for a, b in [(0, 3), (3, 5), (5, 6), (6, 7)]:
        stream.append(codes[0, a:b])
        parts.append(stream.decode_new())
    got = torch.cat(parts, dim=1)
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, atol=1e-4, rtol=1e-4)


def test_stream_frame_counts_with_bounded_context():
    vt = VideoTokenizer(VideoTokenizerConfig.preset("tiny")).eval()
    stream = LatentStream(vt.decode, vt.temporal_factor, context=1)
    stream.append(torch.randint(0, vt.codebook_size, (3, 2, 2)))
    assert stream.decode_new().shape[1] == 1 + 4 * 2
    for _ in range(5):
        stream.append(torch.randint(0, vt.codebook_size, (2, 2, 2)))
        assert stream.decode_new().shape[1] == 8
    assert len(stream) == 13 and stream.tail(2).shape == (2, 2, 2)
    with pytest.raises(ValueError):
        stream.decode_new()
