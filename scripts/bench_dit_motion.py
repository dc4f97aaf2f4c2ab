"""Where the DiT loses the caption's motion: from text alone, or also when the motion is shown.

    OMP_NUM_THREADS=1 python scripts/bench_dit_motion.py --prompts 48 --seconds 3 \
        --exclude data/synth_train/manifest.jsonl [--dit DIR] [--steps 32] [--guidance 2]

For each held-out caption (:func:`kinema.eval.run.heldout_prompts`) the synthetic world renders the
caption and the video tokenizer encodes the render. The DiT then makes the clip three ways, same
seed: from the caption alone (text-to-video); from the caption and the render's first latent frame
(the first frame: where the objects are, not where they go); and from the caption and the first two
latent frames (five frames: the motion is visible, so a model that knows the dynamics only has to
continue it). The detector judges frames 5 on of every clip (the frames no condition was given; the
first two latents decode to frames 0-4), next to the same frames of the tokenizer round trip of the
render (the ceiling).

If the DiT continues a shown slide but does not start one from text, the text-to-motion link is
what fails; if it stops a shown slide too, it has not learned the dynamics. JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinema.decode.dit_generator import DiTGenerator  # noqa: E402
from kinema.eval.ar_vs_dit import caption_renders, judge  # noqa: E402
from kinema.eval.run import heldout_prompts, manifest_captions  # noqa: E402
from kinema.pipeline_io import to_model, to_uint8  # noqa: E402
from kinema.tokenizers.text import TextTokenizer  # noqa: E402
from kinema.tokenizers.video import VideoTokenizer, pad_frames  # noqa: E402

KEYS = ("prompt_alignment", "color_alignment", "shape_accuracy", "motion_correct", "motion_by_kind",
        "slide_speed_px_per_frame", "persistence_frames")
GIVEN = {"text only": 0, "first latent given": 1, "first two latents given": 2}


@torch.no_grad()
def render_latents(vt: VideoTokenizer, frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> the tokenizer's quantised latents (1, C, t, h, w) of the frames."""
    return vt.codes_to_latents(vt.encode(pad_frames(to_model(frames))))


@torch.no_grad()
def decode_frames(vt: VideoTokenizer, latents: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Quantised latents (1, C, t, h, w) -> their first ``n_frames`` decoded frames, uint8 (n, H, W, 3)."""
    return to_uint8(vt.decode_latents(latents)[0, :, :n_frames])


@torch.no_grad()
def continue_render(gen: DiTGenerator, vt: VideoTokenizer, ids: list[int], latents: torch.Tensor, given: int,
                    n_frames: int, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """uint8 (n_frames, H, W, 3): the render's first ``given`` latents as they are, the DiT's after."""
    t, grid = latents.shape[2], tuple(latents.shape[-2:])
    cond = latents[:, :, :given] if given else None
    z = gen.generate_long([ids], t - given, grid, window=5, cond_latents=cond, guidance_scale=guidance, steps=steps,
                          generator=torch.Generator().manual_seed(seed))
    return decode_frames(vt, torch.cat([latents[:, :, :given], z], dim=2), n_frames)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=128, help="square frame side")
    ap.add_argument("--dit", default=None, help="DiT directory (default: embedded)")
    ap.add_argument("--steps", type=int, default=32, help="Euler steps per window")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--exclude", default=None, help="training manifest.jsonl whose captions are never used as prompts")
    ap.add_argument("--out", default="runs/bench_dit_motion")
    a = ap.parse_args(argv)
    if a.seconds * a.fps < 9:
        raise SystemExit("--seconds x --fps must give at least 9 frames (two latents to show, one to make)")
    if a.prompts < 1:
        raise SystemExit("--prompts must be at least 1")
    if a.dit is not None and not (Path(a.dit) / "config.json").is_file():
        raise SystemExit(f"no DiT at {a.dit} (expected a save_pretrained directory)")

    vt, tt = VideoTokenizer.from_pretrained(), TextTokenizer.from_pretrained()
    gen = DiTGenerator.from_pretrained(a.dit)
    captions = heldout_prompts(a.prompts, exclude=manifest_captions(a.exclude) if a.exclude else None)
    renders = caption_renders(captions, a.seconds, (a.size, a.size), a.fps)
    prompts = [p for _, p in renders]
    made: dict[str, list[torch.Tensor]] = {name: [] for name in GIVEN}
    roundtrip = []
    for i, (frames, caption) in enumerate(tqdm(renders, desc="DiT motion")):
        latents = render_latents(vt, frames)
        roundtrip.append(decode_frames(vt, latents, frames.shape[0]))
        for name, k in GIVEN.items():
            made[name].append(continue_render(gen, vt, tt.encode(caption), latents, k, frames.shape[0],
                                              a.steps, a.guidance, seed=i))
    # frames decoded from the most latents any condition is given (0-4 for two) are judged in none
    judged_from = 1 + vt.temporal_factor * (max(GIVEN.values()) - 1)
    res: dict = {"prompts": len(prompts), "seconds": a.seconds, "dit_steps": a.steps, "guidance": a.guidance}
    for name, clips in {"tokenizer round trip": roundtrip, **made}.items():
        scores = judge([c[judged_from:] for c in clips], prompts, a.fps)
        res[name] = {k: scores[k] for k in KEYS}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res, indent=2))
    rows = ["| | " + " | ".join(k for k in res if isinstance(res[k], dict)) + " |"]
    for key in ("prompt_alignment", "color_alignment", "shape_accuracy", "motion_correct", "slide_speed_px_per_frame",
                "persistence_frames"):
        vals = [res[n][key] for n in res if isinstance(res[n], dict)]
        rows.append(f"| {key} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    for kind in ("sliding", "falling", "bouncing", "static"):
        vals = [(res[n]["motion_by_kind"] or {}).get(kind) for n in res if isinstance(res[n], dict)]
        rows.append(f"| motion right, {kind} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals) + " |")
    print("\n".join(rows))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
