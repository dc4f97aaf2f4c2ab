"""Train the contrastive caption <-> first-frame scorer used for best-of-K reranking.

    python scripts/train_caption_scorer.py --shards runs/tokens/train --steps 2000 --out runs/caption_scorer

Data: every latent frame (codes (h, w); ``--latents first``: only the single-frame first one) and the
caption of every clip in the LM's training token shards; the last ``--val`` clips are held out.
Loss: CLIP's symmetric InfoNCE over the batch
(Radford et al., 2021), plus one *hard negative* per frame: its own caption with one object's colour
or shape swapped for another (``perturb``), so the scorer must read every attribute, not just tell
captions apart. AdamW, cosine LR. Prints held-out accuracy: retrieval among 64 captions, and how
often the true caption beats its perturbed twin. Augmentation: each batch's code grids are shifted
(rolled) by up to ``--roll`` cells, the scenes' objects being anywhere on a uniform background.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.data.synthetic import COLORS, SHAPES  # noqa: E402
from kinema.decode.caption_scorer import CaptionScorer, ScorerConfig  # noqa: E402
from kinema.lm.shards import TokenShards  # noqa: E402
from kinema.paths import DEFAULT_MODEL  # noqa: E402
from kinema.tokenizers.text import TextTokenizer  # noqa: E402
from kinema.training import autocast, cosine_lr  # noqa: E402

_OBJ = re.compile(rf"\b(an?) ((?:small|large) )?({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\b")


def drop_object(caption: str, rng: random.Random) -> str | None:
    """The caption without one of its objects (None for a one-object caption). Captions read
    "<phrase>, <phrase> and <phrase> on a <background> background" (kinema.data.synthetic.Scene)."""
    body, sep, bg = caption.rpartition(" on a ")
    parts = body.replace(" and ", ", ").split(", ") if sep else []
    if len(parts) < 2:
        return None
    parts.pop(rng.randrange(len(parts)))
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{body} on a {bg}"


def perturb(caption: str, rng: random.Random) -> str:
    """A near miss of the caption: one object's colour or shape replaced by another (article fixed),
    or, one time in five for captions of several objects, one object left out (so a frame showing
    more than its caption says ranks lower)."""
    objs = list(_OBJ.finditer(caption))
    if not objs:
        raise ValueError(f"caption names no object: {caption!r}")
    if rng.random() < 0.2:
        dropped = drop_object(caption, rng)
        if dropped is not None:
            return dropped
    m = rng.choice(objs)
    art, size, color, shape = m.group(1), m.group(2) or "", m.group(3), m.group(4)
    if rng.random() < 0.5:
        color = rng.choice([c for c in COLORS if c != color])
    else:
        shape = rng.choice([s for s in SHAPES if s != shape])
    art = "an" if (size or color)[0] in "aeiou" else "a"
    return caption[:m.start()] + f"{art} {size}{color} {shape}" + caption[m.end():]


def load_pairs(root: str, latents: str = "all") -> tuple[torch.Tensor, list[str], list[int], int]:
    """Codes (N, h, w) of every latent frame (``latents="all"``) or only the first of each clip, their
    captions, the clip each came from, and the video codebook size of a shard directory."""
    shards = TokenShards(root)
    codes, captions, clip = [], [], []
    for i in tqdm(range(len(shards)), desc="read", unit="clip"):
        r = shards[i]
        video = torch.as_tensor(r.arrays["video"], dtype=torch.long)  # (t, h, w)
        for frame in video if latents == "all" else video[:1]:
            codes.append(frame)
            captions.append(r.caption)
            clip.append(i)
    return torch.stack(codes), captions, clip, int(shards.meta["video_codebook_size"])


@torch.no_grad()
def evaluate(model: CaptionScorer, codes: torch.Tensor, captions: list[str], texts: list[list[int]],
             twins: list[list[int]]) -> dict:
    """Held-out accuracy: in blocks of 64 frames, how often a frame's best caption is its own (a
    caption shared by several frames of a clip counts for each), and how often its caption beats
    the perturbed twin."""
    model.eval()
    f = model.encode_codes(codes)
    t, tw = model.encode_text(texts), model.encode_text(twins)
    hits = []
    order = torch.randperm(len(f), generator=torch.Generator().manual_seed(0))  # mixes clips into the blocks
    for s in range(0, len(f) - 63, 64):
        block = order[s:s + 64].tolist()
        best = (f[block] @ t[block].T).argmax(1).tolist()
        hits.append(torch.tensor([float(captions[block[j]] == captions[block[i]]) for i, j in enumerate(best)]))
    model.train()
    return {"retrieval_top1_of_64": round(float(torch.cat(hits).mean()), 3) if hits else None,
            "beats_perturbed_twin": round(float(((f * t).sum(1) > (f * tw).sum(1)).float().mean()), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="runs/tokens/train", help="LM training token shards")
    ap.add_argument("--text-tokenizer", default=str(DEFAULT_MODEL / "text_tokenizer"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val", type=int, default=512, help="clips held out for the printed accuracy")
    ap.add_argument("--roll", type=int, default=3, help="augmentation: shift the code grid by up to this many cells")
    ap.add_argument("--latents", choices=("all", "first"), default="all",
                    help="train on every latent frame of a clip, or on its first (single-frame) latent only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/caption_scorer")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 2 or args.val < 0:
        print("error: --steps >= 1, --batch >= 2, --val >= 0", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tt = TextTokenizer.from_pretrained(args.text_tokenizer)
    codes, captions, clip, codebook = load_pairs(args.shards, args.latents)
    n_clips = clip[-1] + 1 if clip else 0
    if n_clips <= args.val + args.batch:
        print(f"error: {n_clips} clips are too few for --val {args.val} and --batch {args.batch}", file=sys.stderr)
        return 2
    texts = tt.encode_batch(captions)
    n_tr = clip.index(n_clips - args.val) if args.val else len(codes)  # rows of the last --val clips are held out
    clip_t = torch.tensor(clip)
    val_twins = tt.encode_batch([perturb(c, rng) for c in captions[n_tr:]])
    cfg = ScorerConfig(code_bits=(codebook - 1).bit_length(), text_vocab=tt.cfg.vocab_size)
    model = CaptionScorer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(args.seed)
    log = []
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(step, args.lr, 50, args.steps)
        idx = torch.randperm(n_tr, generator=g)[: args.batch]
        batch_texts = [texts[i] for i in idx.tolist()]
        twins = tt.encode_batch([perturb(captions[i], rng) for i in idx.tolist()])
        shift = torch.randint(-args.roll, args.roll + 1, (2,), generator=g).tolist()
        with autocast("cpu"):
            f = model.encode_codes(codes[idx].roll(shift, dims=(1, 2)))
            t = model.encode_text(batch_texts + twins)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * f.float() @ t.float().T  # (B, 2B): own caption, other captions, perturbed twins
        target = torch.arange(len(idx))
        same = clip_t[idx].view(-1, 1) == clip_t[idx].view(1, -1)  # two frames of one clip share a caption:
        logits[:, : len(idx)] = logits[:, : len(idx)].masked_fill(same & (target.view(-1, 1) != target), -1e4)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(idx)].T, target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if args.val and ((step + 1) % 500 == 0 or step + 1 == args.steps):
            log.append({"step": step + 1, "loss": round(loss.item(), 4),
                        **evaluate(model, codes[n_tr:], captions[n_tr:], texts[n_tr:], val_twins)})
            tqdm.write(json.dumps(log[-1]))
    model.eval().save_pretrained(args.out)
    print(json.dumps({"out": args.out, "clips": n_clips, "frames": len(codes), "latents": args.latents,
                      "steps": args.steps, "heldout": log[-1] if log else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
