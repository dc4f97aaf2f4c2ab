"""Train the small 3D-conv video classifier whose features the evaluation's Fréchet distance uses.

    python scripts/train_video_classifier.py --clips 600 --steps 300 --out kinema/assets/eval_classifier

Data: ``--clips`` freshly rendered synthetic-world clips (seeds 7_000_000 + i, 64x64, 16 frames at
8 fps); labels (``kinema.eval.frechet.labels_of``): which colours, shapes and motions are present,
the background and the object count; loss: binary cross-entropy for the presence heads plus
cross-entropy for the others; AdamW, cosine LR, bf16 autocast. Prints held-out accuracy per head
(last 10% of clips; a presence head counts a clip right only when its whole set is right).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.data.synthetic import generate  # noqa: E402
from kinema.eval.frechet import (HEADS, ClassifierConfig, VideoClassifier, classifier_accuracy,  # noqa: E402
                                  classifier_loss, clip_input, labels_of)
from kinema.training import autocast, cosine_lr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default="kinema/assets/eval_classifier")
    args = ap.parse_args(argv)
    if args.clips < 20 or args.steps < 1 or args.batch < 1:
        print("error: --clips >= 20, --steps and --batch positive", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    cfg = ClassifierConfig()
    # one copy of the clips, bf16 (autocast feeds the first conv bf16 anyway): 1.5 GB per 4000 clips
    X = torch.empty(args.clips, 3, cfg.frames, cfg.size, cfg.size, dtype=torch.bfloat16)
    ys = {k: [] for k in HEADS}
    for i in tqdm(range(args.clips), desc="render", unit="clip"):
        c = generate(7_000_000 + i, size=(cfg.size, cfg.size), seconds=cfg.frames / 8.0)
        X[i] = clip_input(c.frames, cfg)
        for k, v in labels_of(c.scene).items():
            ys[k].append(v)
    Y = {k: torch.stack(v) for k, v in ys.items()}
    n_val = max(1, len(X) // 10)
    tr = torch.arange(len(X) - n_val)
    model = VideoClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(step, args.lr, 10, args.steps)
        idx = tr[torch.randint(len(tr), (args.batch,), generator=g)]
        with autocast("cpu"):
            out = model(X[idx].float())
        loss = classifier_loss(out, {k: y[idx] for k, y in Y.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        out = model(X[-n_val:].float())
    acc = classifier_accuracy(out, {k: y[-n_val:] for k, y in Y.items()})
    model.save_pretrained(args.out)
    print(json.dumps({"out": args.out, "heldout_accuracy": acc, "clips": args.clips, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
