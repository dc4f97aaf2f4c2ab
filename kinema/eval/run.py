"""Run the evaluation of a generator on held-out synthetic-world prompts; JSON + HTML report.

Prompts are the fixed held-out captions of :mod:`kinema.data.heldout` (scenes of seeds far from the
training range, which no training set written by ``kinema synth`` contains; a caption that appears
verbatim in a given training manifest is skipped all the same). Each prompt is generated, then judged by the
detector-based metrics (kinema.eval.metrics). Frame quality is the video tokenizer's
reconstruction PSNR/SSIM on real renders of the synthetic world.

    report = evaluate_pipeline(pipe, n_prompts=8, seconds=4.0, out_dir="runs/eval")
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kinema.data.heldout import HELDOUT_SEED, draw_captions, heldout_captions, heldout_seed
from kinema.data.synthetic import generate, sample_scene
from kinema.eval.metrics import evaluate_clip

__all__ = ["heldout_prompts", "manifest_captions", "psnr", "ssim", "tokenizer_quality", "summarize", "evaluate_pipeline",
           "render_caption"]


def heldout_prompts(n: int, exclude: set[str] | None = None) -> list[str]:
    """The first ``n`` captions of the fixed held-out list (:mod:`kinema.data.heldout`) that are not
    in ``exclude``. Past the end of the list, more scenes are drawn after its last seed (those are
    not protected from training sets the way the list is)."""
    exclude = set(exclude or ())
    listed = heldout_captions()
    out = [c for c in listed if c not in exclude][:n]
    if len(out) < n:
        after = max(heldout_seed(c) for c in listed) + 1
        out += [c for _, c in draw_captions(n - len(out), exclude | set(listed), seed=after)]
    return out


def manifest_captions(path: str | Path) -> set[str]:
    """The captions of a dataset's manifest.jsonl (e.g. the training set's, to keep them out of the prompts)."""
    with open(path) as f:
        return {json.loads(line)["caption"] for line in f if line.strip()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of uint8-range tensors."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al., 2004) over frames (T, H, W, 3) uint8, 7x7 box window on luma-less RGB mean."""
    x = a.float().permute(0, 3, 1, 2) / 255.0  # (T, 3, H, W)
    y = b.float().permute(0, 3, 1, 2) / 255.0
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda t: F.avg_pool2d(t, 7, 1, 3, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx ** 2, pool(y * y) - my ** 2, pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


@torch.inference_mode()
def tokenizer_quality(vt: Any, n: int = 6, size: tuple[int, int] = (128, 128), frames: int = 17,
                      seed: int = HELDOUT_SEED) -> dict:
    """Reconstruction PSNR/SSIM of the video tokenizer on ``n`` held-out synthetic clips."""
    ps, ss = [], []
    for i in range(n):
        c = generate(seed + 10_000 + i, size=size, seconds=frames / 8.0)
        x = (c.frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0)[None]  # (1, 3, T, H, W)
        rec = vt.decode(vt.encode(x)).clamp(-1, 1)
        r = ((rec[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # (T, H, W, 3)
        ps.append(psnr(c.frames, r))
        ss.append(ssim(c.frames, r))
    return {"psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)), "clips": n}


CLASSIFIER_DIR = Path(__file__).resolve().parents[1] / "assets" / "eval_classifier"


@torch.inference_mode()
def frechet_vs_real(videos: list[torch.Tensor], n_real: int = 512, floor_sets: int = 4,
                    classifier_dir: str | Path = CLASSIFIER_DIR) -> dict | None:
    """Fréchet distance (classifier features) of ``videos`` to ``n_real`` real renders, beside the
    floor: the distance of ``floor_sets`` sets of as many other real renders to the same reference.

    With a few dozen clips in 128-d features the estimate is noisy: two real sets of 48 clips lie
    0.4 to 5 apart from a 48-clip reference. A large reference and the floor's range say how far
    apart a generator has to be before the difference means something."""
    from kinema.eval.frechet import VideoClassifier, clip_input, frechet_distance

    if not (Path(classifier_dir) / "config.json").is_file() or len(videos) < 2:
        return None
    clf = VideoClassifier.from_pretrained(classifier_dir)
    T = clf.cfg.frames

    def feats(vs: list[torch.Tensor]) -> np.ndarray:
        return clf.features(torch.stack([clip_input(v, clf.cfg) for v in vs])).float().numpy()

    def real_feats(seed: int, n: int, batch: int = 64) -> np.ndarray:  # rendered in batches: bounded memory
        return np.concatenate([feats([generate(seed + i, size=(64, 64), seconds=T / 8.0).frames
                                      for i in range(j, min(n, j + batch))]) for j in range(0, n, batch)])

    ref = real_feats(HELDOUT_SEED + 20_000, n_real)
    n = len(videos)
    floors = [frechet_distance(real_feats(HELDOUT_SEED + 30_000 + k * n, n), ref) for k in range(floor_sets)]
    return {"frechet_generated_vs_real": frechet_distance(feats(videos), ref),
            "frechet_real_vs_real": float(np.mean(floors)),
            "frechet_real_vs_real_range": [float(min(floors)), float(max(floors))],
            "n_generated": n, "n_real": n_real}


def summarize(results: list[dict]) -> dict:
    """Aggregate per-clip results into the table's numbers."""
    def mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    av = [r["av"] for r in results if r.get("av")]
    objects = [m for r in results for m in r.get("motions", [])]
    kinds = sorted({m["motion"].split()[0] for m in objects})
    speeds = [m["slide_speed"] for m in objects if m.get("slide_speed") is not None]
    return {
        "clips": len(results),
        "prompt_alignment": mean([float(r["aligned"]) for r in results]),
        "color_alignment": mean([float(r["colors_aligned"]) for r in results]),
        "shape_accuracy": mean([r["shapes_right"] for r in results]),
        "motion_correct": mean([r["motion_correct"] for r in results]),
        "persistence_frames": mean([r["frames_all_objects"] for r in results]),
        "reappeared": mean([r["reappeared"] for r in results]),
        # per kind of motion (static / sliding / bouncing / falling): the fraction of objects right
        "motion_by_kind": {k: mean([float(m["correct"]) for m in objects
                                 if m["motion"].split()[0] == k and m["correct"] is not None])
                           for k in kinds},
        # sliding objects: median speed along the captioned direction, px/frame (seen >= 3 frames)
        "slide_speed_px_per_frame": float(np.median(speeds)) if speeds else None,
        "av_sync_within_one_frame": mean([a["within_one_frame"] for a in av]),
        "av_mean_abs_offset_frames": mean([a["mean_abs_offset_frames"] for a in av]),
    }


def _save_gif(frames: torch.Tensor, path: Path, fps: float, max_side: int = 96) -> None:
    from PIL import Image

    imgs = [Image.fromarray(f.numpy()) for f in frames]
    if max(imgs[0].size) > max_side:
        s = max_side / max(imgs[0].size)
        imgs = [im.resize((round(im.width * s), round(im.height * s))) for im in imgs]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)


def evaluate_pipeline(generate_fn: Callable[[str, float, int], Any], prompts: list[str], seconds: float,
                      out_dir: str | Path, vt: Any = None, reference: bool = True,
                      settings: dict | None = None, seed: int = 0) -> dict:
    """Generate every prompt with ``generate_fn(prompt, seconds, seed) -> GenerationOutput`` (prompt ``i``
    with seed ``seed + i``, so another ``seed`` draws an independent second sample of the same prompts), judge it,
    write ``results.json``, GIFs and ``report.html`` under ``out_dir``; return the summary.
    ``settings`` (the sampling options the generator used) is recorded in the summary as given."""
    out = Path(out_dir)
    (out / "gifs").mkdir(parents=True, exist_ok=True)
    results, ref_results, shown, gen_videos = [], [], [], []
    t0 = time.time()
    for i, prompt in enumerate(tqdm(prompts, desc="eval", unit="prompt")):
        g = generate_fn(prompt, seconds, seed + i)
        r = evaluate_clip(g.video, prompt, g.fps, g.audio, g.sample_rate)
        r["gif"] = f"gifs/gen_{i:03d}.gif"
        _save_gif(g.video, out / r["gif"], g.fps)
        if len(shown) < 4:
            shown.append(g.video)
        gen_videos.append(g.video[:16])
        results.append(r)
    summary = {"generated": summarize(results), "seconds": seconds, "seed": seed, "wall_s": round(time.time() - t0, 1)}
    if settings is not None:
        summary["settings"] = dict(settings)
    if reference:  # the same captions rendered by the synthetic world: what a perfect model would score
        for i in range(len(prompts)):
            c = render_caption(prompts[i], seconds, g.video.shape[2], g.video.shape[1], g.fps)
            if c is not None:
                ref_results.append(evaluate_clip(c.frames, c.caption, c.fps, c.audio, c.sample_rate))
        summary["reference_truth"] = summarize(ref_results)
    fd = frechet_vs_real(gen_videos)
    if fd is not None:
        summary["frechet"] = fd
    if vt is not None:
        summary["frame_quality"] = tokenizer_quality(vt, size=(g.video.shape[2], g.video.shape[1]))
    (out / "results.json").write_text(json.dumps({"summary": summary, "clips": results}, indent=1))
    from kinema.eval.report import frames_grid, write_html

    frames_grid(shown, out / "samples.png")
    write_html(out / "report.html", summary, results)
    return summary


def render_caption(caption: str, seconds: float, W: int, H: int, fps: float):
    """The synthetic world's own render of a held-out caption (found again from its seed), or None."""
    from kinema.data.synthetic import render

    seed = heldout_seed(caption)
    for s in [seed] if seed is not None else range(HELDOUT_SEED, HELDOUT_SEED + 10_000):
        sc = sample_scene(s)
        if sc.caption == caption:
            return render(sc, (W, H), fps, seconds)
    return None
