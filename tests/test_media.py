"""kinema.media: round trips, A/V sync, fps resampling, aspect handling, damaged input."""
from __future__ import annotations

import pytest
import torch

from kinema.errors import MediaError
from kinema.media import Clip, describe, read_audio, read_video, resize_frames, write_audio, write_video

SR = 16000


def _flash_clip(T=24, fps=8.0, flash=10, h=64, w=96) -> Clip:
    """Black frames with one white frame and a click at the same instant."""
    frames = torch.zeros(T, h, w, 3, dtype=torch.uint8)
    frames[flash] = 255
    wav = torch.zeros(1, int(SR * T / fps))
    at = int(flash / fps * SR)
    wav[0, at : at + 400] = 0.8
    return Clip(frames, fps, wav, SR)


@pytest.fixture(scope="module")
def flash_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "flash.mp4"
    write_video(path, _flash_clip())
    return path


def test_round_trip_counts_and_sync(flash_mp4):
    clip = read_video(flash_mp4)
    assert clip.frames.shape == (24, 64, 96, 3) and clip.fps == 8.0
    assert clip.sample_rate == SR and abs(clip.audio.shape[1] - 3 * SR) <= SR // 8
    flash = int(clip.frames.float().mean((1, 2, 3)).argmax())
    click_s = float((clip.audio.abs() > 0.3).float().argmax()) / SR
    assert flash == 10
    assert abs(click_s - flash / 8.0) < 1 / 8.0  # within one frame


def test_fps_resampling_and_window(flash_mp4):
    clip = read_video(flash_mp4, fps=4)
    assert clip.num_frames == 12 and clip.fps == 4
    assert int(clip.frames.float().mean((1, 2, 3)).argmax()) == 5
    win = read_video(flash_mp4, start=1.0, duration=1.0)
    assert win.num_frames == 8 and win.audio.shape[1] == SR
    assert int(win.frames.float().mean((1, 2, 3)).argmax()) == 2


def test_aspect_crop_and_pad():
    frames = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle
    crop = resize_frames(frames, (32, 32), "crop")
    pad = resize_frames(frames, (32, 32), "pad")
    assert crop.shape == pad.shape == (2, 32, 32, 3)
    assert crop[0, 16, 16].tolist() == [255, 255, 255]
    assert pad[0, 0, 16].tolist() == [0, 0, 0] and pad[0, 16, 16].tolist() == [255, 255, 255]
    assert pad[0, 16, 0].sum() == 0  # padding top/bottom only: columns at the edge are image (black)


def test_read_with_size(flash_mp4):
    clip = read_video(flash_mp4, size=(48, 48), resize_mode="pad")
    assert clip.frames.shape == (24, 48, 48, 3)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 10])
def test_bad_files(tmp_path, content):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(MediaError, match="bad.mp4"):
        read_video(p)


def test_missing_and_truncated(tmp_path, flash_mp4):
    with pytest.raises(MediaError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(flash_mp4.read_bytes()[:2000])
    with pytest.raises(MediaError):
        read_video(trunc)


def test_write_is_atomic(tmp_path):
    target = tmp_path / "out.mp4"
    bad = Clip(torch.zeros(0, 8, 8, 3, dtype=torch.uint8), 8.0)
    with pytest.raises(ValueError):
        write_video(target, bad)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_audio_round_trip_and_resample(tmp_path):
    t = torch.arange(SR) / SR
    stereo = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sin(2 * torch.pi * 440 * t)]) * 0.5
    write_audio(tmp_path / "a.wav", stereo, SR)
    wav, sr = read_audio(tmp_path / "a.wav")
    assert sr == SR and wav.shape == (2, SR)
    assert torch.allclose(wav, stereo, atol=1e-3)
    mono, sr8 = read_audio(tmp_path / "a.wav", sample_rate=8000, mono=True)
    assert sr8 == 8000 and mono.shape[0] == 1 and abs(mono.shape[1] - 8000) < 50


def test_real_media(media_dir):
    mm = read_video(media_dir / "video" / "Megamind.avi", fps=8, size=(128, 128), duration=3.0)
    assert mm.frames.shape == (24, 128, 128, 3) and mm.audio is not None and mm.audio.abs().max() > 0.01
    for name in ("Megamind_bugy.avi", "tree.avi"):
        text = describe(media_dir / "video" / name)  # never crashes: recovers or MediaError
        assert "decoded" in text
    win = read_video(media_dir / "video" / "vtest.avi", fps=8, size=(64, 64), start=30.0, duration=2.0)
    assert win.num_frames == 16
