"""Compare two models' `kinema eval` runs on the same prompts: each metric for A and B, B - A, and a
paired bootstrap interval over prompts (kinema.eval.compare). JSON line last.

    python scripts/compare_evals.py --a runs/eval_ship runs/eval_ship_s1000 \
        --b runs/eval_grid runs/eval_grid_s1000 --labels shipped grid

Several directories on one side are runs of the same prompts with other seeds (`kinema eval --seed`),
pooled per prompt. An interval that excludes 0 is a difference the prompts' noise does not explain.
"""
from __future__ import annotations

import argparse
import json
import sys

from kinema.eval.compare import load_runs, paired_bootstrap


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", nargs="+", required=True, help="eval directories of model A (same prompts)")
    p.add_argument("--b", nargs="+", required=True, help="eval directories of model B (same prompts)")
    p.add_argument("--labels", nargs=2, default=("A", "B"))
    p.add_argument("--boot", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--level", type=float, default=0.9, help="interval coverage")
    args = p.parse_args(argv)
    try:
        res = paired_bootstrap(load_runs(args.a), load_runs(args.b), boot=args.boot, level=args.level)
    except (ValueError, FileNotFoundError) as e:
        print(f"compare_evals: {e}", file=sys.stderr)
        return 2
    la, lb = args.labels
    res["labels"] = [la, lb]
    pct = round(100 * args.level)
    print(f"{res['prompts']} prompts x {res['clips_per_prompt']} draws; {pct}% paired bootstrap over prompts")
    print(f"| metric | {la} | {lb} | {lb} - {la} [{pct}% interval] |")
    print("|---|---|---|---|")

    def f(x):
        return "–" if x is None else f"{x:.3f}"
    for m, r in res["metrics"].items():
        iv = "" if r["interval"] is None else f" [{r['interval'][0]:+.3f}, {r['interval'][1]:+.3f}]"
        d = "–" if r["diff"] is None else f"{r['diff']:+.3f}"
        print(f"| {m} | {f(r['a'])} | {f(r['b'])} | {d}{iv} |")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
