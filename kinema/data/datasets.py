"""Datasets of clips for the tokenizers and the diffusion models.

* :class:`VideoFolderDataset`: a folder of mp4/avi/mkv/webm/mov files with captions from
  ``manifest.jsonl`` (``{"path", "caption"}``) or sidecar ``.txt`` files; random windows of
  ``num_frames`` frames at ``fps``.
* :class:`SyntheticDataset`: the synthetic world rendered on the fly (no files).

Items are dicts: ``video`` float (3, T, H, W) in [-1, 1], ``caption`` str, ``path`` str and, when
asked, ``audio`` float (1, N). With ``size=None`` each clip keeps its own aspect ratio, snapped to
the nearest bucket resolution (see :mod:`kinema.data.buckets`), so batches group equal shapes.
"""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from kinema.data.buckets import DEFAULT_BUCKETS, nearest_bucket
from kinema.errors import MediaError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def _captions(root: Path) -> dict[str, str]:
    manifest = root / "manifest.jsonl"
    out: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[str(rec["path"])] = str(rec.get("caption", ""))
    return out


class VideoFolderDataset(Dataset):
    """Random ``num_frames`` windows from every video under ``root``."""

    def __init__(self, root: str | Path, num_frames: int = 17, fps: float = 8.0, size: tuple[int, int] | None = (128, 128),
                 audio: bool = False, sample_rate: int = 16000, seed: int = 0,
                 buckets: tuple[tuple[int, int], ...] = DEFAULT_BUCKETS, files: list[Path] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.files = sorted(files if files is not None else
                            [p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS])
        if not self.files:
            raise FileNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {self.root}")
        self.captions = _captions(self.root)
        self.num_frames, self.fps, self.size = num_frames, fps, size
        self.audio, self.sample_rate, self.seed = audio, sample_rate, seed
        self.buckets = buckets
        self.epoch = 0
        self._meta: dict[int, tuple[float, tuple[int, int]]] = {}
        self._bad: set[int] = set()  # files that failed to decode (per worker process)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def caption(self, i: int) -> str:
        path = self.files[i]
        rel = str(path.relative_to(self.root))
        if rel in self.captions:
            return self.captions[rel]
        side = path.with_suffix(".txt")
        return side.read_text().strip() if side.is_file() else ""

    def meta(self, i: int) -> tuple[float, tuple[int, int]]:
        """(duration seconds, (width, height)) of file i, cached."""
        if i not in self._meta:
            import av

            try:
                with av.open(str(self.files[i])) as c:
                    if not c.streams.video:
                        raise MediaError(f"{self.files[i]}: no video stream")
                    vs = c.streams.video[0]
                    dur = float(vs.duration * vs.time_base) if vs.duration else (c.duration or 0) / 1e6
                    self._meta[i] = (dur, (vs.codec_context.width, vs.codec_context.height))
            except av.error.FFmpegError as e:  # damaged or not a video at all
                raise MediaError(f"{self.files[i]}: cannot open ({e})") from e
        return self._meta[i]

    def target_size(self, i: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        try:
            return nearest_bucket(*self.meta(i)[1], self.buckets)
        except MediaError:  # __getitem__ skips it; any bucket will do for grouping
            return self.buckets[0]

    def __getitem__(self, i: int) -> dict:
        from kinema.media import read_video

        window = self.num_frames / self.fps
        want = self.target_size(i)  # a stand-in for a damaged file keeps the shape its batch expects
        for _ in range(len(self.files)):
            if i in self._bad:  # known damaged: the next file stands in for it
                i = (i + 1) % len(self.files)
                continue
            rng = random.Random(hash((self.seed, self.epoch, i)) & 0xFFFFFFFF)
            try:
                dur, _ = self.meta(i)
                start = rng.uniform(0, max(0.0, dur - window - 1e-3))
                clip = read_video(self.files[i], fps=self.fps, size=want, start=start, duration=window,
                                  audio=self.audio, sample_rate=self.sample_rate, mono=True)
                break
            except (MediaError, OSError, ValueError) as e:
                warnings.warn(f"skipping unreadable {self.files[i]}: {e}", stacklevel=2)
                self._bad.add(i)
                i = (i + 1) % len(self.files)
        else:
            raise MediaError(f"none of the {len(self.files)} files under {self.root} could be decoded")
        frames = clip.frames
        if frames.shape[0] < self.num_frames:  # short file: hold the last frame
            frames = torch.cat([frames, frames[-1:].expand(self.num_frames - frames.shape[0], -1, -1, -1)])
        item = {"video": frames[: self.num_frames].permute(3, 0, 1, 2).float() / 127.5 - 1.0,
                "caption": self.caption(i), "path": str(self.files[i])}
        if self.audio:
            n = int(round(window * self.sample_rate))
            wav = clip.audio if clip.audio is not None else torch.zeros(1, n)
            item["audio"] = torch.nn.functional.pad(wav, (0, max(0, n - wav.shape[1])))[:, :n]
        return item


class SyntheticDataset(Dataset):
    """The synthetic world, rendered on the fly: item i is seed ``seed + i``.

    With ``size=None`` each clip gets a bucket resolution drawn from its seed (so aspect ratios
    vary and :class:`BucketBatchSampler` keyed by :meth:`target_size` groups them).
    """

    def __init__(self, num_clips: int, seed: int = 0, size: tuple[int, int] | None = (128, 128), fps: float = 8.0,
                 num_frames: int = 17, audio: bool = False, sample_rate: int = 16000,
                 buckets: tuple[tuple[int, int], ...] = DEFAULT_BUCKETS):
        if num_clips <= 0 or num_frames <= 0 or fps <= 0:
            raise ValueError(f"num_clips, num_frames and fps must be positive, got {num_clips}, {num_frames}, {fps}")
        self.num_clips, self.seed, self.size, self.fps = num_clips, seed, size, fps
        self.num_frames, self.audio, self.sample_rate, self.buckets = num_frames, audio, sample_rate, buckets

    def __len__(self) -> int:
        return self.num_clips

    def target_size(self, i: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return self.buckets[random.Random(self.seed + i).randrange(len(self.buckets))]

    def __getitem__(self, i: int) -> dict:
        from kinema.data.synthetic import generate

        if not 0 <= i < self.num_clips:
            raise IndexError(i)
        clip = generate(self.seed + i, self.target_size(i), self.fps, self.num_frames / self.fps, self.sample_rate)
        item = {"video": clip.frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0, "caption": clip.caption,
                "path": f"synthetic:{self.seed + i}"}
        if self.audio:
            item["audio"] = clip.audio
        return item
