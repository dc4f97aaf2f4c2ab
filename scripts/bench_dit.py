"""Benchmark: DiT (diffusion) generation vs the AR pipeline on held-out synthetic-world prompts.

    OMP_NUM_THREADS=1 python scripts/bench_dit.py --prompts 8 --seconds 2 [--dit DIR] [--steps 8]

The comparison itself is :func:`kinema.eval.ar_vs_dit.compare_ar_dit` (same captions, same
tokenizer, same detector; renders and tokenizer round trips as ceilings). Prints one JSON line last
(``dit_speedup_vs_ar`` = AR ms/frame / DiT ms/frame).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.eval.ar_vs_dit import compare_ar_dit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 128), help="width height")
    ap.add_argument("--dit", default=None, help="DiT directory (default: embedded)")
    ap.add_argument("--video-tokenizer", default=None)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--lm-pipeline", default=None, help="Pipeline directory for the AR side (default: embedded)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = compare_ar_dit(a.prompts, a.seconds, a.fps, tuple(a.size), a.dit, a.video_tokenizer, a.steps, a.guidance,
                         a.lm_pipeline)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
