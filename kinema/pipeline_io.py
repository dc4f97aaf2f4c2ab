"""What the Pipeline takes in and gives back: task names, user inputs, the output dataclass.

Inputs a user hands to :class:`kinema.Pipeline` are normalised here: images and clips of any size
are resized (aspect kept, centre crop) to the pipeline's frame size, clips at another frame rate
are resampled to its fps by nearest frame, audio is mixed to mono at the codec's sample rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kinema.errors import ResourceError
from kinema.media import Clip, resize_frames

# user-facing names -> layout task (kinema.lm.layout.SPEC)
TASK_ALIASES: dict[str, str] = {
    "t2v": "t2v", "text_to_video": "t2v", "video": "t2v",
    "t2va": "t2va", "text_to_video_audio": "t2va",
    "t2i": "t2i", "text_to_image": "t2i", "image": "t2i",
    "i2v": "i2v", "image_to_video": "i2v",
    "continue": "continue", "continuation": "continue", "extend": "continue",
    "extend_back": "extend_back", "backward": "extend_back",
    "bridge": "bridge", "interpolate": "bridge",
    "v2a": "v2a", "video_to_audio": "v2a",
    "a2v": "a2v", "audio_to_video": "a2v",
    "uncond": "uncond", "unconditional": "uncond",
}

MAX_SECONDS = 600.0  # longest request accepted (10 minutes); longer raises ResourceError
MAX_PIXELS = 1024 * 1024  # largest frame (width * height) accepted
MAX_OUTPUT_BYTES = 8 << 30  # uint8 frames of one output (seconds * fps * W * H * 3) above this: ResourceError


def resolve_task(task: str | None, prompt: str | None, image: Any, video: Any, video_after: Any,
                 audio: Any, seconds: float | None) -> str:
    """The layout task for a call: ``task`` by any of its names, else inferred from the inputs."""
    if task is not None:
        key = str(task).lower().replace("-", "_")
        if key not in TASK_ALIASES:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(sorted(TASK_ALIASES))}")
        return TASK_ALIASES[key]
    if image is not None:
        return "i2v"
    if video is not None and video_after is not None:
        return "bridge"
    if video is not None:
        return "continue"
    if audio is not None:
        return "a2v"
    if seconds is not None and seconds == 0:
        return "t2i"
    return "t2v" if prompt else "uncond"


def check_seconds(seconds: float, max_seconds: float = MAX_SECONDS) -> float:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"seconds must be a number, got {seconds!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"seconds must be positive (0 with no other input means an image), got {seconds!r}")
    if s > max_seconds:
        raise ResourceError(f"{s:g} s is longer than the maximum of {max_seconds:g} s per request")
    return s


def check_output(frames: int, size: tuple[int, int]) -> None:
    """Refuse outputs whose frames alone would not fit in memory."""
    need = frames * size[0] * size[1] * 3
    if need > MAX_OUTPUT_BYTES:
        raise ResourceError(f"{frames} frames of {size[0]}x{size[1]} need {need / 2**30:.1f} GiB; the maximum is "
                            f"{MAX_OUTPUT_BYTES / 2**30:.0f} GiB (ask for fewer seconds, a lower fps or a smaller size)")


def check_size(size: Any, factor: int) -> tuple[int, int]:
    """(width, height) that the video tokenizer can code; refuses huge or misaligned sizes."""
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ResourceError(f"size {w}x{h} is larger than the maximum of {MAX_PIXELS} pixels per frame")
    if w % factor or h % factor:
        raise ValueError(f"size {w}x{h}: width and height must be multiples of {factor} for this video tokenizer")
    return w, h


def as_image(image: Any) -> torch.Tensor:
    """numpy/torch uint8 (H, W, 3) (or (H, W) / (H, W, 4), made RGB) -> torch uint8 (1, H, W, 3)."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if t.dim() == 2:
        t = t.unsqueeze(-1).expand(*t.shape, 3)
    if t.dim() != 3 or t.shape[-1] not in (3, 4) or 0 in t.shape:
        raise ValueError(f"image must be uint8 (H, W, 3), got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) in 0..255, got dtype {t.dtype}")
    return t[..., :3].unsqueeze(0).contiguous()


def resample_frames(frames: torch.Tensor, src_fps: float, fps: float) -> torch.Tensor:
    """Nearest-frame resampling of (T, H, W, 3) from ``src_fps`` to ``fps`` (same duration)."""
    if abs(src_fps - fps) < 1e-6 or frames.shape[0] <= 1:
        return frames
    n = max(1, round(frames.shape[0] * fps / src_fps))
    idx = torch.clamp((torch.arange(n) * src_fps / fps).round().long(), max=frames.shape[0] - 1)
    return frames[idx]


def prepare_clip(video: Any, fps: float, size: tuple[int, int]) -> Clip:
    """A user's Clip (or uint8 (T, H, W, 3) frames at ``fps``) at the pipeline's fps and size."""
    if isinstance(video, Clip):
        clip = video
    elif isinstance(video, (torch.Tensor, np.ndarray)):
        clip = Clip(torch.as_tensor(video), fps)
    else:
        raise ValueError(f"video must be a kinema.media.Clip or uint8 (T, H, W, 3) frames, got {type(video).__name__}")
    frames = torch.as_tensor(clip.frames)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or frames.shape[0] == 0:
        raise ValueError(f"video frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if not clip.fps or clip.fps <= 0:
        raise ValueError(f"video fps must be positive, got {clip.fps!r}")
    frames = resize_frames(resample_frames(frames, float(clip.fps), fps), size)
    return Clip(frames, fps, clip.audio, clip.sample_rate)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()


def to_model(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0).unsqueeze(0)


def fit_length(wav: torch.Tensor, n: int) -> torch.Tensor:
    """(C, N) cut or zero-padded to (C, n)."""
    if wav.shape[-1] >= n:
        return wav[..., :n]
    return torch.nn.functional.pad(wav, (0, n - wav.shape[-1]))


@dataclass
class GenerationOutput:
    """What a Pipeline call returns. ``tokens`` holds the generated codes per modality
    (``"video"``: (t, h, w), ``"audio"``: (Q, n)); ``stats`` one dict per LM window (prefix and
    output token counts, the KV cache length); ``interrupted`` is True when Ctrl-C stopped a long
    generation early and this is what was made so far; ``window_starts`` the output frame where each
    generated window begins (for checking that window boundaries do not show)."""

    video: torch.Tensor  # uint8 (T, H, W, 3)
    fps: float
    audio: torch.Tensor | None = None  # float32 (C, N)
    sample_rate: int | None = None
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    task: str = ""
    stats: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    window_starts: list[int] = field(default_factory=list)  # output frame where each LM window's frames begin

    @property
    def duration(self) -> float:
        return self.video.shape[0] / self.fps

    def to_clip(self) -> Clip:
        return Clip(self.video, self.fps, self.audio, self.sample_rate)

    def save(self, path: str | Path) -> Path:
        """Write an mp4 (H.264 + AAC when there is audio); atomic, see kinema.media.write_video."""
        from kinema.media import write_video

        return write_video(path, self.to_clip())
