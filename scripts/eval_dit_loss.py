"""Flow loss of DiT generators on synthetic clips none of them trained on, under fixed noise.

    python scripts/eval_dit_loss.py runs/dit_a/final runs/dit_b/final [--clips 96 --first-seed 300000]

Renders ``--clips`` synthetic clips from ``--first-seed`` on (held-out evaluation captions skipped, as
in training), encodes them once into ``--cache``, and prints each model's mean rectified-flow loss on
them with the same noise, times and caption drops (``DiTGenerator.fixed_noise_loss``), so the numbers compare
across checkpoints: whether longer training still generalises, which the noisy train loss cannot say.
``--train-cache`` adds the loss on a training run's own first clips, for the generalisation gap.
Clips from seeds a run trained on are not unseen; training runs use seeds from 100000. JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_dit import DiTDataConfig, build_latents  # noqa: E402

from kinema.checkpoint import load_tensors  # noqa: E402
from kinema.decode.dit_generator import DiTGenerator  # noqa: E402
from kinema.training import autocast  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="DiT directories (save_pretrained)")
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--first-seed", type=int, default=300000)
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("W", "H"))
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--cache", default=None, help="latent cache (default: runs/dit_unseen_<seed>_<clips>.safetensors)")
    p.add_argument("--train-cache", default=None, help="a training run's latents.safetensors: also score its first --clips")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    if args.clips < 1 or args.batch < 1:
        print("eval_dit_loss: error: --clips and --batch must be positive", file=sys.stderr)
        return 2
    missing = [m for m in args.models if not (Path(m) / "config.json").is_file()]
    if missing:
        print(f"eval_dit_loss: error: no DiT at {', '.join(missing)} (expected a save_pretrained directory)",
              file=sys.stderr)
        return 2
    cache = Path(args.cache or f"runs/dit_unseen_{args.first_seed}_{args.clips}.safetensors")
    cache.parent.mkdir(parents=True, exist_ok=True)
    sets = {"unseen": build_latents(DiTDataConfig(clips=args.clips, first_seed=args.first_seed,
                                                  size=tuple(args.size), frames=args.frames, fps=args.fps), cache)}
    if args.train_cache:
        d = load_tensors(args.train_cache)
        sets["train"] = {"latents": d["latents"][: args.clips], "text": d["text"][: args.clips]}
    out = {}
    for m in args.models:
        model = DiTGenerator.from_pretrained(m).float()
        with autocast("cpu", enabled=True):  # bf16, as in training (train.bf16)
            out[m] = {name: model.fixed_noise_loss(s["latents"], s["text"], args.batch) for name, s in sets.items()}
        print(m, "  ".join(f"{k} {v:.4f}" for k, v in out[m].items()), flush=True)
    print(json.dumps({"clips": args.clips, "first_seed": args.first_seed, "loss": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
