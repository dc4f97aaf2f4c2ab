"""Predictability of the video codes in token shards (kinema.eval.token_stats), one JSON line each.

    python scripts/token_stats.py runs/tokens/eval runs/tokens_local/eval [--limit 16]
"""
from __future__ import annotations

import argparse
import json
import sys

from kinema.eval.token_stats import video_token_stats_from_shards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", nargs="+", help="token shard directories (scripts/extract_tokens.py --out)")
    ap.add_argument("--limit", type=int, default=None, help="first N samples of each (default: all)")
    args = ap.parse_args(argv)
    for root in args.shards:
        try:
            print(json.dumps(video_token_stats_from_shards(root, args.limit)))
        except ValueError as e:  # not a shard directory, torn shards, no video codes
            print(f"token_stats: {root}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
