"""Writing media with PyAV: H.264 (yuv420p) + AAC mp4, and audio files, atomically.

Re-exported by :mod:`kinema.media` (``from kinema.media import write_video``). Every write goes to
a temporary file in the destination directory and is renamed into place only when complete.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from kinema.errors import MediaError
from kinema.media import Clip, _finish_audio

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


# ----------------------------------------------------------------------------- writing
def _tmp_beside(path: Path) -> Path:
    """A fresh temporary file in the destination's directory (so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _video_frame(img: np.ndarray, pts: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts = pts
    return frame


def _audio_frames(wav: np.ndarray, rate: int, layout: str, frame_size: int) -> Iterator[av.AudioFrame]:
    for i in range(0, wav.shape[1], frame_size):
        chunk = np.ascontiguousarray(wav[:, i : i + frame_size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = i
        yield frame


def _check_wav(wav, what: str) -> torch.Tensor:
    wav = torch.as_tensor(wav).detach()
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[0] < 1 or not wav.is_floating_point():
        raise ValueError(f"{what} must be float (C, N), got {wav.dtype} {tuple(wav.shape)}")
    wav = wav.float().cpu()
    if not torch.isfinite(wav).all():
        raise ValueError(f"{what} contains NaN or inf")
    if wav.shape[0] > 2:  # keep writers to mono/stereo: average the extra channels into both sides
        wav = torch.stack([wav[0::2].mean(0), wav[1::2].mean(0)])
    return wav.clamp(-1, 1)


def write_video(path: str | Path, clip: Clip, crf: int = 18, preset: str = "medium") -> Path:
    """Write H.264 (yuv420p, +faststart) + AAC mp4 that ordinary players open.

    Written to a temporary name beside ``path`` and renamed when complete: an interrupted or
    failed write never leaves a file under the requested name (an old one stays untouched).
    Odd width/height are padded to even by repeating the last row/column. Audio at a rate AAC
    does not support is resampled to 48 kHz.
    """
    path = Path(path)
    frames = torch.as_tensor(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or frames.shape[0] == 0:
        raise ValueError(f"clip.frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if not (isinstance(clip.fps, (int, float)) and 0 < clip.fps <= 1000):
        raise ValueError(f"clip.fps must be in (0, 1000], got {clip.fps!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    arr = frames.cpu().numpy()
    T, H, W, _ = arr.shape
    if H % 2 or W % 2:
        arr = np.pad(arr, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    wav, rate = None, None
    if clip.audio is not None and torch.as_tensor(clip.audio).numel() > 0:
        if not clip.sample_rate or clip.sample_rate <= 0:
            raise ValueError(f"clip.audio is set but clip.sample_rate is {clip.sample_rate!r}")
        x, rate = _check_wav(clip.audio, "clip.audio"), int(clip.sample_rate)
        if rate not in AAC_RATES:
            x, rate = _finish_audio(x.numpy(), rate, 48000, False, None)
        wav = x.numpy()
    tmp = _tmp_beside(path)
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vs = out.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1001))
            vs.width, vs.height = arr.shape[2], arr.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(int(crf)), "preset": preset}
            ast = None
            if wav is not None:
                layout = "mono" if wav.shape[0] == 1 else "stereo"
                ast = out.add_stream("aac", rate=rate, layout=layout)
            for i, img in enumerate(arr):  # img (H, W, 3)
                for packet in vs.encode(_video_frame(img, i)):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            if ast is not None:
                for frame in _audio_frames(wav, rate, layout, ast.codec_context.frame_size or 1024):
                    for packet in ast.encode(frame):
                        out.mux(packet)
                for packet in ast.encode(None):
                    out.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_AUDIO_CODECS = {".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac"), ".m4a": ("mp4", "aac"),
                 ".aac": ("adts", "aac"), ".mp3": ("mp3", "libmp3lame"), ".ogg": ("ogg", "libvorbis"),
                 ".opus": ("ogg", "libopus")}


def write_audio(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write float (C, N) audio in [-1, 1]; the suffix picks the format (.wav: 16-bit PCM). Atomic."""
    path = Path(path)
    if path.suffix.lower() not in _AUDIO_CODECS:
        raise ValueError(f"{path}: unsupported audio suffix; use one of {sorted(_AUDIO_CODECS)}")
    if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate must be an integer between 1000 and 384000 Hz, got {sample_rate!r}")
    arr = _check_wav(wav, "wav").numpy()
    layout = "mono" if arr.shape[0] == 1 else "stereo"
    fmt, codec = _AUDIO_CODECS[path.suffix.lower()]
    if codec not in av.codecs_available:
        raise MediaError(f"{path}: this FFmpeg build has no {codec} encoder")
    tmp = _tmp_beside(path)
    try:
        with av.open(str(tmp), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=sample_rate, layout=layout)
            fmt_name = stream.codec_context.format.name if stream.codec_context.format else "fltp"
            for frame in _audio_frames(arr, sample_rate, layout, stream.codec_context.frame_size or 1024):
                if fmt_name != "fltp":  # e.g. pcm_s16le wants packed s16: let PyAV convert
                    frame = av.AudioResampler(format=fmt_name, layout=layout, rate=sample_rate).resample(frame)[0]
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        os.replace(tmp, path)
    except av.FFmpegError as e:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"{path}: cannot write audio ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
