"""Benchmark: DiT (diffusion) generation vs the AR pipeline on held-out synthetic-world prompts.

    OMP_NUM_THREADS=1 python scripts/bench_dit.py --prompts 8 --seconds 2 [--dit DIR] [--steps 8]

Both paths turn the same held-out captions (kinema.eval.run.heldout_prompts) into frames at the same
size/fps through the same video tokenizer, and are judged by the synthetic-world detector
(kinema.eval.metrics.evaluate_clip: prompt alignment, motion, persistence); the synthetic world's
own renders of the captions give the ceiling. Cost is wall ms per output frame. The AR side needs an
LM (the embedded default's, or --lm-pipeline DIR); without one it is reported as not measured.
Prints one JSON line last (``dit_speedup_vs_ar`` = AR ms/frame / DiT ms/frame).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.decode.dit_generator import DiTGenerator  # noqa: E402
from kinema.eval.metrics import evaluate_clip  # noqa: E402
from kinema.eval.run import _render_caption, heldout_prompts, summarize  # noqa: E402
from kinema.tokenizers.text import TextTokenizer  # noqa: E402
from kinema.tokenizers.video import VideoTokenizer  # noqa: E402


def dit_frames(gen: DiTGenerator, vt: VideoTokenizer, ids: list[int], n_frames: int, size: tuple[int, int],
               steps: int, cfg_scale: float, seed: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames for one caption: latents window by window, decoded once."""
    W, H = size
    t = 1 + -(-(n_frames - 1) // vt.temporal_factor)
    grid = (H // vt.spatial_factor, W // vt.spatial_factor)
    z = gen.generate_long([ids], t, grid, window=5, guidance_scale=cfg_scale, steps=steps,
                          generator=torch.Generator().manual_seed(seed))
    x = vt.decode_latents(z)[0, :, :n_frames]  # (3, T, H, W)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


def tokenizer_roundtrip(vt: VideoTokenizer, frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> the same frames encoded, quantised and decoded by the video tokenizer."""
    from kinema.tokenizers.video import pad_frames

    T = frames.shape[0]
    x = pad_frames(frames.permute(3, 0, 1, 2).float().unsqueeze(0) / 127.5 - 1)
    z = vt.encode_latents(x)
    y = vt.decode_latents(torch.where(z > 0, 1.0, -1.0))[0, :, :T]
    return ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


def judge(frames_list: list[torch.Tensor], prompts: list[str], fps: float) -> dict:
    return summarize([evaluate_clip(f, p, fps) for f, p in zip(frames_list, prompts)])


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
    prompts = heldout_prompts(a.prompts)
    n_frames = max(1, round(a.seconds * a.fps))
    size = tuple(a.size)
    vt = VideoTokenizer.from_pretrained(a.video_tokenizer)
    tt = TextTokenizer.from_pretrained()
    gen = DiTGenerator.from_pretrained(a.dit)
    res: dict = {"prompts": len(prompts), "seconds": a.seconds, "fps": a.fps, "size": list(size),
                 "dit_steps": a.steps, "dit_guidance": a.guidance,
                 "dit_params_m": round(sum(p.numel() for p in gen.parameters()) / 1e6, 3)}

    frames, t0 = [], time.perf_counter()
    for i, p in enumerate(tqdm(prompts, desc="DiT")):
        frames.append(dit_frames(gen, vt, tt.encode(p), n_frames, size, a.steps, a.guidance, i))
    dit_ms = 1000 * (time.perf_counter() - t0) / (len(prompts) * n_frames)
    d = judge(frames, prompts, a.fps)
    res.update({f"dit_{k}": v for k, v in d.items() if k != "clips"}, dit_ms_per_frame=round(dit_ms, 2))
    # the synthetic world's own renders: the ceiling the detector gives a perfect model
    refs = [_render_caption(p, a.seconds, size[0], size[1], a.fps) for p in prompts]
    refs = [(c.frames, p) for c, p in zip(refs, prompts) if c is not None]
    r = judge([f for f, _ in refs], [p for _, p in refs], a.fps)
    res.update({f"reference_{k}": v for k, v in r.items() if k in ("prompt_alignment", "motion_correct")})
    # the same renders through the tokenizer (encode, sign, decode): the ceiling for anything it decodes
    recs = [tokenizer_roundtrip(vt, f) for f, _ in refs]
    r = judge(recs, [p for _, p in refs], a.fps)
    res.update({f"tokenizer_roundtrip_{k}": v for k, v in r.items() if k in ("prompt_alignment", "motion_correct")})
    # text adherence the detector cannot see through the tokenizer: mean colour of each DiT clip vs its
    # own caption's round trip, and vs another caption's (shuffled); ratio < 1 means the text steers colour
    if len(recs) > 1:
        mc = [f.float().mean(dim=(0, 1, 2)) for f in frames[: len(recs)]]
        mr = [f.float().mean(dim=(0, 1, 2)) for f in recs]
        own = sum(float((g - t).abs().mean()) for g, t in zip(mc, mr)) / len(mr)
        other = sum(float((g - mr[(i + 1) % len(mr)]).abs().mean()) for i, g in enumerate(mc)) / len(mr)
        res.update(dit_color_err_own_caption=round(own, 2), dit_color_err_other_caption=round(other, 2),
                   dit_text_color_ratio=round(own / max(other, 1e-9), 3))

    try:
        import kinema

        pipe = kinema.Pipeline.from_pretrained(a.lm_pipeline)
    except Exception as e:  # noqa: BLE001 - the AR side is optional here
        res["ar"] = f"not measured: no AR pipeline ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    else:
        frames, t0 = [], time.perf_counter()
        for i, p in enumerate(tqdm(prompts, desc="AR")):
            out = pipe(p, seconds=a.seconds, fps=a.fps, size=size, seed=i, with_audio=False)
            frames.append(out.video)
        ar_ms = 1000 * (time.perf_counter() - t0) / (len(prompts) * n_frames)
        r = judge(frames, prompts, a.fps)
        res.update({f"ar_{k}": v for k, v in r.items() if k != "clips"}, ar_ms_per_frame=round(ar_ms, 2),
                   dit_speedup_vs_ar=round(ar_ms / dit_ms, 3))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
