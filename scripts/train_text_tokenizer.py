"""Train the sentencepiece text tokenizer on captions and save it (default: the embedded asset).

    python scripts/train_text_tokenizer.py --manifest data/synth/manifest.jsonl --vocab-size 512
    python scripts/train_text_tokenizer.py --captions captions.txt --out runs/text_tokenizer
    python scripts/train_text_tokenizer.py --synthetic 5000 --template-captions 5000   # the embedded one

``--manifest`` reads JSONL files (or folders holding ``manifest.jsonl``) with a ``caption`` field;
``--captions`` reads one caption per line. ``--synthetic N`` adds the captions of the synthetic
world's scenes 0..N-1 (no rendering needed); ``--template-captions N`` adds N broader captions
(more colours, shapes, motions, spellings) so prompts outside the synthetic world still tokenise
into words rather than bytes.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from kinema.errors import KinemaError
from kinema.paths import default_component_dir
from kinema.tokenizers.text import TextTokenizer

SIZES = ["tiny", "small", "medium", "large", "big"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "grey", "gray",
           "cyan", "magenta", "brown", "dark blue"]
SHAPES = ["circle", "square", "triangle", "rectangle", "ball", "star", "diamond", "ring"]
MOTIONS = ["bouncing", "falling", "sliding left", "sliding right", "moving up", "moving down",
           "rolling", "passing behind", "bouncing off the walls", "falling under gravity", "resting",
           "standing still", "sliding up", "sliding down"]


def template_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        def obj() -> str:
            return f"a {rng.choice(SIZES)} {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
        cap = f"{obj()} {rng.choice(MOTIONS)}"
        if rng.random() < 0.4:
            cap += f" and {obj()} {rng.choice(MOTIONS)}"
        cap += f" on a {rng.choice(COLOURS)} background"
        out.append(cap)
    return out


def read_manifest(path: Path) -> list[str]:
    path = path / "manifest.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise KinemaError(f"manifest not found: {path}")
    caps = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise KinemaError(f"{path}:{i}: not JSON ({e})") from None
        if isinstance(rec, dict) and isinstance(rec.get("caption"), str):
            caps.append(rec["caption"])
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, action="append", default=[], help="JSONL with 'caption' (repeatable)")
    ap.add_argument("--captions", type=Path, action="append", default=[], help="text file, one caption a line")
    ap.add_argument("--synthetic", type=int, default=0, help="add the captions of N synthetic-world scenes")
    ap.add_argument("--template-captions", type=int, default=0, help="add N template captions")
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=default_component_dir("text_tokenizer"))
    args = ap.parse_args(argv)
    try:
        caps: list[str] = []
        for m in args.manifest:
            caps += read_manifest(m)
        for c in args.captions:
            if not c.is_file():
                raise KinemaError(f"captions file not found: {c}")
            caps += [line for line in c.read_text().splitlines() if line.strip()]
        if args.synthetic:
            from kinema.data.synthetic import sample_scene

            caps += [sample_scene(args.seed + i).caption for i in range(args.synthetic)]
        caps += template_captions(args.template_captions, args.seed)
        if not caps:
            raise KinemaError("no captions: give --manifest, --captions, --synthetic or --template-captions")
        tok = TextTokenizer.train(caps, vocab_size=args.vocab_size, model_type=args.model_type)
        tok.save_pretrained(args.out)
    except (KinemaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"captions": len(caps), "vocab_size": tok.vocab_size, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
