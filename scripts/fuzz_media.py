"""Fuzz kinema.media.read_video with random and mutated files.

Every case must end in a Clip or a kinema.errors.MediaError/ResourceError: any other exception
is a finding; an interpreter crash or hang is caught by running cases in a child process with a
time limit. Prints one JSON line last.

    python scripts/fuzz_media.py --cases 200 --seed 0
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import traceback
from pathlib import Path

import torch


def _seed_files(work: Path) -> list[bytes]:
    from kinema.media import Clip, write_video

    frames = (torch.rand(8, 32, 48, 3) * 255).to(torch.uint8)
    write_video(work / "seed.mp4", Clip(frames, 8.0, torch.rand(1, 16000) * 0.2 - 0.1, 16000))
    return [(work / "seed.mp4").read_bytes()]


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "truncate", "random", "splice", "zero"])
    b = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 50)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    elif kind == "random":
        b = bytearray(rng.randbytes(rng.randint(0, 4096)))
    elif kind == "splice":
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b = b[:i] + b[j:]
    else:
        i = rng.randrange(len(b))
        b[i : i + rng.randint(1, 2000)] = bytes(min(len(b) - i, 2000))
    return bytes(b)


def _child(path: str, q) -> None:
    from kinema.errors import MediaError, ResourceError
    from kinema.media import read_video

    try:
        read_video(path, fps=8, size=(32, 32), recover=True)
        q.put("ok")
    except (MediaError, ResourceError):
        q.put("error")
    except Exception:
        q.put("finding: " + traceback.format_exc(limit=3))


def run(cases: int, seed: int, timeout: float = 20.0) -> dict:
    rng = random.Random(seed)
    ctx = mp.get_context("fork")
    results = {"ok": 0, "error": 0, "findings": [], "crashes": 0, "hangs": 0}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = _seed_files(work)
        for i in range(cases):
            path = work / f"case{i}.mp4"
            path.write_bytes(mutate(rng.choice(seeds), rng))
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(str(path), q))
            p.start()
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join()
                results["hangs"] += 1
                continue
            if p.exitcode != 0:
                results["crashes"] += 1
                continue
            out = q.get()
            if out.startswith("finding"):
                results["findings"].append(out)
            else:
                results[out] += 1
            path.unlink()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    r = run(args.cases, args.seed)
    for f in r["findings"]:
        print(f, file=sys.stderr)
    print(json.dumps({"fuzz_cases": args.cases, "ok": r["ok"], "clear_errors": r["error"],
                      "findings": len(r["findings"]), "crashes": r["crashes"], "hangs": r["hangs"]}))
    return 0 if not (r["findings"] or r["crashes"] or r["hangs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
