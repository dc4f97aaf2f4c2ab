"""Benchmark the diffusion decoder head against plain detokenisation, same tokens, same run.

    OMP_NUM_THREADS=1 python scripts/bench_diffusion.py --decoder runs/dd/final --clips 8

Held-out synthetic-world clips (seeds disjoint from training) are tokenised by the video tokenizer;
plain = ``vt.decode(codes)``, refined = ``DiffusionDecoder.refine(codes, plain)``. Reports PSNR, SSIM,
sharpness (high-frequency energy ratio to the original, 1 is ideal), temporal consistency (mean
absolute frame difference ratio to the original's, 1 is ideal) and refinement cost per frame.
AR vs DiT on the synthetic-world evaluation is not measured here yet. JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.decode.diffusion_decoder import DiffusionDecoder, synthetic_pairs  # noqa: E402
from kinema.decode.flow import mse_to_psnr  # noqa: E402
from kinema.tokenizers.video import VideoTokenizer  # noqa: E402


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004) over frames, 7x7 box window, images in [-1, 1] -> [0, 1]."""
    a, b = (a.transpose(1, 2).flatten(0, 1) + 1) / 2, (b.transpose(1, 2).flatten(0, 1) + 1) / 2  # (N, 3, H, W)
    k = 7
    mu_a, mu_b = F.avg_pool2d(a, k, 1), F.avg_pool2d(b, k, 1)
    va = F.avg_pool2d(a * a, k, 1) - mu_a**2
    vb = F.avg_pool2d(b * b, k, 1) - mu_b**2
    cov = F.avg_pool2d(a * b, k, 1) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def hf_energy(x: torch.Tensor) -> float:
    """Energy of the Laplacian (high frequencies) per pixel."""
    f = x.transpose(1, 2).flatten(0, 1)  # (N, 3, H, W)
    lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=f.dtype).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(f, lap, groups=3).pow(2).mean())


def frame_diff(x: torch.Tensor) -> float:
    return float((x[:, :, 1:] - x[:, :, :-1]).abs().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoder", default=None, help="DiffusionDecoder directory (default: embedded)")
    ap.add_argument("--video-tokenizer", default=None)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64))
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    vt = VideoTokenizer.from_pretrained(a.video_tokenizer)
    try:
        dd = DiffusionDecoder.from_pretrained(a.decoder)
    except Exception as e:  # noqa: BLE001 - report, do not crash the bench
        print(json.dumps({"error": f"no diffusion decoder: {e}"}))
        return 1
    codes, plain, x, prev = synthetic_pairs(vt, list(range(900000, 900000 + a.clips)), tuple(a.size), a.frames,
                                            dd.cfg.upsample)
    low = plain  # (N, 3, T, H, W): what the tokenizer gives, the head's condition
    if dd.cfg.upsample != 1:
        plain = F.interpolate(low.flatten(1, 2), scale_factor=dd.cfg.upsample, mode="bilinear").view_as(x)
    t0 = time.perf_counter()
    refined = torch.cat([dd.refine(codes[i:i + 1], low[i:i + 1], steps=a.steps,
                                   generator=torch.Generator().manual_seed(i)) for i in range(x.shape[0])])
    dt = time.perf_counter() - t0
    n_frames = x.shape[0] * x.shape[2]
    p_plain, p_ref = mse_to_psnr(F.mse_loss(plain, x)), mse_to_psnr(F.mse_loss(refined, x))
    fd = frame_diff(x)
    res = {
        "clips": x.shape[0], "frames_per_clip": x.shape[2], "size": list(x.shape[-2:]), "steps": a.steps,
        "plain_psnr_db": round(p_plain, 3), "refined_psnr_db": round(p_ref, 3),
        "refine_psnr_gain_db": round(p_ref - p_plain, 3),
        "plain_ssim": round(ssim(plain, x), 4), "refined_ssim": round(ssim(refined, x), 4),
        "plain_sharpness_ratio": round(hf_energy(plain) / hf_energy(x), 4),
        "refined_sharpness_ratio": round(hf_energy(refined) / hf_energy(x), 4),
        "plain_temporal_diff_ratio": round(frame_diff(plain) / fd, 4),
        "refined_temporal_diff_ratio": round(frame_diff(refined) / fd, 4),
        "refine_ms_per_frame": round(1000 * dt / n_frames, 2),
        "decoder_params": sum(p.numel() for p in dd.parameters()),
        "ar_vs_dit": "not measured (evaluation of AR vs DiT not wired into this bench yet)",
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
