"""Media in and out, on PyAV (FFmpeg).

    clip = read_video("in.mp4", fps=8, size=(128, 128))   # Clip(frames, fps, audio, sample_rate)
    write_video("out.mp4", clip)                           # H.264 yuv420p + AAC, atomic

Time. Every stream is placed on one timeline whose zero is the container's start time. Output
frame k of ``read_video`` is the decoded frame whose timestamp is nearest to ``start + k / fps``
(frames are put back in presentation order first, so packed B-frames and variable frame rate
files come out right); the audio returned covers exactly ``[start, start + T / fps)`` and every
decoded audio frame is placed by its own timestamp, so a skipped packet leaves silence instead
of shifting the rest out of sync.

Damage. Everything a user's file can do wrong raises :class:`kinema.errors.MediaError` naming
the file. Damage confined to single packets is recovered automatically: an undecodable audio
packet (``Megamind.avi`` has one) becomes silence; a few undecodable video packets are skipped
(the previous frame is held). Both are counted in ``Clip.skipped_packets``. A file that cannot be
read to its end (truncated, unreadable container data) or has many damaged video packets raises
MediaError unless ``recover=True``, which returns the readable part. Loops are bounded by the
number of packets in the file and ``MAX_BAD_PACKETS``. (``Megamind_bugy.avi`` of the shared media
is a badly re-compressed copy: FFmpeg decodes all of its packets, so it reads without recovery;
``describe`` lists what it does notice, such as frames decoded out of timestamp order.)

Writers (``write_video``, ``write_audio``) live in :mod:`kinema.media_write` and ``describe`` in
:mod:`kinema.media_info`; both are re-exported here.
"""
from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from kinema.errors import MediaError, ResourceError

MAX_DECODE_BYTES = 8 << 30  # refuse decodes whose uint8 frames would exceed 8 GiB
MAX_BAD_PACKETS = 1000  # give up on a stream after this many undecodable packets
REORDER = 16  # frames held to put decoder output back in presentation order


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


@dataclass
class _Stats:
    """What went wrong (or looked odd) while decoding one stream."""

    packets: int = 0
    bad: int = 0
    read_error: str | None = None  # container-level failure: truncated or unreadable data
    out_of_order: int = 0  # frames the decoder returned before an earlier-timestamped one
    frames: int = 0
    first_time: float | None = None
    last_time: float | None = None
    errors: list[str] = field(default_factory=list)


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
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MediaError(f"{path}: cannot open ({e})") from None


def _stream(container, kind: str):
    """The first video/audio stream FFmpeg has a decoder for, or None."""
    for s in getattr(container.streams, kind):
        if s.codec_context is not None:
            return s
    return None


def _msg(e: Exception) -> str:
    """An FFmpeg error as one short phrase (no errno noise)."""
    return str(getattr(e, "strerror", None) or e)


def _origin(container) -> float:
    """Time zero of the file, in seconds (the container's start time when positive)."""
    st = container.start_time
    return max(0.0, st / 1e6) if st is not None else 0.0


def _fit(src_w: int, src_h: int, size: tuple[int, int], mode: str) -> tuple[int, int]:
    """Scaled (w, h) keeping aspect ratio so the result covers ("crop") or fits in ("pad") size."""
    w, h = size
    scale = (max if mode == "crop" else min)(w / src_w, h / src_h)
    if mode == "crop":
        return max(w, round(src_w * scale)), max(h, round(src_h * scale))
    return max(1, min(w, round(src_w * scale))), max(1, min(h, round(src_h * scale)))


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
    return np.ascontiguousarray(img)


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str = "crop") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, size[1], size[0], 3): aspect kept, then centre-crop or pad."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"resize mode must be 'crop' or 'pad', got {mode!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got shape {tuple(frames.shape)}")
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (width, height) with positive values, got {size}")
    T, H, W, _ = frames.shape
    if (W, H) == tuple(size):
        return frames
    sw, sh = _fit(W, H, size, mode)
    out = []
    for i in range(0, T, 32):  # chunks keep the float copy small
        x = frames[i : i + 32].permute(0, 3, 1, 2).float()  # (t, 3, H, W)
        x = torch.nn.functional.interpolate(x, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (t, sh, sw, 3)
        out.extend(_crop_or_pad(f, size) for f in x)
    return torch.from_numpy(np.stack(out))


def _frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    sw, sh = _fit(frame.width, frame.height, size, mode)
    interp = "AREA" if sw < frame.width else "BICUBIC"
    return _crop_or_pad(frame.reformat(width=sw, height=sh, format="rgb24", interpolation=interp).to_ndarray(), size)


def _packets(container, stream, stats: _Stats) -> Iterator[list]:
    """Decoded frames packet by packet; damaged packets are counted and skipped (bounded)."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as e:  # the container itself cannot be read further
            stats.read_error = f"{e.__class__.__name__}: {e}"
            return
        stats.packets += 1
        try:
            yield packet.decode()
        except (av.FFmpegError, ValueError) as e:
            stats.bad += 1
            if len(stats.errors) < 3:
                stats.errors.append(_msg(e))
            if stats.bad > MAX_BAD_PACKETS:
                stats.read_error = f"gave up after {stats.bad} undecodable packets"
                return


def _video_frames(container, vs, stats: _Stats) -> Iterator[tuple[float, int, av.VideoFrame]]:
    """(time s, seq, frame) in presentation order, via a small reorder heap."""
    src_dt = 1.0 / _src_fps(vs)
    declared = (container.duration or 0) / 1e6
    t_max = _origin(container) + 10 * declared + 60.0 if declared > 0 else math.inf  # beyond: corrupt pts
    heap: list = []
    seq, last_t = 0, None
    for frames in _packets(container, vs, stats):
        for f in frames:
            t = float(f.time) if f.time is not None else (last_t + src_dt if last_t is not None else 0.0)
            if not -1.0 <= t <= t_max:
                stats.bad += 1
                continue
            if last_t is not None and t < last_t:
                stats.out_of_order += 1
            last_t = t if last_t is None else max(t, last_t)
            stats.first_time = t if stats.first_time is None else min(t, stats.first_time)
            stats.last_time = last_t
            stats.frames += 1
            heapq.heappush(heap, (t, seq, f))
            seq += 1
            if len(heap) > REORDER:
                yield heapq.heappop(heap)
    while heap:
        yield heapq.heappop(heap)


def _src_fps(vs) -> float:
    return float(vs.average_rate or vs.guessed_rate or vs.base_rate or 0) or 25.0


# ----------------------------------------------------------------------------- reading
def _guard(fn):
    """Turn any FFmpeg failure while reading into a MediaError, and name the file in every error."""

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except (MediaError, ResourceError) as e:
            if str(path) in str(e):
                raise
            raise type(e)(f"{path}: {e}") from None
        except (av.FFmpegError, EOFError) as e:
            raise MediaError(f"{path}: FFmpeg cannot decode it ({e.__class__.__name__}: {e})") from None

    return wrapper


def _read_frames(path, container, fps, size, mode, start, duration, recover) -> tuple[np.ndarray, float, _Stats]:
    vs = _stream(container, "video")
    vs.thread_type = "AUTO"
    src_fps = _src_fps(vs)
    out_fps = float(fps) if fps else src_fps
    t0 = _origin(container) + start
    end = t0 + duration if duration is not None else math.inf
    w, h = size if size is not None else (vs.codec_context.width, vs.codec_context.height)
    frame_bytes = max(1, w * h * 3)
    declared = float(vs.duration * vs.time_base) if vs.duration else (container.duration or 0) / 1e6
    expect = (min(duration if duration is not None else math.inf, max(declared - start, 0.0) or math.inf)) * out_fps
    if math.isfinite(expect) and expect * frame_bytes > MAX_DECODE_BYTES:
        raise ResourceError(
            f"{path}: decoding ~{expect:.0f} frames of {w}x{h} would need {expect * frame_bytes / 2**30:.1f} GiB, "
            f"over the {MAX_DECODE_BYTES / 2**30:.0f} GiB limit (kinema.media.MAX_DECODE_BYTES); "
            "ask for a shorter window (start/duration), a lower fps or a smaller size")
    if start > 0:
        try:
            container.seek(int(t0 / vs.time_base), stream=vs, backward=True, any_frame=False)
        except (av.FFmpegError, OverflowError):
            container.seek(0)
    stats = _Stats()
    out: list[np.ndarray] = []
    cache: tuple[int, np.ndarray] | None = None

    first_wh: tuple[int, int] | None = None  # with size=None, a mid-stream size change is resized back

    def emit(item) -> None:
        nonlocal cache, first_wh
        if cache is None or cache[0] != item[1]:
            f = item[2]
            first_wh = first_wh or (f.width, f.height)
            want = size if size is not None or (f.width, f.height) == first_wh else first_wh
            cache = (item[1], _frame_to_rgb(f, want, mode))
        out.append(cache[1])
        if len(out) * frame_bytes > MAX_DECODE_BYTES:
            raise ResourceError(f"{path}: decoded frames exceed the {MAX_DECODE_BYTES / 2**30:.0f} GiB limit "
                                "(kinema.media.MAX_DECODE_BYTES); ask for a shorter window or a smaller size")

    prev = None  # the latest (t, seq, frame) before the next target time
    for item in _video_frames(container, vs, stats):
        t = item[0]
        if prev is not None and t <= prev[0]:
            continue  # duplicate timestamp
        while (target := t0 + len(out) / out_fps) < end and t >= target - 1e-9:
            nearer_prev = prev is not None and (target - prev[0]) <= (t - target) + 1e-6  # ties: earlier
            emit(prev if nearer_prev else item)
        if t0 + len(out) / out_fps >= end:
            break
        prev = item
    if prev is not None:  # the last frame stays on screen for one source frame duration
        src_end = min(end, prev[0] + 1.0 / src_fps)
        while t0 + len(out) / out_fps < src_end - 1e-9:
            emit(prev)
    if not out:
        if stats.bad or stats.read_error:
            raise MediaError(f"{path}: video stream is damaged, no frame could be decoded "
                             f"({stats.read_error or (stats.errors[0] if stats.errors else 'undecodable')})")
        raise MediaError(f"{path}: no video frames in the requested window (start={start}, duration={duration})")
    if not recover:
        own = float(vs.duration * vs.time_base) if vs.duration else 0.0  # not the container's: audio may be longer
        _check_damage(path, stats, own, start, duration, len(out) / out_fps)
    return np.stack(out), out_fps, stats


def _check_damage(path, stats: _Stats, declared: float, start: float, duration, got: float) -> None:
    """Raise MediaError for damage beyond single packets (callers skip this when recover=True)."""
    hint = f"pass recover=True to keep the readable {got:.2f} s"
    if stats.read_error:
        raise MediaError(f"{path}: file is truncated or damaged, reading stopped after "
                         f"{(stats.last_time or 0):.2f} s ({stats.read_error}); {hint}")
    if stats.bad > max(3, 0.05 * stats.packets):
        raise MediaError(f"{path}: {stats.bad} of {stats.packets} video packets are damaged "
                         f"(first: {stats.errors[0] if stats.errors else '?'}); {hint}")
    wanted = declared - start if duration is None else min(duration, declared - start)
    if declared > 0 and wanted - got > max(1.0, 0.1 * wanted):
        raise MediaError(f"{path}: file ends early (declares {declared:.2f} s, video stops at "
                         f"{start + got:.2f} s): truncated? {hint}")


def _to_float(frame: av.AudioFrame, resamplers: dict, layout: str, rate: int) -> np.ndarray:
    """One decoded audio frame -> float32 (C, n) at the stream's rate (one resampler per input kind,
    so a mid-stream change of sample format or channel layout is converted, not an error)."""
    key = (frame.format.name, frame.layout.name, frame.sample_rate)
    if key not in resamplers:
        resamplers[key] = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    frame.pts = None
    parts = [rf.to_ndarray() for rf in resamplers[key].resample(frame)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((1 if layout == "mono" else 2, 0), np.float32)


def _read_audio_window(container, t0: float, t1: float, stats: _Stats) -> tuple[np.ndarray, int]:
    """float32 (C, N) covering [t0, t1) at the stream's own rate; each frame placed by timestamp."""
    ast = _stream(container, "audio")
    rate = int(ast.codec_context.sample_rate or ast.rate or 0)
    if rate <= 0:
        raise MediaError("audio stream declares no sample rate")
    channels = ast.codec_context.channels or 1
    layout = "mono" if channels == 1 else "stereo"  # more than two channels: FFmpeg's stereo downmix
    C = 1 if layout == "mono" else 2
    resamplers: dict = {}
    if t0 > 0.5:
        try:
            container.seek(int((t0 - 0.5) / ast.time_base), stream=ast, backward=True)
        except (av.FFmpegError, OverflowError):
            container.seek(0)
    tol = max(1, rate // 100)  # timestamps within 10 ms of contiguous are treated as contiguous
    chunks: list[tuple[int, np.ndarray]] = []
    next_idx: int | None = None
    done = False
    for frames in _packets(container, ast, stats):
        for f in frames:
            t = float(f.time) if f.time is not None else None
            idx = round((t - t0) * rate) if t is not None else (next_idx or 0)
            if next_idx is not None and (abs(idx - next_idx) <= tol or abs(idx - next_idx) > 60 * rate):
                idx = next_idx  # contiguous, or a timestamp jump of over a minute: a corrupt pts
            try:
                arr = _to_float(f, resamplers, layout, rate)
            except (av.FFmpegError, ValueError) as e:  # an undecodable frame: leave silence
                stats.bad += 1
                stats.errors = (stats.errors + [_msg(e)])[:3]
                continue
            stats.first_time = t if stats.first_time is None else stats.first_time
            next_idx = idx + arr.shape[1]
            if next_idx > 0:
                chunks.append((idx, arr))
                if next_idx * C * 4 > MAX_DECODE_BYTES:
                    raise ResourceError(f"audio longer than the {MAX_DECODE_BYTES / 2**30:.0f} GiB decode limit "
                                        "(kinema.media.MAX_DECODE_BYTES); read a window with read_video(start, duration)")
            if t is not None and t > t1 + 0.5:
                done = True
        if done:
            break
    n = round((t1 - t0) * rate) if math.isfinite(t1) else max([i + a.shape[1] for i, a in chunks] or [0])
    wav = np.zeros((C, n), np.float32)
    for idx, arr in chunks:
        a, b = max(idx, 0), min(idx + arr.shape[1], n)
        if b > a:
            wav[:, a:b] = arr[:, a - idx : b - idx]
    return np.clip(wav, -1.0, 1.0), rate


def _finish_audio(wav: np.ndarray, rate: int, sample_rate: int | None, mono: bool, n_out: int | None):
    """Downmix, resample (torchaudio) and fix the length of a decoded window."""
    x = torch.from_numpy(wav)
    if mono and x.shape[0] > 1:
        x = x.mean(0, keepdim=True)
    if sample_rate and int(sample_rate) != rate and x.shape[1] > 0:
        import torchaudio.functional as AF

        x = AF.resample(x, rate, int(sample_rate)).clamp(-1, 1)
        rate = int(sample_rate)
    if n_out is not None:
        x = x[:, :n_out] if x.shape[1] >= n_out else torch.nn.functional.pad(x, (0, n_out - x.shape[1]))
    return x.contiguous(), rate


def _check_rate(sample_rate) -> None:
    if sample_rate is not None and (int(sample_rate) != sample_rate or not 1000 <= sample_rate <= 384000):
        raise ValueError(f"sample_rate must be an integer between 1000 and 384000 Hz, got {sample_rate}")


@_guard
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
    """Decode ``path`` into a :class:`Clip` (see the module docstring for time and damage rules).

    fps: output frame rate, resampled by timestamps (nearest frame); None keeps the source rate.
    size: (width, height); aspect kept, then centre-crop ("crop") or black bars ("pad").
    start/duration: the window in seconds; only that window is decoded (seek + early stop).
    sample_rate/mono: resample (torchaudio) / average the channels of the audio.
    recover: return the readable part of a truncated or badly damaged file instead of raising.
    """
    if fps is not None and not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}")
    if not start >= 0 or (duration is not None and not duration > 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be (width, height) with positive values, got {size}")
    if resize_mode not in ("crop", "pad"):
        raise ValueError(f"resize_mode must be 'crop' or 'pad', got {resize_mode!r}")
    _check_rate(sample_rate)
    size = (int(size[0]), int(size[1])) if size is not None else None
    with _open(path) as container:
        if _stream(container, "video") is None:
            raise MediaError(f"{path}: has no video stream (use read_audio for audio files)")
        frames, out_fps, vstats = _read_frames(path, container, fps, size, resize_mode, start, duration, recover)
        origin, has_audio = _origin(container), _stream(container, "audio") is not None
    wav, rate, bad_a = None, None, 0
    if audio and has_audio:
        with _open(path) as container:  # a second demux pass: the video pass may have stopped early
            t0 = origin + start
            t1 = t0 + len(frames) / out_fps
            astats = _Stats()
            raw, rate = _read_audio_window(container, t0, t1, astats)
            n_out = round(len(frames) / out_fps * (sample_rate or rate))
            wav, rate = _finish_audio(raw, rate, sample_rate, mono, n_out)
            bad_a = astats.bad
    return Clip(torch.from_numpy(frames), out_fps, wav, rate, skipped_packets=vstats.bad + bad_a)


@_guard
def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = False) -> tuple[torch.Tensor, int]:
    """Audio of any file FFmpeg reads as float32 (C, N) in [-1, 1], and its sample rate."""
    _check_rate(sample_rate)
    with _open(path) as container:
        if _stream(container, "audio") is None:
            raise MediaError(f"{path}: has no audio stream")
        stats = _Stats()
        raw, rate = _read_audio_window(container, _origin(container), math.inf, stats)
    if stats.read_error and raw.shape[1] == 0:
        raise MediaError(f"{path}: audio cannot be read ({stats.read_error})")
    if raw.shape[1] == 0:
        why = f"damaged: {stats.errors[0]}" if stats.errors else "it is empty"
        raise MediaError(f"{path}: no audio could be decoded ({why})")
    n_out = round(raw.shape[1] * (sample_rate or rate) / rate)
    return _finish_audio(raw, rate, sample_rate, mono, n_out)


def __getattr__(name: str):
    """Writers live in kinema.media_write, describe in kinema.media_info; both import from here."""
    if name in ("write_video", "write_audio"):
        from kinema import media_write

        return getattr(media_write, name)
    if name == "describe":
        from kinema.media_info import describe

        return describe
    raise AttributeError(f"module 'kinema.media' has no attribute {name!r}")
