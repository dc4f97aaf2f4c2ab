"""Generation metrics on the synthetic world, computed from the detector's tracks and the caption.

- prompt alignment: the detected objects (colour, majority shape, count) equal the caption's;
  split into its parts (right colours; right shape for each captioned object seen) to show which fails;
- motion: each captioned object moves as said (slide direction; bouncing reverses only at walls;
  falling accelerates downward; static stays put);
- persistence: fraction of frames in which every captioned object is seen with its colour and
  shape, and whether objects that vanish come back;
- audio-visual sync: visual wall/floor contacts (velocity reversals near a wall) matched to audio
  onsets (energy envelope), offset in frames.

All functions take plain arrays so they judge ground-truth renders and generated clips alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from kinema.data.synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES
from kinema.eval.detector import Detection, detect_frames, track_objects

__all__ = ["CaptionObject", "parse_caption", "prompt_alignment", "alignment_parts", "motion_correct", "slide_speed",
           "persistence", "visual_contacts", "audio_onsets", "av_sync", "evaluate_clip"]

_MOTION_RE = "|".join(sorted((m if m != "static" else "standing still" for m in MOTIONS), key=len, reverse=True))
_OBJ_RE = re.compile(rf"\b(?:a|an|one)\s+(?:({'|'.join(SIZES)})\s+)?({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})"
                     rf"(?:\s+({_MOTION_RE}))?")
_BG_RE = re.compile(rf"on an? ({'|'.join(sorted(BACKGROUNDS, key=len, reverse=True))}) background")


@dataclass
class CaptionObject:
    color: str
    shape: str
    size: str | None
    motion: str | None  # one of MOTIONS or None when the caption does not say


def parse_caption(caption: str) -> tuple[list[CaptionObject], str | None]:
    """Objects and background named by a synthetic-world caption ("a small red circle bouncing ...")."""
    text = caption.lower()
    objs = []
    for size, color, shape, motion in _OBJ_RE.findall(text):
        motion = "static" if motion == "standing still" else (motion or None)
        objs.append(CaptionObject(color, shape, size or None, motion))
    bg = _BG_RE.search(text)
    return objs, (bg.group(1) if bg else None)


def _present(track: list[Detection | None], min_frac: float = 0.3) -> bool:
    return sum(d is not None for d in track) >= max(1, min_frac * len(track))


def _majority_shape(track: list[Detection | None]) -> str | None:
    shapes = [d.shape for d in track if d is not None]
    return max(set(shapes), key=shapes.count) if shapes else None


def prompt_alignment(tracks: dict[str, list[Detection | None]], objs: list[CaptionObject]) -> bool:
    """True when the set of (colour, shape) seen in >= 30% of frames equals the caption's."""
    seen = {(c, _majority_shape(tr)) for c, tr in tracks.items() if _present(tr)}
    want = {(o.color, o.shape) for o in objs}
    return len(objs) > 0 and seen == want


def alignment_parts(tracks: dict[str, list[Detection | None]], objs: list[CaptionObject]) -> dict:
    """Where alignment fails: ``colors_aligned`` (the colours seen in >= 30% of frames are exactly the
    caption's) and ``shapes_right`` (of the captioned objects that were seen, the fraction whose
    majority shape is the caption's; None when none was seen)."""
    seen = {c for c, tr in tracks.items() if _present(tr)}
    shown = [o for o in objs if o.color in seen]
    return {"colors_aligned": len(objs) > 0 and seen == {o.color for o in objs},
            "shapes_right": (float(np.mean([_majority_shape(tracks[o.color]) == o.shape for o in shown]))
                             if shown else None)}


def _series(track: list[Detection | None]) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and centres (n, 2) where the object was seen."""
    idx = np.array([t for t, d in enumerate(track) if d is not None])
    xy = np.array([[d.x, d.y] for d in track if d is not None]).reshape(-1, 2)
    return idx, xy


_SLIDE_DIRS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _slide_velocity(v: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """Median (vx, vy) px/frame of per-frame steps ``v`` (n, 2), wrap-around jumps left out."""
    step = v[np.abs(v).max(1) < 0.25 * min(size)]
    return np.median(step, axis=0) if len(step) else None


def slide_speed(track: list[Detection | None], motion: str, size: tuple[int, int]) -> float | None:
    """A sliding object's median speed along its captioned direction, px/frame (negative: the wrong
    way); None when the object is seen in fewer than 3 frames or the motion is not a slide. The
    binary motion score says whether an object slides the right way; this says how far it is from
    doing so (renders of the synthetic world slide at about 5 px/frame at 128x128)."""
    if not motion or not motion.startswith("sliding"):
        return None
    idx, xy = _series(track)
    if len(idx) < 3:
        return None
    vm = _slide_velocity(np.diff(xy, axis=0) / np.diff(idx)[:, None], size)
    if vm is None:
        return None
    want = _SLIDE_DIRS[motion.split()[1]]
    return float(vm[0] * want[0] + vm[1] * want[1])


def motion_correct(track: list[Detection | None], motion: str, size: tuple[int, int]) -> bool | None:
    """Does the track move as ``motion`` says? ``size`` = (W, H). None when it cannot be judged."""
    W, H = size
    idx, xy = _series(track)
    if len(idx) < 3:
        return False
    v = np.diff(xy, axis=0) / np.diff(idx)[:, None]  # (n-1, 2) px per frame
    speed_tol = 0.006 * H  # px/frame
    if motion == "static":
        return bool(np.abs(xy - xy[0]).max() < 0.03 * H)
    if motion.startswith("sliding"):
        vm = _slide_velocity(v, size)
        if vm is None:
            return False
        want = _SLIDE_DIRS[motion.split()[1]]
        axis = 0 if want[0] else 1
        return bool(vm[axis] * want[axis] > speed_tol and abs(vm[1 - axis]) < abs(vm[axis]) / 2)
    if motion == "bouncing":
        if np.median(np.linalg.norm(v, axis=1)) < speed_tol * 3:
            return False
        return _reversals_at_walls(track, size)
    if motion == "falling":
        vy = v[:, 1]
        first_up = np.argmax(vy < -speed_tol) if (vy < -speed_tol).any() else len(vy)
        fall = vy[:first_up]
        if len(fall) >= 3:  # accelerating downward before the first floor bounce
            return bool(fall.mean() > speed_tol and np.diff(fall).mean() > 0)
        return bool(xy[:, 1].max() > H * 0.6)  # already down: it must be in the lower part
    return None


def _reversals_at_walls(track: list[Detection | None], size: tuple[int, int], margin: float = 0.08) -> bool:
    contacts, interior = visual_contacts(track, size, margin, return_interior=True)
    return interior == 0


def visual_contacts(track: list[Detection | None], size: tuple[int, int], margin: float = 0.08,
                    return_interior: bool = False):
    """Frames where the object's velocity reverses with its edge within ``margin`` * H of a wall."""
    W, H = size
    contacts: list[float] = []
    interior = 0
    ts = [t for t, d in enumerate(track) if d is not None]
    for a, b, c in zip(ts, ts[1:], ts[2:]):
        if not (b - a == 1 and c - b == 1):
            continue
        da, db, dc = track[a], track[b], track[c]
        for axis, (lo, hi) in ((0, (db.bbox[0], W - 1 - db.bbox[2])), (1, (db.bbox[1], H - 1 - db.bbox[3]))):
            pa, pb, pc = ((da.x, db.x, dc.x) if axis == 0 else (da.y, db.y, dc.y))
            v1, v2 = pb - pa, pc - pb
            thr = 0.004 * H
            if v1 * v2 < 0 and abs(v1) > thr and abs(v2) > thr:
                near = (lo if v1 < 0 else hi) <= margin * H
                if near:
                    # sub-frame contact time: the two straight paths meet where they are reflected
                    frac = abs(v1) / (abs(v1) + abs(v2))
                    contacts.append(b - 0.5 + frac)
                else:
                    interior += 1
    return (contacts, interior) if return_interior else contacts


def audio_onsets(audio: torch.Tensor | np.ndarray, sample_rate: int, hop_s: float = 0.005,
                 thresh: float = 0.05, refractory_s: float = 0.08) -> list[float]:
    """Onset times (s) of tones: the energy envelope crossing ``thresh`` of full scale upward."""
    a = audio.numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    a = a.reshape(-1, a.shape[-1]).mean(0) if a.ndim > 1 else a
    hop = max(1, int(hop_s * sample_rate))
    n = len(a) // hop
    if n == 0:
        return []
    env = np.sqrt((a[: n * hop].reshape(n, hop) ** 2).mean(1))  # RMS per hop
    above = env > thresh
    onsets, last = [], -1e9
    for i in np.nonzero(above & ~np.concatenate([[False], above[:-1]]))[0]:
        t = i * hop / sample_rate
        if t - last >= refractory_s:
            onsets.append(float(t))
            last = t
    return onsets


def av_sync(contacts_s: list[float], onsets_s: list[float], fps: float) -> dict:
    """Match each visual contact to the nearest audio onset: offsets (frames) and fraction within one frame."""
    if not contacts_s:
        return {"contacts": 0, "onsets": len(onsets_s), "within_one_frame": None, "mean_abs_offset_frames": None}
    offs = [min((abs(o - c) for o in onsets_s), default=float("inf")) * fps for c in contacts_s]
    fin = [o for o in offs if np.isfinite(o)]
    return {"contacts": len(contacts_s), "onsets": len(onsets_s),
            "within_one_frame": float(np.mean([o <= 1.0 for o in offs])),
            "mean_abs_offset_frames": float(np.mean(fin)) if fin else None}


def persistence(tracks: dict[str, list[Detection | None]], objs: list[CaptionObject]) -> dict:
    """Fraction of frames with every captioned object seen with the right shape; reappearance after gaps."""
    T = len(next(iter(tracks.values()))) if tracks else 0
    if T == 0 or not objs:
        return {"frames_all_objects": 0.0, "reappeared": None}
    good = np.ones(T, bool)
    gaps = back = 0
    for o in objs:
        tr = tracks.get(o.color, [None] * T)
        ok = np.array([d is not None and d.shape == o.shape for d in tr])
        good &= ok
        seen = np.array([d is not None for d in tr])
        for t in range(1, T):
            if seen[t - 1] and not seen[t]:
                gaps += 1
                back += int(seen[t:].any())
    return {"frames_all_objects": float(good.mean()), "reappeared": (back / gaps) if gaps else None}


def evaluate_clip(frames: torch.Tensor, caption: str, fps: float, audio: torch.Tensor | None = None,
                  sample_rate: int | None = None) -> dict:
    """All per-clip scores for frames (T, H, W, 3) uint8 judged against ``caption``."""
    objs, bg = parse_caption(caption)
    if not objs:
        raise ValueError(f"caption names no synthetic-world object: {caption!r}")
    T, H, W, _ = frames.shape
    tracks = track_objects(detect_frames(frames, background=bg))
    for c in (o.color for o in objs):
        tracks.setdefault(c, [None] * T)
    per_object = [{"motion": o.motion, "correct": motion_correct(tracks[o.color], o.motion, (W, H)),
                   "slide_speed": slide_speed(tracks[o.color], o.motion, (W, H))} for o in objs if o.motion]
    motions = [m["correct"] for m in per_object if m["correct"] is not None]
    res = {"caption": caption, "aligned": prompt_alignment(tracks, objs),
           "motion_correct": float(np.mean(motions)) if motions else None, "motions": per_object,
           **alignment_parts(tracks, objs), **persistence(tracks, objs)}
    if audio is not None and sample_rate:
        contacts = [c / fps for o in objs if o.motion in ("bouncing", "falling")
                    for c in visual_contacts(tracks[o.color], (W, H))]
        res["av"] = av_sync(sorted(contacts), audio_onsets(audio, sample_rate), fps)
    return res
