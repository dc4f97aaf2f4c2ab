"""Does a DiT continue the motion it is shown, or copy the last latent it was given? Measured on latents.

    python scripts/bench_dit_continue.py runs/dit_a/final runs/dit_b/final [--cache runs/dit_heldout96/latents.safetensors]

On unseen synthetic clips (``scripts/eval_dit_loss.py``'s cache: seeds from 300000, held-out captions
skipped) whose objects all slide, each DiT is given the clip's first ``--given`` latent frames and its
caption and samples the rest. Each sampled latent frame is compared, bit by bit (the sign the tokenizer's
LFQ keeps), with the true latent frame and with a copy of the last given one. A DiT that moves things is
closer to the truth; one that stops them is closer to the copy. The copy's own agreement with the truth
is the floor to beat. Clips whose objects all stand still are the check that copying is right there.
No decoding and no detector, so a model takes seconds (``scripts/bench_dit_motion.py`` judges pixels).
JSON line last.
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

from kinema.data.synthetic import sample_scene  # noqa: E402
from kinema.decode.dit_generator import DiTGenerator, caption_lists  # noqa: E402


def clip_groups(seeds: list[int]) -> dict[str, list[int]]:
    """Indices of the clips whose objects all slide, and of those whose objects all stand still."""
    groups: dict[str, list[int]] = {"sliding": [], "static": []}
    for i, s in enumerate(seeds):
        motions = {o.motion for o in sample_scene(int(s)).objects}
        if all(m.startswith("sliding") for m in motions):
            groups["sliding"].append(i)
        elif motions == {"static"}:
            groups["static"].append(i)
    return groups


def agreement(sampled: torch.Tensor, truth: torch.Tensor, given: int) -> dict[str, list[float]]:
    """sampled (B, C, n, h, w) signs after ``given`` latents of truth (B, C, given + n, h, w): per sampled
    latent frame, the fraction of bits equal to the truth's, to a copy of the last given latent's, and the
    copy's own agreement with the truth."""
    bits = torch.where(truth > 0, 1.0, -1.0)
    last = bits[:, :, given - 1]
    n = sampled.shape[2]
    rows: dict[str, list[float]] = {"to_truth": [], "to_copy": [], "copy_to_truth": []}
    for j in range(n):
        true_j = bits[:, :, given + j]
        rows["to_truth"].append(float((sampled[:, :, j] == true_j).float().mean()))
        rows["to_copy"].append(float((sampled[:, :, j] == last).float().mean()))
        rows["copy_to_truth"].append(float((last == true_j).float().mean()))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="DiT directories (save_pretrained)")
    p.add_argument("--clips", type=int, default=96, help="unseen clips rendered (those that slide or stand are used)")
    p.add_argument("--first-seed", type=int, default=300000)
    p.add_argument("--cache", default=None, help="latent cache (default: eval_dit_loss.py's)")
    p.add_argument("--given", type=int, default=2, help="latent frames given (the rest are sampled)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    missing = [m for m in args.models if not (Path(m) / "config.json").is_file()]
    if missing:
        print(f"bench_dit_continue: error: no DiT at {', '.join(missing)} (expected a save_pretrained directory)",
              file=sys.stderr)
        return 2
    if args.clips < 1 or args.given < 1:
        print("bench_dit_continue: error: --clips and --given must be positive", file=sys.stderr)
        return 2
    cache = Path(args.cache or f"runs/dit_unseen_{args.first_seed}_{args.clips}.safetensors")
    cache.parent.mkdir(parents=True, exist_ok=True)
    data = build_latents(DiTDataConfig(clips=args.clips, first_seed=args.first_seed, size=(128, 128)), cache)
    z, text = data["latents"], data["text"]
    if not 1 <= args.given < z.shape[2]:
        print(f"bench_dit_continue: error: --given must be below the clips' {z.shape[2]} latent frames",
              file=sys.stderr)
        return 2
    groups = clip_groups(data["seeds"].tolist())
    out: dict = {"clips": {k: len(v) for k, v in groups.items()}, "given": args.given, "models": {}}
    for m in args.models:
        model = DiTGenerator.from_pretrained(m).float()
        res = {}
        for name, idx in groups.items():
            if not idx:
                continue
            zz = z[idx]
            with torch.no_grad():
                sampled = model.generate(caption_lists(text[idx]), z.shape[2] - args.given, tuple(z.shape[-2:]),
                                         guidance_scale=args.guidance, steps=args.steps,
                                         generator=torch.Generator().manual_seed(args.seed),
                                         cond_latents=zz[:, :, : args.given])
            res[name] = agreement(sampled, zz, args.given)
            r = res[name]
            print(f"{m} {name} ({len(idx)} clips): sampled vs truth "
                  f"{' '.join(f'{v:.3f}' for v in r['to_truth'])} | vs copy {' '.join(f'{v:.3f}' for v in r['to_copy'])}"
                  f" | copy vs truth {' '.join(f'{v:.3f}' for v in r['copy_to_truth'])}")
        out["models"][m] = res
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
