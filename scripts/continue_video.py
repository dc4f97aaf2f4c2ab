"""Continue every video in a folder: ``python scripts/continue_video.py IN_DIR OUT_DIR --seconds S``.

Writes ``OUT_DIR/<name>.mp4`` (the clip followed by S generated seconds, with sound) for each video
in IN_DIR; outputs that already exist are skipped, so a stopped batch resumes. A file that cannot be
read is reported and the batch goes on; the exit status is 1 when any file failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

VIDEO_EXT = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("in_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds to add to each clip")
    p.add_argument("--prompt", default=None)
    p.add_argument("--model", default=None, help="model directory (default: the embedded kinema-tiny)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backward", action="store_true", help="extend before the start instead")
    args = p.parse_args(argv)
    if not args.in_dir.is_dir():
        print(f"continue_video: error: {args.in_dir} is not a directory", file=sys.stderr)
        return 2
    from kinema.errors import KinemaError
    from kinema.media import read_video
    from kinema.pipeline import Pipeline

    try:
        pipe = Pipeline.from_pretrained(args.model)
    except (KinemaError, ValueError) as e:
        print(f"continue_video: error: {e}", file=sys.stderr)
        return 2
    files = sorted(f for f in args.in_dir.iterdir() if f.suffix.lower() in VIDEO_EXT and f.is_file())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in tqdm(files, desc="videos", unit="video"):
        out_path = args.out_dir / f"{f.stem}.mp4"
        if out_path.exists():
            continue
        try:
            out = pipe(args.prompt, video=read_video(f), seconds=args.seconds, seed=args.seed, progress=True,
                       task="extend_back" if args.backward else "continue")
            out.save(out_path)
        except KeyboardInterrupt:
            print("continue_video: interrupted", file=sys.stderr)
            return 130
        except (KinemaError, ValueError) as e:
            failed += 1
            tqdm.write(f"{f.name}: error: {e}")
    print(f"{len(files) - failed}/{len(files)} videos continued into {args.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
