"""Cost and memory of long generation: 6 s vs 60 s with the same model, window by window.

    python scripts/bench_generate.py [--model DIR | --random] [--short 6] [--long 60] [--no-audio]

Each length runs in its own subprocess (so peak memory is that run's own): wall time, peak RSS and
the peak RSS growth over the pre-generation RSS (a 5 ms sampler thread reading /proc), peak GPU
memory on CUDA, LM tokens/s, compute seconds per second of video, and ``boundary_jump_ratio``
(mean frame-to-frame change across window boundaries over the change inside windows; ~1 means the
boundaries do not show). The baseline is the short run:
``cost_per_second_ratio_60_vs_6`` and ``peak_memory_ratio_60_vs_6`` (target <= 1.1 each: flat cost,
constant memory). Uses the embedded default model when it is there, else a tiny random one (said in
the JSON as "model"). Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _embedded_tokenizers_random_lm(preset: str, kbps: float, device: str):
    """The embedded tokenizers with a freshly initialised LM of ``preset``: the default model's
    cost before (or without) its trained LM."""
    import torch
    from kinema.lm.model import KinemaLM, LMConfig
    from kinema.lm.vocab import Vocab
    from kinema.pipeline import Pipeline
    from kinema.tokenizers import AudioCodec, TextTokenizer, VideoTokenizer

    torch.manual_seed(0)
    vt, ac, tt = VideoTokenizer.from_pretrained(), AudioCodec.from_pretrained(), TextTokenizer.from_pretrained()
    vocab = Vocab(tt.vocab_size, vt.codebook_size, ac.codebook_size, ac.quantizers_for_kbps(kbps))
    lm = KinemaLM(LMConfig.preset(preset, vocab_size=vocab.size, vocab=vocab.to_dict()))
    return Pipeline(vt.to(device), ac.to(device), tt, lm.to(device), vocab=vocab)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from kinema.paths import DEFAULT_MODEL
    from kinema.pipeline import Pipeline, random_pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model or (not args.random and (DEFAULT_MODEL / "lm" / "config.json").is_file()):
        pipe, name = Pipeline.from_pretrained(args.model, device=device), str(args.model or "embedded kinema-tiny")
    elif args.random_lm and (DEFAULT_MODEL / "video_tokenizer" / "config.json").is_file():
        pipe, name = _embedded_tokenizers_random_lm(args.random_lm, args.kbps, device), \
            f"embedded tokenizers + untrained {args.random_lm} LM ({args.kbps:g} kbps audio)"
    else:
        pipe, name = random_pipeline(seed=0), "tiny random (untrained)"
        pipe.lm.to(device), pipe.vt.to(device), pipe.ac.to(device)
    pipe("warm up", seconds=1.0, seed=0, with_audio=not args.no_audio)  # first-call costs out of the timing
    base, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    th.start()
    t0 = time.perf_counter()
    out = pipe("a red circle bouncing on a black background", seconds=args.worker, seed=0,
               with_audio=not args.no_audio, progress=False)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    tokens = sum(s["output_tokens"] for s in out.stats)
    v = out.video.float()
    diffs = (v[1:] - v[:-1]).abs().mean(dim=(1, 2, 3))  # (T-1,) mean |frame k+1 - frame k|
    at = [i - 1 for i in out.window_starts if i > 0]  # diff index across each window boundary
    inside = torch.ones_like(diffs, dtype=torch.bool)
    inside[at] = False
    jump = float(diffs[at].mean() / diffs[inside].mean().clamp_min(1e-6)) if at and inside.any() else None
    return {"model": name, "device": device, "seconds": args.worker, "frames": int(out.video.shape[0]),
            "size": list(pipe.config.size), "fps": out.fps, "windows": len([s for s in out.stats if s["task"] != "v2a"]),
            "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "compute_s_per_video_s": wall / args.worker,
            "peak_rss_mb": max(peak[0], base) / 2**20, "peak_rss_growth_mb": max(0, peak[0] - base) / 2**20,
            "max_cache_tokens": max(s["cache_tokens"] for s in out.stats),
            "boundary_jump_ratio": jump,  # frame change across window boundaries / within windows (1 = invisible)
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model directory (default: embedded if present)")
    p.add_argument("--random", action="store_true", help="use a tiny random model even if the default exists")
    p.add_argument("--short", type=float, default=6.0)
    p.add_argument("--long", type=float, default=60.0)
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--random-lm", default=None, help="no embedded LM: embedded tokenizers + an untrained LM of this preset")
    p.add_argument("--kbps", type=float, default=6.0, help="audio bitrate for --random-lm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return
    runs = {}
    for s in (args.short, args.long):
        cmd = [sys.executable, __file__, "--worker", str(s), "--threads", str(args.threads)]
        cmd += (["--model", args.model] if args.model else []) + (["--random"] if args.random else [])
        cmd += ["--no-audio"] if args.no_audio else []
        cmd += ["--random-lm", args.random_lm, "--kbps", str(args.kbps)] if args.random_lm else []
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"bench worker for {s} s failed:\n{r.stderr[-2000:]}")
        runs[s] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{s:g} s: {runs[s]['wall_s']:.1f} s wall, peak RSS {runs[s]['peak_rss_mb']:.0f} MB "
              f"(+{runs[s]['peak_rss_growth_mb']:.1f} MB), {runs[s]['tokens_per_s']:.0f} tok/s", file=sys.stderr)
    a, b = runs[args.short], runs[args.long]
    result = {
        "short_s": args.short, "long_s": args.long, "model": a["model"], "device": a["device"], "size": a["size"], "fps": a["fps"], "audio": not args.no_audio,
        "cost_per_second_ratio_60_vs_6": b["compute_s_per_video_s"] / a["compute_s_per_video_s"],
        "peak_memory_ratio_60_vs_6": b["peak_rss_mb"] / a["peak_rss_mb"],
        "peak_memory_growth_ratio_60_vs_6": (b["peak_rss_growth_mb"] / a["peak_rss_growth_mb"]
                                             if a["peak_rss_growth_mb"] > 0 else None),
        "tokens_per_s": b["tokens_per_s"], "compute_s_per_video_s": b["compute_s_per_video_s"],
        "boundary_jump_ratio": b["boundary_jump_ratio"],
        "short": a, "long": b,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
