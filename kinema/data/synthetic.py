"""The synthetic world: deterministic captioned videos with sound and per-frame ground truth.

Flat-coloured shapes of named colours and sizes move on a named background: bouncing off the
walls, falling under gravity (bouncing on the floor, losing energy), sliding in one direction
(wrapping around the frame so long videos stay meaningful), or standing still. Every wall/floor
contact rings a short tone whose pitch depends on the shape, placed at the exact contact time.

Physics runs in world units (height 1, width = aspect ratio) and continuous time, so one seed gives
the same motion at any resolution, frame rate or length. Draw order is depth (later objects occlude
earlier ones). Edges are anti-aliased by 3x3 supersampling. A shape bounces when its own edge
touches a wall (a triangle's tip, a square's side), so contacts are visible where they sound.

Ground truth per frame and object (pixel-index coordinates: pixel column i is centred on x = i):
``x, y`` centre, ``radius``, ``bbox`` [x0, y0, x1, y1] reach of the shape, ``visible`` fraction of
the shape in frame and not hidden by later objects, ``bounced`` (a contact happened in this frame's
interval [k/fps, (k+1)/fps)). ``events`` lists (time s, object index, "wall" | "floor").

In the spirit of Moving MNIST (Srivastava et al., 2015) and CLEVRER (Yi et al., ICLR 2020): a world
whose every attribute is known, so a generator can be checked against its caption.

    clip = generate(7, size=(128, 128), fps=8.0, seconds=2.0)
    clip.frames (T, H, W, 3) uint8, clip.audio (1, N), clip.caption, clip.truth[t][i]["x"], ...
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 225, 40),
    "white": (245, 245, 245),
    "cyan": (40, 225, 230),
    "magenta": (225, 50, 225),
    "orange": (250, 140, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "dark blue": (15, 20, 70),
}
SIZES = {"small": 0.08, "large": 0.14}  # radius in world units (frame height = 1)
MOTIONS = ("bouncing", "falling", "sliding left", "sliding right", "sliding up", "sliding down", "static")
TONE_HZ = {"circle": 440.0, "square": 660.0, "triangle": 880.0}
TONE_SECONDS = 0.06
GRAVITY = 2.5  # world units / s^2
RESTITUTION = 0.85  # falling objects keep this fraction of speed at each floor bounce
SLIDE_SPEED = 0.35  # world units / s
PHYSICS_HZ = 480
MIN_ASPECT, MAX_ASPECT = 0.4, 4.0  # width / height range in which every shape fits


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    motion: str
    x: float  # initial centre, world units
    y: float
    vx: float
    vy: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """How far the shape reaches (left, up, right, down) from its centre, world units."""
        return shape_extent(self.shape, self.radius)

    def phrase(self) -> str:
        motion = "standing still" if self.motion == "static" else self.motion
        return f"a {self.size} {self.color} {self.shape} {motion}"


@dataclass
class Scene:
    objects: list[SceneObject]
    background: str
    aspect: float = 1.0  # width / height of the world
    seed: int = 0

    @property
    def caption(self) -> str:
        parts = [o.phrase() for o in self.objects]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body} on a {self.background} background"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls([SceneObject(**o) for o in d["objects"]], d["background"], d.get("aspect", 1.0), d.get("seed", 0))


@dataclass
class SynthClip:
    frames: torch.Tensor  # uint8 (T, H, W, 3)
    audio: torch.Tensor  # float32 (1, N)
    fps: float
    sample_rate: int
    caption: str
    truth: list[list[dict]]  # per frame, per object
    events: list[tuple[float, int, str]]  # (time s, object index, "wall" | "floor")
    scene: Scene = field(repr=False)


def shape_extent(shape: str, r: float) -> tuple[float, float, float, float]:
    """(left, up, right, down) reach of ``shape`` of radius ``r`` from its centre (see ``_shape_mask``)."""
    if shape == "circle":
        return (r, r, r, r)
    if shape == "square":
        return (0.886 * r,) * 4
    if shape == "triangle":
        half = 1.2 * r * math.sqrt(3.0) / 2
        return (half, 1.2 * r, half, 0.6 * r)
    raise ValueError(f"unknown shape {shape!r}")


def object_colors(background: str) -> list[str]:
    """The object colours the world draws on ``background``: all but white on white (too close to tell)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; valid: {', '.join(BACKGROUNDS)}")
    return [c for c in COLORS if not (c == "white" and background == "white")]


def sample_scene(seed: int, num_objects: int | None = None, aspect: float = 1.0) -> Scene:
    """A random scene, deterministic in ``seed``. Objects have distinct colours."""
    if not MIN_ASPECT <= aspect <= MAX_ASPECT:
        raise ValueError(f"the synthetic world needs width/height between {MIN_ASPECT} and {MAX_ASPECT} "
                         f"(large shapes must fit), got {aspect:.3f}")
    if num_objects is not None and not 1 <= num_objects <= len(COLORS) - 1:  # distinct colours, none the background
        raise ValueError(f"num_objects must be between 1 and {len(COLORS) - 1}, got {num_objects}")
    rng = np.random.default_rng(seed)
    n = num_objects or int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    background = str(rng.choice(list(BACKGROUNDS)))
    colors = rng.choice(object_colors(background), size=n, replace=False)
    objects = []
    for i in range(n):
        size = str(rng.choice(list(SIZES)))
        r = SIZES[size] * 1.2  # the triangle reaches 1.2 r from its centre
        motion = str(rng.choice(MOTIONS))
        x = float(rng.uniform(r, aspect - r))
        y = float(rng.uniform(r, 1 - r))
        vx = vy = 0.0
        if motion == "bouncing":
            angle = rng.uniform(0, 2 * math.pi)
            speed = rng.uniform(0.5, 0.9)
            vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        elif motion == "falling":
            y = float(rng.uniform(r, 0.4))
        elif motion.startswith("sliding"):
            direction = motion.split()[1]
            vx = {"left": -SLIDE_SPEED, "right": SLIDE_SPEED}.get(direction, 0.0)
            vy = {"up": -SLIDE_SPEED, "down": SLIDE_SPEED}.get(direction, 0.0)
        objects.append(SceneObject(str(rng.choice(SHAPES)), str(colors[i]), size, motion, x, y, vx, vy))
    return Scene(objects, background, aspect, seed)


def simulate(scene: Scene, times: np.ndarray) -> tuple[np.ndarray, list[tuple[float, int, str]]]:
    """Object centres at ``times`` (T, O, 2) in world units, and every contact event up to the last time."""
    O = len(scene.objects)
    T_end = float(times[-1]) if len(times) else 0.0
    pos = np.array([[o.x, o.y] for o in scene.objects], dtype=np.float64).reshape(O, 2)
    vel = np.array([[o.vx, o.vy] for o in scene.objects], dtype=np.float64).reshape(O, 2)
    ext = np.array([o.extent for o in scene.objects]).reshape(O, 4)  # (O, [left, up, right, down])
    gravity = np.array([GRAVITY if o.motion == "falling" else 0.0 for o in scene.objects])
    walls = np.array([o.motion in ("bouncing", "falling") for o in scene.objects])
    dt = 1.0 / PHYSICS_HZ
    out = np.zeros((len(times), O, 2))
    events: list[tuple[float, int, str]] = []
    t, k = 0.0, 0
    width = scene.aspect
    while k < len(times):
        while k < len(times) and times[k] <= t + 1e-12:
            out[k] = pos
            k += 1
        if k >= len(times) or t > T_end:
            break
        new_vel = vel.copy()
        new_vel[:, 1] += gravity * dt
        new_pos = pos + (vel + new_vel) * 0.5 * dt
        for i in range(O):
            if walls[i]:
                lo = ext[i, :2]  # walls are touched by the shape's own edge
                hi = np.array([width - ext[i, 2], 1 - ext[i, 3]])
                for axis in (0, 1):
                    for bound, sign in ((lo[axis], -1), (hi[axis], 1)):
                        if (new_pos[i, axis] - bound) * sign > 0 and new_vel[i, axis] * sign > 0:
                            frac = (bound - pos[i, axis]) / (new_pos[i, axis] - pos[i, axis] + 1e-12)
                            t_hit = t + float(np.clip(frac, 0, 1)) * dt
                            keep = RESTITUTION if (gravity[i] > 0 and axis == 1 and sign > 0) else 1.0
                            new_pos[i, axis] = bound - (new_pos[i, axis] - bound) * keep
                            new_vel[i, axis] = -new_vel[i, axis] * keep
                            kind = "floor" if (axis == 1 and sign > 0) else "wall"
                            if abs(new_vel[i, axis]) > 0.15:  # a resting object stops ringing
                                events.append((t_hit, i, kind))
                if gravity[i] > 0 and new_pos[i, 1] >= hi[1] - 1e-6 and abs(new_vel[i, 1]) < 0.15:
                    new_pos[i, 1], new_vel[i, 1] = hi[1], 0.0  # at rest on the floor
            else:  # sliding objects wrap around; static ones have zero velocity
                new_pos[i, 0] %= width
                new_pos[i, 1] %= 1.0
        pos, vel, t = new_pos, new_vel, t + dt
    return out, [e for e in events if e[0] <= T_end + 1e-9]


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = r * 0.886  # same area as the circle
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # equilateral, pointing up, circumradius r*1.2, centroid at centre
        R = r * 1.2
        return (dy <= R * 0.5) & (dy >= -R + math.sqrt(3.0) * np.abs(dx))
    raise ValueError(f"unknown shape {shape!r}")


def _shape_area(shape: str, r: float) -> float:
    """Exact area of ``_shape_mask(shape, ..., r)``."""
    if shape == "circle":
        return math.pi * r * r
    if shape == "square":
        return (2 * 0.886 * r) ** 2
    return 3 * math.sqrt(3.0) / 4 * (1.2 * r) ** 2  # equilateral triangle of circumradius 1.2 r


_SS = 3  # supersampling factor per axis


def _render_frame(scene: Scene, centres: np.ndarray, W: int, H: int) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """One frame (H, W, 3) float, each object's visible coverage (H, W) in [0, 1], and each
    object's visible fraction (in frame and not hidden by objects drawn after it)."""
    img = np.empty((H, W, 3), np.float32)
    img[:] = BACKGROUNDS[scene.background]
    offs = (np.arange(_SS) + 0.5) / _SS
    covers, alone, inside = [], [], []
    for i, obj in enumerate(scene.objects):
        r = obj.radius
        cov = np.zeros((H, W), np.float32)
        copies = [(0.0, 0.0)]
        if obj.motion.startswith("sliding"):  # wrapped copies near the edges
            copies = [(sx, sy) for sx in (-scene.aspect, 0.0, scene.aspect) for sy in (-1.0, 0.0, 1.0)]
        for sx, sy in copies:
            cx, cy = (centres[i, 0] + sx) * H, (centres[i, 1] + sy) * H  # pixel units
            rp = r * H * 1.25
            x0, x1 = max(0, int(cx - rp) - 1), min(W, int(cx + rp) + 2)
            y0, y1 = max(0, int(cy - rp) - 1), min(H, int(cy + rp) + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            xs = (np.arange(x0, x1)[:, None] + offs[None]).reshape(-1)
            ys = (np.arange(y0, y1)[:, None] + offs[None]).reshape(-1)
            m = _shape_mask(obj.shape, xs[None, :] - cx, ys[:, None] - cy, r * H)
            m = m.reshape(y1 - y0, _SS, x1 - x0, _SS).mean(axis=(1, 3))
            cov[y0:y1, x0:x1] = np.maximum(cov[y0:y1, x0:x1], m)
        for prev in covers:  # this object hides what was drawn before it
            prev *= 1.0 - cov
        reach = r * 1.2 * H
        cx, cy = centres[i, 0] * H, centres[i, 1] * H
        wrapped = obj.motion.startswith("sliding")
        inside.append(wrapped or (reach <= cx <= W - reach and reach <= cy <= H - reach))
        alone.append(float(cov.sum()))
        covers.append(cov)
        img += cov[..., None] * (np.array(COLORS[obj.color], np.float32) - img)
    visible = []
    for i, obj in enumerate(scene.objects):
        in_frame = 1.0 if inside[i] else min(1.0, alone[i] / _shape_area(obj.shape, obj.radius * H))
        visible.append(float(covers[i].sum()) / alone[i] * in_frame if alone[i] > 0 else 0.0)
    return img, covers, visible


def _tones(scene: Scene, events, n_samples: int, sample_rate: int) -> np.ndarray:
    audio = np.zeros(n_samples, np.float32)
    n_tone = int(TONE_SECONDS * sample_rate)
    tt = np.arange(n_tone) / sample_rate
    for t_hit, i, _ in events:
        start = int(round(t_hit * sample_rate))
        if start >= n_samples:
            continue
        freq = TONE_HZ[scene.objects[i].shape]
        tone = 0.5 * np.sin(2 * np.pi * freq * tt) * np.exp(-tt / (TONE_SECONDS / 4)) * np.minimum(1.0, tt * sample_rate / 16)
        end = min(n_samples, start + n_tone)
        audio[start:end] += tone[: end - start].astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def render(scene: Scene, size: tuple[int, int] = (128, 128), fps: float = 8.0, seconds: float = 2.0,
           sample_rate: int = 16000, start: float = 0.0) -> SynthClip:
    """Render ``seconds`` of ``scene`` from time ``start`` at ``size`` = (width, height)."""
    W, H = size
    if W <= 0 or H <= 0 or fps <= 0 or seconds <= 0:
        raise ValueError(f"size, fps and seconds must be positive, got {size}, {fps}, {seconds}")
    if abs(W / H - scene.aspect) > 1e-3:
        raise ValueError(f"size {W}x{H} does not match the scene's aspect ratio {scene.aspect:.3f}")
    T = max(1, int(round(seconds * fps)))
    times = start + np.arange(T) / fps
    centres, events = simulate(scene, np.concatenate([times, [start + seconds]]))
    centres = centres[:T]
    events = [(t - start, i, k) for t, i, k in events if start <= t < start + seconds]
    frames = np.empty((T, H, W, 3), np.uint8)
    truth: list[list[dict]] = []
    for k in range(T):
        img, _, visible = _render_frame(scene, centres[k], W, H)
        frames[k] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        row = []
        for i, obj in enumerate(scene.objects):
            x_px = float(centres[k, i, 0] * H) - 0.5  # pixel-index coordinates (pixel i spans [i, i+1))
            y_px = float(centres[k, i, 1] * H) - 0.5
            bounced = any(k / fps <= t < (k + 1) / fps and j == i for t, j, _ in events)
            e = obj.extent  # bbox: same pixel-index coordinates as x, y; may reach past the frame
            row.append({"shape": obj.shape, "color": obj.color, "size": obj.size, "x": x_px, "y": y_px,
                        "radius": obj.radius * H, "visible": visible[i],
                        "bbox": [x_px - e[0] * H, y_px - e[1] * H, x_px + e[2] * H, y_px + e[3] * H],
                        "bounced": bounced})
        truth.append(row)
    audio = _tones(scene, events, int(round(seconds * sample_rate)), sample_rate)
    return SynthClip(torch.from_numpy(frames), torch.from_numpy(audio)[None], float(fps), sample_rate,
                     scene.caption, truth, events, scene)


def generate(seed: int, size: tuple[int, int] = (128, 128), fps: float = 8.0, seconds: float = 2.0,
             sample_rate: int = 16000, num_objects: int | None = None) -> SynthClip:
    """``render(sample_scene(seed), ...)``: the whole world in one call."""
    scene = sample_scene(seed, num_objects=num_objects, aspect=size[0] / size[1])
    return render(scene, size, fps, seconds, sample_rate)


def _write_one(job: tuple) -> dict:
    seed, out_dir, size, fps, seconds, sample_rate = job
    from kinema.media import Clip, write_video

    torch.set_num_threads(1)
    clip = generate(seed, size, fps, seconds, sample_rate)
    name = f"clip_{seed:07d}.mp4"
    write_video(Path(out_dir) / name, Clip(clip.frames, fps, clip.audio, sample_rate))
    return {"path": name, "caption": clip.caption, "seed": seed, "fps": fps, "seconds": seconds,
            "size": list(size), "scene": clip.scene.to_dict(), "events": clip.events, "truth": clip.truth}


def write_dataset(out_dir: str | Path, clips: int = 100, seconds: float = 2.0, size: tuple[int, int] = (128, 128),
                  fps: float = 8.0, seed: int = 0, workers: int | None = None, sample_rate: int = 16000) -> Path:
    """Write mp4s (video + sound) and ``manifest.jsonl`` for seeds ``seed .. seed+clips-1``.

    Seeds whose scene has one of the evaluation's held-out captions (:mod:`kinema.data.heldout`)
    are skipped, so a training set written here never contains an evaluation prompt; such a
    dataset has a few clips fewer than ``clips`` (each line records its seed).
    Each manifest line: path (relative to ``out_dir``), caption, seed, fps, seconds, size, scene,
    events and per-frame truth. Odd sizes are padded by the encoder on the right/bottom, so the
    truth's pixel coordinates stay valid.
    """
    if clips <= 0 or seconds <= 0 or fps <= 0 or sample_rate <= 0 or min(size) <= 0:
        raise ValueError(f"clips, seconds, fps, sample_rate and size must be positive, got "
                         f"{clips}, {seconds}, {fps}, {sample_rate}, {size}")
    from multiprocessing import get_context

    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from kinema.data.heldout import is_heldout

    seeds = [s for s in range(seed, seed + clips) if not is_heldout(sample_scene(s, aspect=size[0] / size[1]).caption)]
    if len(seeds) < clips:
        print(f"synth: skipped {clips - len(seeds)} seed(s) whose caption is a held-out evaluation prompt")
    clips = len(seeds)
    if clips == 0:
        raise ValueError("every requested seed has a held-out evaluation caption; pick other seeds")
    jobs = [(s, str(out_dir), tuple(size), fps, seconds, sample_rate) for s in seeds]
    workers = max(1, min(workers or os.cpu_count() or 1, clips))
    records = []
    if workers == 1:
        it = map(_write_one, jobs)
        records = list(tqdm(it, total=clips, desc="synth", unit="clip"))
    else:
        with get_context("fork").Pool(workers) as pool:
            records = list(tqdm(pool.imap(_write_one, jobs, chunksize=4), total=clips, desc="synth", unit="clip"))
    manifest = out_dir / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, manifest)
    return manifest
