"""Compare training runs step by step: one metric of several runs' metrics.jsonl side by side.

    python scripts/compare_runs.py runs/ab_rope_shared runs/ab_rope_grid \\
        --metrics eval_continue_loss eval_t2v_loss --out docs/rope_ab.png

For every metric, prints each run's value at every step that all runs logged it (an A/B run with
the same seed and schedule is paired step by step), draws one panel per metric with a line per run,
and ends with a JSON line: ``{metric: {run: {step: value}}}`` over the shared steps, plus
``last_shared_step``. A run directory is named by its last path part unless ``--labels`` says
otherwise. Runs written by ``scripts/train_lm.py``, ``train_dit.py`` and the other trainers all log
``metrics.jsonl`` with a ``step`` field.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["read_metric", "shared_steps", "main"]


def read_metric(run: str | Path, metric: str) -> dict[int, float]:
    """step -> value of ``metric`` in ``run``/metrics.jsonl (the last value wins when a resumed run
    logged a step twice). Raises FileNotFoundError naming the file when the run has none."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run} a training run directory?)")
    out: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a killed run
            continue
        if metric in row and "step" in row and row[metric] is not None:
            out[int(row["step"])] = float(row[metric])
    return out


def shared_steps(series: list[dict[int, float]]) -> list[int]:
    """The steps every series has, sorted."""
    steps = set(series[0]) if series else set()
    for s in series[1:]:
        steps &= set(s)
    return sorted(steps)


def _plot(table: dict[str, dict[str, dict[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.2), squeeze=False)
    for ax, (metric, runs) in zip(axes[0], table.items()):
        for label, values in runs.items():
            steps = sorted(values)
            ax.plot(steps, [values[s] for s in steps], marker=".", label=label)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories with metrics.jsonl")
    p.add_argument("--metrics", nargs="+", default=["eval_loss"], help="metric names logged in metrics.jsonl")
    p.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the directory name)")
    p.add_argument("--out", default=None, help="write the curves as an image here (png)")
    args = p.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        print(f"compare_runs: {len(args.runs)} runs but {len(labels)} labels", file=sys.stderr)
        return 2
    try:
        full = {m: {lab: read_metric(r, m) for lab, r in zip(labels, args.runs)} for m in args.metrics}
    except FileNotFoundError as e:
        print(f"compare_runs: {e}", file=sys.stderr)
        return 2
    result: dict = {}
    last = None
    for metric, runs in full.items():
        steps = shared_steps(list(runs.values()))
        result[metric] = {lab: {s: v[s] for s in steps} for lab, v in runs.items()}
        if not steps:
            print(f"{metric}: no step logged by every run")
            continue
        last = steps[-1] if last is None else min(last, steps[-1])
        print(f"{metric}\n  step  " + "  ".join(f"{lab:>14}" for lab in labels))
        for s in steps:
            print(f"  {s:>5} " + "  ".join(f"{runs[lab][s]:>14.4f}" for lab in labels))
    if args.out:
        _plot(full, Path(args.out))
        print(f"wrote {args.out}")
    print(json.dumps({**result, "last_shared_step": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
