"""Media in and out, on PyAV (FFmpeg).

    clip = read_video("in.mp4", fps=8, size=(128, 128))   # Clip(frames, fps, audio, sample_rate)
    write_video("out.mp4", clip)                           # H.264 yuv420p + AAC, atomic

Frame-rate resampling is by timestamps: output frame k shows the source frame on screen at time
``start + k / fps``. Resizing keeps the aspect ratio, then centre-crops ("crop") or pads ("pad")
to the requested size. Audio is decoded packet by packet; a damaged packet is skipped (counted in
``Clip.skipped_packets``) instead of failing the whole file. Everything a user's file can do wrong
raises :class:`kinema.errors.MediaError`.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from kinema.errors import MediaError, ResourceError

MAX_DECODE_BYTES = 8 << 30  # refuse decodes whose uint8 frames would exceed 8 GiB
MAX_BAD_PACKETS = 1000  # give up on a stream after this many undecodable packets


@dataclass
class Clip:
    """Decoded media: frames uint8 (T, H, W, 3), audio float32 (C, N) in [-1, 1] or None."""

    frames: torch.Tensor
    fps: float
    audio: torch.Tensor | None = None
    sample_rate: int | None = None
    skipped_packets: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps else 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def to_model_input(self) -> torch.Tensor:
        """float (1, 3, T, H, W) in [-1, 1], the tokenizers' input layout."""
        return (self.frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0).unsqueeze(0)


# ----------------------------------------------------------------------------- helpers
def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not a media file FFmpeg can read ({e.__class__.__name__}: {e})") from None
    except (OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot open ({e})") from None


def _fit(src_w: int, src_h: int, size: tuple[int, int], mode: str) -> tuple[int, int]:
    """Scaled (w, h) keeping aspect ratio so the result covers ("crop") or fits in ("pad") size."""
    w, h = size
    scale = (max if mode == "crop" else min)(w / src_w, h / src_h)
    return max(1, round(src_w * scale)), max(1, round(src_h * scale))


def _crop_or_pad(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad an (H, W, 3) image to (size[1], size[0], 3)."""
    w, h = size
    H, W = img.shape[:2]
    if H > h:
        top = (H - h) // 2
        img = img[top : top + h]
    if W > w:
        left = (W - w) // 2
        img = img[:, left : left + w]
    H, W = img.shape[:2]
    if H < h or W < w:
        out = np.zeros((h, w, 3), dtype=img.dtype)
        top, left = (h - H) // 2, (w - W) // 2
        out[top : top + H, left : left + W] = img
        img = out
    return img


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str = "crop") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, size[1], size[0], 3), aspect kept, then crop or pad."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"resize mode must be 'crop' or 'pad', got {mode!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got shape {tuple(frames.shape)}")
    T, H, W, _ = frames.shape
    if (W, H) == tuple(size):
        return frames
    sw, sh = _fit(W, H, size, mode)
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(np.stack([_crop_or_pad(f, size) for f in x]))


def _frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    sw, sh = _fit(frame.width, frame.height, size, mode)
    return _crop_or_pad(frame.reformat(width=sw, height=sh, format="rgb24").to_ndarray(), size)


# ----------------------------------------------------------------------------- reading
def _read_frames(path, container, fps, size, mode, start, duration, recover) -> tuple[np.ndarray, float, int]:
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    src_fps = float(vs.average_rate or vs.guessed_rate or 0) or 25.0
    out_fps = float(fps) if fps else src_fps
    end = start + duration if duration is not None else math.inf
    if size is not None:
        bytes_per_frame = size[0] * size[1] * 3
    else:
        bytes_per_frame = max(1, vs.codec_context.width * vs.codec_context.height * 3)
    stream_dur = float(vs.duration * vs.time_base) if vs.duration else (container.duration or 0) / 1e6
    expect = (min(end, stream_dur or math.inf) - start) * out_fps
    if math.isfinite(expect) and expect * bytes_per_frame > MAX_DECODE_BYTES:
        raise ResourceError(
            f"{path}: decoding {expect:.0f} frames would need {expect * bytes_per_frame / 2**30:.1f} GiB "
            f"(limit {MAX_DECODE_BYTES / 2**30:.0f} GiB); ask for a window (start/duration) or a smaller size"
        )
    if start > 0:
        try:
            container.seek(int(start / vs.time_base), stream=vs, backward=True, any_frame=False)
        except av.FFmpegError:
            container.seek(0)
    out: list[np.ndarray] = []
    prev = None  # (time, av.VideoFrame) of the frame on screen
    cache: tuple[int, np.ndarray] | None = None
    bad = 0

    def emit_until(t_limit: float) -> None:
        """Emit the on-screen frame for every target time before t_limit (and before end)."""
        nonlocal cache
        while True:
            target = start + len(out) / out_fps
            if target >= t_limit - 1e-9 or target >= end - 1e-9:
                return
            if cache is None or cache[0] != id(prev[1]):
                cache = (id(prev[1]), _frame_to_rgb(prev[1], size, mode))
            out.append(cache[1])
            if len(out) * bytes_per_frame > MAX_DECODE_BYTES:
                raise ResourceError(f"{path}: decoded frames exceed {MAX_DECODE_BYTES / 2**30:.0f} GiB")

    packets = container.demux(vs)
    done = False
    while not done:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            break
        except av.FFmpegError as e:
            bad += 1
            if not recover and not out and prev is None:
                raise MediaError(f"{path}: damaged video stream ({e}); pass recover=True to keep what is readable") from None
            if bad > MAX_BAD_PACKETS:
                break
            continue
        for frame in frames:
            t = float(frame.time) if frame.time is not None else (prev[0] + 1.0 / src_fps if prev else 0.0)
            if prev is None:
                prev = (min(t, start), frame)
            emit_until(t)
            if t >= end - 1e-9:
                done = True
                break
            prev = (t, frame)
    if prev is not None:
        emit_until(prev[0] + 1.0 / src_fps)
    if not out:
        if bad:
            raise MediaError(f"{path}: video stream is damaged; no frame could be decoded")
        raise MediaError(f"{path}: no video frames in the requested window (start={start}, duration={duration})")
    return np.stack(out), out_fps, bad


def _read_audio_stream(path, container, sample_rate, mono, start, duration) -> tuple[np.ndarray, int, int]:
    ast = container.streams.audio[0]
    rate = int(sample_rate or ast.rate or ast.codec_context.sample_rate or 16000)
    channels = ast.codec_context.channels or 1
    layout = "mono" if (mono or channels == 1) else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    if start > 0:
        try:
            container.seek(int(start / ast.time_base), stream=ast, backward=True)
        except av.FFmpegError:
            container.seek(0)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    bad = 0
    end = start + duration if duration is not None else math.inf
    packets = container.demux(ast)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                break
            continue
        try:
            decoded = packet.decode()
        except av.FFmpegError:  # a damaged packet: skip it, keep the rest
            bad += 1
            if bad > MAX_BAD_PACKETS:
                break
            continue
        for frame in decoded:
            if first_time is None:
                first_time = float(frame.time) if frame.time is not None else 0.0
            frame.pts = None
            for rf in resampler.resample(frame):
                chunks.append(rf.to_ndarray())
        if first_time is not None and first_time + sum(c.shape[1] for c in chunks) / rate > end + 0.5:
            break
    for rf in resampler.resample(None):
        chunks.append(rf.to_ndarray())
    if not chunks:
        return np.zeros((1 if layout == "mono" else 2, 0), np.float32), rate, bad
    wav = np.concatenate(chunks, axis=1).astype(np.float32)
    offset = int(round(((start - (first_time or 0.0)) * rate)))
    if offset > 0:
        wav = wav[:, offset:]
    elif offset < 0:  # audio starts after the requested start: pad silence to keep sync
        wav = np.concatenate([np.zeros((wav.shape[0], -offset), np.float32), wav], axis=1)
    if math.isfinite(end):
        n = int(round((end - start) * rate))
        wav = wav[:, :n] if wav.shape[1] >= n else np.pad(wav, ((0, 0), (0, n - wav.shape[1])))
    return np.clip(wav, -1.0, 1.0), rate, bad


def read_video(
    path: str | Path,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    audio: bool = True,
    sample_rate: int | None = None,
    mono: bool = False,
    recover: bool = False,
    resize_mode: str = "crop",
) -> Clip:
    """Decode ``path`` into a :class:`Clip`.

    fps: output frame rate (resampled by timestamps); None keeps the source rate.
    size: (width, height); aspect kept, then centre-crop or pad (``resize_mode``).
    start/duration: the window in seconds; only that window is decoded.
    recover: return the readable part of a damaged video stream instead of raising.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be (width, height) with positive values, got {size}")
    if resize_mode not in ("crop", "pad"):
        raise ValueError(f"resize_mode must be 'crop' or 'pad', got {resize_mode!r}")
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        try:
            frames, out_fps, bad_v = _read_frames(path, container, fps, size, resize_mode, start, duration, recover)
        except av.FFmpegError as e:
            raise MediaError(f"{path}: damaged video ({e})") from None
    wav, rate, bad_a = None, None, 0
    if audio:
        with _open(path) as container:
            if container.streams.audio:
                dur = duration if duration is not None else len(frames) / out_fps
                arr, rate, bad_a = _read_audio_stream(path, container, sample_rate, mono, start, dur)
                wav = torch.from_numpy(arr)
    return Clip(torch.from_numpy(frames), out_fps, wav, rate, skipped_packets=bad_v + bad_a)


def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = False) -> tuple[torch.Tensor, int]:
    """Audio of any file FFmpeg reads as float32 (C, N) in [-1, 1], and its sample rate."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio stream")
        try:
            wav, rate, _ = _read_audio_stream(path, container, sample_rate, mono, 0.0, None)
        except av.FFmpegError as e:
            raise MediaError(f"{path}: damaged audio ({e})") from None
    return torch.from_numpy(wav), rate


# ----------------------------------------------------------------------------- writing
def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _audio_frames(wav: np.ndarray, rate: int, layout: str, frame_size: int):
    for i in range(0, wav.shape[1], frame_size):
        chunk = np.ascontiguousarray(wav[:, i : i + frame_size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = i
        yield frame


def write_video(path: str | Path, clip: Clip, crf: int = 18) -> Path:
    """Write H.264 (yuv420p) + AAC mp4, playable by ordinary players.

    Written to a temporary name beside ``path`` and renamed when complete: an interrupted write
    never leaves a broken file under the requested name. Odd sizes are padded to even.
    """
    path = Path(path)
    frames = clip.frames
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or frames.shape[0] == 0:
        raise ValueError(f"clip.frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if not clip.fps or clip.fps <= 0:
        raise ValueError(f"clip.fps must be positive, got {clip.fps}")
    arr = frames.numpy()
    T, H, W, _ = arr.shape
    if H % 2 or W % 2:
        arr = np.pad(arr, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    tmp = _tmp_beside(path)
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1001))
            vs.width, vs.height = arr.shape[2], arr.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "veryfast"}
            a_stream = None
            if clip.audio is not None and clip.sample_rate and clip.audio.numel() > 0:
                wav = clip.audio.detach().float().clamp(-1, 1).numpy()
                if wav.ndim == 1:
                    wav = wav[None]
                layout = "mono" if wav.shape[0] == 1 else "stereo"
                wav = wav[:2]
                a_stream = out.add_stream("aac", rate=int(clip.sample_rate), layout=layout)
            for i, img in enumerate(arr):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            if a_stream is not None:
                size = a_stream.codec_context.frame_size or 1024
                for frame in _audio_frames(wav, int(clip.sample_rate), layout, size):
                    for packet in a_stream.encode(frame):
                        out.mux(packet)
                for packet in a_stream.encode(None):
                    out.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_audio(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write float (C, N) audio; the container follows the suffix (.wav is 16-bit PCM). Atomic."""
    path = Path(path)
    wav = torch.as_tensor(wav).detach().float()
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[0] not in (1, 2):
        raise ValueError(f"wav must be (C, N) with C in (1, 2), got {tuple(wav.shape)}")
    if not torch.isfinite(wav).all():
        raise ValueError("wav contains NaN or inf")
    arr = wav.clamp(-1, 1).numpy()
    layout = "mono" if arr.shape[0] == 1 else "stereo"
    codec = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".ogg": "libopus", ".opus": "libopus"}.get(
        path.suffix.lower(), "aac")
    tmp = _tmp_beside(path)
    try:
        with av.open(str(tmp), "w", format={".wav": "wav", ".m4a": "mp4"}.get(path.suffix.lower())) as out:
            stream = out.add_stream(codec, rate=int(sample_rate), layout=layout)
            size = stream.codec_context.frame_size or 1024
            for frame in _audio_frames(arr, int(sample_rate), layout, size):
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def describe(path: str | Path) -> str:
    """What read_video sees: container, duration, streams; decodes the file to count frames/audio."""
    with _open(path) as c:
        lines = [f"{path}: container {c.format.name}, duration {(c.duration or 0) / 1e6:.2f} s"]
        has_audio = bool(c.streams.audio)
        for vs in c.streams.video[:1]:
            rate = float(vs.average_rate or vs.guessed_rate or 0)
            lines.append(f"  video: {vs.codec_context.name} {vs.codec_context.width}x{vs.codec_context.height} @ {rate:.3f} fps")
        for a in c.streams.audio[:1]:
            lines.append(f"  audio: {a.codec_context.name} {a.rate} Hz, {a.codec_context.channels} channel(s)")
    clip = read_video(path, audio=has_audio, recover=True)
    lines.append(f"  decoded: {clip.num_frames} frames ({clip.duration:.2f} s at {clip.fps:.3f} fps), size {clip.size[0]}x{clip.size[1]}")
    if clip.audio is not None:
        lines.append(f"  decoded audio: {clip.audio.shape[1]} samples x {clip.audio.shape[0]} ch at {clip.sample_rate} Hz "
                     f"({clip.audio.shape[1] / clip.sample_rate:.2f} s)")
    if clip.skipped_packets:
        lines.append(f"  warning: {clip.skipped_packets} damaged packet(s) skipped")
    return "\n".join(lines)
