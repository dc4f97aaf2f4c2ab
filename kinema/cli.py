"""The `kinema` command line: one subcommand per job, each a thin layer over the library.

Errors a user can cause (missing file, corrupt media, bad option) print one line and exit 2;
Ctrl-C exits 130. Library imports happen inside each command so `kinema --help` is instant.

Each subcommand is a pair: ``_add_<name>(sub)`` declares its arguments, ``_run_<name>(args)`` does
the work by calling the library.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from kinema.errors import KinemaError


def _size(text: str) -> tuple[int, int]:
    """'128x96' -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (e.g. 128x128), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


# ----------------------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print what kinema.media.read_video sees in a file")
    p.add_argument("files", nargs="+", help="media files")


def _run_info(args) -> int:
    from kinema.media import describe

    failed = 0
    for path in args.files:
        try:
            print(describe(path))
        except KinemaError as e:
            print(f"{path}: error: {e}")
            failed += 1
    return 1 if failed else 0


# ----------------------------------------------------------------------------- synth
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic-world clips (mp4 with sound) and manifest.jsonl")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--size", type=_size, default=(128, 128), help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sample-rate", type=int, default=16000)


def _run_synth(args) -> int:
    from kinema.data.synthetic import write_dataset

    if args.clips <= 0 or args.seconds <= 0 or args.fps <= 0:
        raise ValueError("--clips, --seconds and --fps must be positive")
    write_dataset(
        args.out, clips=args.clips, seconds=args.seconds, size=args.size, fps=args.fps,
        seed=args.seed, workers=args.workers, sample_rate=args.sample_rate,
    )
    return 0


# ----------------------------------------------------------------------------- registry
COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "info": (_add_info, _run_info),
    "synth": (_add_synth, _run_synth),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinema", description="kinema: autoregressive video+audio generation")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("kinema: interrupted", file=sys.stderr)
        return 130
    except (KinemaError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
