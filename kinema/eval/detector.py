"""Object detector for the synthetic world: recovers colour, shape, position and size from frames.

Classic computer vision, no learning: every pixel is assigned to the nearest named colour of the
synthetic palette (or to the background) when it lies within a tolerance, each colour's mask is
split into connected components (``scipy.ndimage.label``), and the largest component of each
colour is one object (the world gives every object a distinct colour). Colours the world never
draws on the frame's background (white on white) are not candidates: near-white pixels of a slightly
off-white generated background would otherwise count as a white object. An object's shape comes from the
fill ratio of its bounding box (square ~1.0, circle ~pi/4, triangle ~1/2) together with where the
mass sits (a triangle pointing up is heavier at the bottom of its box). Works on real renders and,
with the tolerance, on blurry generated frames.

    dets = detect_frames(frames)         # frames uint8 (T, H, W, 3) -> per frame list[Detection]
    tracks = track_objects(dets)         # colour -> per frame Detection | None
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from kinema.data.synthetic import BACKGROUNDS, COLORS, object_colors

__all__ = ["Detection", "detect_frame", "detect_frames", "track_objects", "estimate_background", "classify_shape"]

_COLOR_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _COLOR_NAMES], np.float32)  # (C, 3)
_BG_NAMES = list(BACKGROUNDS)
_BG = np.array([BACKGROUNDS[b] for b in _BG_NAMES], np.float32)  # (B, 3)
# palette indices the world never draws on each background (white on white): never an object there
_NOT_DRAWN = {b: [i for i, c in enumerate(_COLOR_NAMES) if c not in object_colors(b)] for b in _BG_NAMES}


@dataclass
class Detection:
    color: str
    shape: str
    x: float  # centroid, pixel-index coordinates (column)
    y: float  # centroid (row)
    area: float  # pixels
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive
    fill: float  # area / bbox area

    @property
    def radius(self) -> float:
        """Equivalent radius (a circle of the same area), pixels."""
        return float(np.sqrt(self.area / np.pi))


def estimate_background(frame: np.ndarray) -> str:
    """Name of the background colour: the palette background nearest the frame's border median."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]]).astype(np.float32)  # (N, 3)
    med = np.median(border, axis=0)
    return _BG_NAMES[int(np.argmin(((_BG - med) ** 2).sum(-1)))]


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape of a binary blob (H, W) from its bounding-box fill ratio and vertical mass profile."""
    ys, xs = np.nonzero(mask)
    h = ys.max() - ys.min() + 1
    w = xs.max() - xs.min() + 1
    fill = len(ys) / float(h * w)
    if fill > 0.88:
        return "square", fill
    if fill < 0.64:
        return "triangle", fill
    # in between: a circle is symmetric top/bottom; a clipped triangle is heavier at the bottom
    rows = mask[ys.min(): ys.max() + 1].sum(1).astype(np.float32)  # width per row
    top, bottom = rows[: max(1, h // 3)].mean(), rows[-max(1, h // 3):].mean()
    if h >= 6 and bottom > 1.6 * top:
        return "triangle", fill
    return "circle", fill


def detect_frame(frame: np.ndarray, background: str | None = None, tol: float = 70.0,
                 min_area: float | None = None) -> list[Detection]:
    """Objects in one frame (H, W, 3) uint8. ``tol``: max RGB distance of a pixel to its colour."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected a frame (H, W, 3), got shape {tuple(frame.shape)}")
    H, W, _ = frame.shape
    bg_name = background or estimate_background(frame)
    bg = np.array(BACKGROUNDS[bg_name], np.float32)
    px = frame.reshape(-1, 3).astype(np.float32)  # (N, 3)
    d = np.sqrt(((px[:, None, :] - _PALETTE[None]) ** 2).sum(-1))  # (N, C)
    d[:, _NOT_DRAWN[bg_name]] = np.inf  # white pixels on white are background
    d_bg = np.sqrt(((px - bg) ** 2).sum(-1))  # (N,)
    nearest = d.argmin(1)
    dmin = d[np.arange(len(px)), nearest]
    label = np.where((dmin < tol) & (dmin < d_bg), nearest, -1).reshape(H, W)
    min_area = min_area if min_area is not None else max(6.0, 0.0015 * H * W)
    out: list[Detection] = []
    for ci, name in enumerate(_COLOR_NAMES):
        m = label == ci
        if m.sum() < min_area:
            continue
        comps, n = ndimage.label(m)
        sizes = ndimage.sum(m, comps, index=np.arange(1, n + 1))
        k = int(np.argmax(sizes)) + 1
        if sizes[k - 1] < min_area:
            continue
        blob = comps == k
        ys, xs = np.nonzero(blob)
        shape, fill = classify_shape(blob)
        out.append(Detection(name, shape, float(xs.mean()), float(ys.mean()), float(len(ys)),
                             (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), fill))
    return out


def detect_frames(frames: torch.Tensor | np.ndarray, background: str | None = None, **kw) -> list[list[Detection]]:
    """Per frame detections of a clip (T, H, W, 3) uint8. The background is estimated once (median of frames)."""
    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {tuple(arr.shape)}")
    if background is None:
        votes = [estimate_background(f) for f in arr[:: max(1, len(arr) // 8)]]
        background = max(set(votes), key=votes.count)
    return [detect_frame(f, background, **kw) for f in arr]


def track_objects(dets: list[list[Detection]]) -> dict[str, list[Detection | None]]:
    """Colour -> per-frame detection (objects of the synthetic world have distinct colours)."""
    colors = sorted({d.color for frame in dets for d in frame})
    tracks: dict[str, list[Detection | None]] = {c: [None] * len(dets) for c in colors}
    for t, frame in enumerate(dets):
        for d in frame:
            tracks[d.color][t] = d
    return tracks
