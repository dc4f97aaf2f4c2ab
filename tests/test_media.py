"""kinema.media: round trips, timestamp resampling, resizing, windows, damaged input, atomic writes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import kinema.media_write as media_write
from kinema.cli import main as cli_main
from kinema.errors import MediaError, ResourceError
from kinema.media import Clip, describe, read_audio, read_video, resize_frames, write_audio, write_video

BITS = 7  # frame index written as 7 black/white blocks, robust to H.264


def _indexed_frames(n: int, w: int = 64, h: int = 48) -> torch.Tensor:
    """uint8 (n, h, w, 3) whose top row of 8x8 blocks spells the frame index in binary."""
    x = torch.full((n, h, w, 3), 64, dtype=torch.uint8)
    for i in range(n):
        for b in range(BITS):
            x[i, 0:8, b * 8 : b * 8 + 8] = 255 if (i >> b) & 1 else 0
    return x


def _decode_index(frames: torch.Tensor) -> list[int]:
    out = []
    for f in frames:
        bits = [int(f[2:6, b * 8 + 2 : b * 8 + 6].float().mean() > 128) for b in range(BITS)]
        out.append(sum(v << b for b, v in enumerate(bits)))
    return out


@pytest.fixture(scope="module")
def clip30(tmp_path_factory) -> Path:
    """3 s at 30 fps, index-coded frames, stereo 16 kHz audio with a click at 1.5 s."""
    path = tmp_path_factory.mktemp("media") / "c30.mp4"
    sr = 16000
    audio = torch.zeros(2, 3 * sr)
    audio[:, int(1.5 * sr) : int(1.5 * sr) + 160] = 0.8
    write_video(path, Clip(_indexed_frames(90), 30.0, audio, sr), preset="ultrafast")
    return path


def test_round_trip_and_av_sync(tmp_path):
    fps, sr, T, flash = 8.0, 16000, 24, 10
    frames = torch.full((T, 64, 96, 3), 30, dtype=torch.uint8)
    frames[flash] = 250
    audio = torch.zeros(2, int(T / fps * sr))
    onset = int(flash / fps * sr)
    audio[:, onset : onset + 400] = torch.sin(torch.arange(400) * 0.3) * 0.9
    path = write_video(tmp_path / "rt.mp4", Clip(frames, fps, audio, sr))
    clip = read_video(path)
    assert clip.num_frames == T and clip.size == (96, 64) and clip.fps == pytest.approx(fps)
    assert clip.sample_rate == sr and clip.audio.shape == (2, int(T / fps * sr))
    assert clip.audio.dtype == torch.float32 and clip.frames.dtype == torch.uint8
    assert (clip.frames.float() - frames.float()).abs().mean() < 3
    bright = clip.frames.float().mean(dim=(1, 2, 3))
    assert int(bright.argmax()) == flash and (bright > 128).sum() == 1
    loud = (clip.audio.abs().amax(0) > 0.3).nonzero().flatten()
    assert abs(int(loud[0]) - onset) < sr / fps  # within one frame
    x = clip.to_model_input()
    assert x.shape == (1, 3, T, 64, 96) and x.min() >= -1 and x.max() <= 1


def test_odd_size_is_padded_to_even(tmp_path):
    frames = torch.randint(0, 255, (3, 33, 45, 3), dtype=torch.uint8)
    clip = read_video(write_video(tmp_path / "odd.mp4", Clip(frames, 10.0, None, None), preset="ultrafast"))
    assert clip.size == (46, 34) and clip.audio is None and clip.num_frames == 3


def test_native_rate_keeps_every_frame(clip30):
    clip = read_video(clip30, audio=False)
    assert clip.fps == pytest.approx(30.0) and _decode_index(clip.frames) == list(range(90))


def test_fps_resampling_by_timestamps(clip30):
    clip = read_video(clip30, fps=8)
    assert clip.num_frames == 24 and clip.fps == 8.0
    # output k shows the source frame nearest to k/8 s (ties go to the earlier frame)
    assert _decode_index(clip.frames) == [math.ceil(k * 30 / 8 - 0.5) for k in range(24)]
    assert clip.audio.shape[1] == 3 * 16000
    up = read_video(clip30, fps=60, audio=False)
    assert up.num_frames == 180 and _decode_index(up.frames)[:6] == [0, 0, 1, 1, 2, 2]


def test_window_start_duration(clip30):
    clip = read_video(clip30, start=1.0, duration=1.0)
    assert _decode_index(clip.frames) == list(range(30, 60))
    assert clip.audio.shape == (2, 16000)
    loud = (clip.audio.abs().amax(0) > 0.3).nonzero().flatten()
    assert abs(int(loud[0]) - 8000) < 16000 / 30  # the click at 1.5 s is 0.5 s into the window
    w8 = read_video(clip30, fps=8, start=2.0, duration=0.5, audio=False)
    assert _decode_index(w8.frames) == [60, 64, 67, 71]  # 2.25 s is a tie: earlier frame


def test_sample_rate_and_mono_on_read(clip30):
    clip = read_video(clip30, start=1.0, duration=1.0, sample_rate=8000, mono=True)
    assert clip.sample_rate == 8000 and clip.audio.shape == (1, 8000)


def test_crop_vs_pad(tmp_path):
    frames = torch.full((2, 90, 160, 3), 200, dtype=torch.uint8)  # 16:9
    path = write_video(tmp_path / "wide.mp4", Clip(frames, 5.0, None, None), preset="ultrafast")
    crop = read_video(path, size=(64, 64), resize_mode="crop").frames.float()
    pad = read_video(path, size=(64, 64), resize_mode="pad").frames.float()
    assert crop.shape == pad.shape == (2, 64, 64, 3)
    assert (crop - 200).abs().max() < 12  # no bars
    assert pad[:, :12].max() < 20 and pad[:, -12:].max() < 20  # bars of (64 - 36) / 2 rows
    assert (pad[:, 20:44] - 200).abs().max() < 12
    t = resize_frames(frames, (64, 64), "pad").float()
    assert t[:, :12].max() == 0 and (t[:, 20:44] - 200).abs().max() < 2
    assert resize_frames(frames, (32, 48), "crop").shape == (2, 48, 32, 3)
    with pytest.raises(ValueError):
        resize_frames(frames, (64, 64), "stretch")


def test_atomic_write(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    calls = {"n": 0}
    real = media_write._video_frame

    def failing(img, pts):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full (injected)")
        return real(img, pts)

    monkeypatch.setattr(media_write, "_video_frame", failing)
    with pytest.raises(RuntimeError, match="injected"):
        write_video(target, Clip(_indexed_frames(10), 10.0, None, None))
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    monkeypatch.setattr(media_write, "_video_frame", real)
    write_video(tmp_path / "new" / "ok.mp4", Clip(_indexed_frames(3), 10.0, None, None))
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["ok.mp4"]


def test_audio_round_trip_mono_resample(tmp_path):
    sr = 16000
    t = torch.arange(sr) / sr
    wav = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t), 0.3 * torch.sin(2 * math.pi * 440 * t)])
    path = write_audio(tmp_path / "a.wav", wav, sr)
    back, rate = read_audio(path)
    assert rate == sr and back.shape == wav.shape and (back - wav).abs().max() < 1e-3
    mono, _ = read_audio(path, mono=True)
    assert mono.shape == (1, sr) and (mono[0] - 0.4 * torch.sin(2 * math.pi * 440 * t)).abs().max() < 1e-3
    low, rate8 = read_audio(path, sample_rate=8000)
    assert rate8 == 8000 and low.shape == (2, 8000)
    peak_hz = int(torch.fft.rfft(low[0]).abs().argmax()) * 8000 / low.shape[1]
    assert abs(peak_hz - 440) <= 2
    flac = write_audio(tmp_path / "a.flac", wav[:1], sr)
    assert (read_audio(flac)[0] - wav[:1]).abs().max() < 1e-3
    with pytest.raises(ValueError):
        write_audio(tmp_path / "a.wav", torch.full((1, 10), float("nan")), sr)


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "directory"])
def test_bad_files_raise_media_error(tmp_path, kind):
    path = tmp_path / "bad.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(MediaError, match="bad.mp4"):
        read_video(path)
    with pytest.raises(MediaError, match="bad.mp4"):
        describe(path)


def test_truncated_mp4(tmp_path, clip30):
    data = clip30.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cut.mp4.*recover=True"):
        read_video(cut)
    part = read_video(cut, recover=True)
    assert 0 < part.num_frames < 90
    assert _decode_index(part.frames)[:10] == list(range(10))
    tiny = tmp_path / "tiny.mp4"
    tiny.write_bytes(data[:100])
    with pytest.raises(MediaError, match="tiny.mp4"):
        read_video(tiny, recover=True)


def _corrupt_audio_packets(src: Path, dst: Path, which: set[int]) -> None:
    """Remux src into dst replacing the audio packets numbered in ``which`` by random bytes."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        k = 0
        for p in inp.demux():
            if p.dts is None:
                continue
            if p.stream.type == "audio":
                k += 1
                if k in which:
                    q = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                    q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                    q.stream = streams[p.stream.index]
                    out.mux(q)
                    continue
            p.stream = streams[p.stream.index]
            out.mux(p)


def test_damaged_audio_packets_keep_sync(tmp_path, clip30):
    """Undecodable audio packets before the click become silence; the click stays at 1.5 s."""
    bad = tmp_path / "bad_audio.mp4"
    _corrupt_audio_packets(clip30, bad, {10, 11, 12})
    clip = read_video(bad)
    assert clip.skipped_packets >= 1 and clip.num_frames == 90 and clip.audio.shape == (2, 3 * 16000)
    loud = (clip.audio.abs().amax(0) > 0.5).nonzero().flatten()
    assert abs(int(loud[0]) - 24000) < 16000 / 30


def test_resource_guard(clip30):
    with pytest.raises(ResourceError, match="GiB"):
        read_video(clip30, size=(60000, 60000))


def test_bad_arguments(clip30):
    for kwargs in ({"fps": 0}, {"start": -1.0}, {"duration": 0.0}, {"size": (0, 10)}, {"resize_mode": "x"},
                   {"sample_rate": 12.5}):
        with pytest.raises(ValueError):
            read_video(clip30, **kwargs)
    with pytest.raises(ValueError):
        write_video(clip30.parent / "x.mp4", Clip(torch.zeros(2, 8, 8, 3), 8.0))  # float frames


def test_megamind_damaged_audio_packet_is_skipped(media_dir):
    path = media_dir / "video" / "Megamind.avi"
    clip = read_video(path, fps=4, size=(72, 52), duration=3.0)
    assert clip.num_frames == 12 and clip.size == (72, 52)
    assert clip.audio is not None and clip.sample_rate == 48000 and clip.audio.shape == (2, 3 * 48000)
    assert clip.skipped_packets >= 1
    assert clip.audio.abs().amax() > 0.05  # real sound, not just silence
    wav, rate = read_audio(path, mono=True, sample_rate=16000)
    assert rate == 16000 and wav.shape[0] == 1 and abs(wav.shape[1] / 16000 - 11.26) < 0.1


def test_megamind_bugy_never_hangs(media_dir):
    path = media_dir / "video" / "Megamind_bugy.avi"
    clip = read_video(path, fps=5, size=(64, 48), start=2.0, duration=2.0, recover=True)
    assert clip.num_frames == 10 and clip.audio is None
    # FFmpeg decodes every packet of this file, so it needs no recovery: same frames without it
    plain = read_video(path, fps=5, size=(64, 48), start=2.0, duration=2.0)
    assert torch.equal(plain.frames, clip.frames)
    text = describe(path)
    assert "270 frames decoded" in text and "No audio stream" in text


def test_sparse_timestamps_avi(media_dir):
    """tree.avi stores 68 frames over 444 slots: the reader repeats frames by timestamp."""
    clip = read_video(media_dir / "video" / "tree.avi", fps=2, size=(32, 24), duration=4.0)
    assert clip.num_frames == 8


def test_cli_info(media_dir, capsys, tmp_path):
    videos = sorted((media_dir / "video").glob("*.avi"))
    assert cli_main(["info", str(videos[0])]) == 0
    out = capsys.readouterr().out
    assert "Megamind.avi" in out and "Audio: ac3 48000 Hz" in out and "DAMAGED: 1 damaged audio packet" in out
    assert cli_main(["info", str(videos[0]), str(tmp_path / "nope.mp4")]) == 1
    assert "nope.mp4: no such file" in capsys.readouterr().out
