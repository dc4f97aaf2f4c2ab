"""Benchmark the diffusion decoder head against plain detokenisation, same tokens, same run.

    OMP_NUM_THREADS=1 python scripts/bench_diffusion.py --decoder runs/dd/final --clips 8

Held-out synthetic-world clips (seeds disjoint from training) are tokenised by the video tokenizer;
plain = ``vt.decode(codes)``, refined = ``DiffusionDecoder.refine(codes, plain)``. Reports PSNR, SSIM,
sharpness (high-frequency energy ratio to the original, 1 is ideal), temporal consistency (mean
absolute frame difference ratio to the original's, 1 is ideal) and refinement cost per frame, for
each number of sampler steps in ``--steps`` (1 step reads out the head's posterior mean; more steps
sample detail). Across continuation windows: two consecutive windows are tokenised separately, the
second refined with the first's last refined frame as its anchor, and the jump at the seam is
compared to the original's (``*_seam_diff_ratio``, 1 is ideal). With ``--ar-vs-dit-prompts N`` the
AR vs DiT comparison of :func:`kinema.eval.ar_vs_dit.compare_ar_dit` is added (``ar_vs_dit_*``).
JSON line last.
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
from kinema.decode.diffusion_decoder import DiffusionDecoder  # noqa: E402
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


def render(seeds: list[int], size: tuple[int, int], frames: int) -> torch.Tensor:
    """(N, 3, frames, H, W) synthetic-world clips in [-1, 1] (held-out seeds)."""
    from kinema.data.synthetic import generate

    clips = [generate(s, size=size, fps=8.0, seconds=frames / 8.0).frames[:frames] for s in seeds]
    return torch.stack([c.permute(3, 0, 1, 2).float() / 127.5 - 1 for c in clips])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="model directory whose components are the defaults below (default: the embedded kinema-tiny)")
    ap.add_argument("--decoder", default=None, help="DiffusionDecoder directory (default: the model's)")
    ap.add_argument("--video-tokenizer", default=None, help="default: the model's")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64))
    ap.add_argument("--frames", type=int, default=5, help="frames per window (1 + 4k)")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--ar-vs-dit-prompts", type=int, default=0, help="also compare AR vs DiT on N held-out prompts")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.model:
        a.decoder = a.decoder or str(Path(a.model) / "diffusion_decoder")
        a.video_tokenizer = a.video_tokenizer or str(Path(a.model) / "video_tokenizer")
    torch.manual_seed(0)
    vt = VideoTokenizer.from_pretrained(a.video_tokenizer)
    try:
        dd = DiffusionDecoder.from_pretrained(a.decoder)
    except Exception as e:  # noqa: BLE001 - report, do not crash the bench
        print(json.dumps({"error": f"no diffusion decoder: {e}"}))
        return 1
    T, u = a.frames, dd.cfg.upsample
    if (T - 1) % vt.temporal_factor:
        raise SystemExit(f"--frames must be 1 + {vt.temporal_factor}k, got {T}")
    x2 = render(list(range(900000, 900000 + a.clips)), (a.size[0] * u, a.size[1] * u), 2 * T)
    # two consecutive windows of T frames, each tokenised on its own as continuation windows are
    x, xb = x2[:, :, :T], x2[:, :, T:]
    low_a = F.avg_pool3d(x, (1, u, u)) if u != 1 else x
    low_b = F.avg_pool3d(xb, (1, u, u)) if u != 1 else xb
    codes_a, codes_b = vt.encode(low_a), vt.encode(low_b)
    plain_a, plain_b = vt.decode(codes_a), vt.decode(codes_b)

    def up(v: torch.Tensor) -> torch.Tensor:
        return v if u == 1 else F.interpolate(v.flatten(1, 2), scale_factor=u, mode="bilinear").view(
            v.shape[0], 3, v.shape[2], v.shape[3] * u, v.shape[4] * u)

    def seam(a_: torch.Tensor, b_: torch.Tensor) -> float:
        return float((b_[:, :, 0] - a_[:, :, -1]).abs().mean())

    plain = up(plain_a)
    fd, seam_true = frame_diff(x), seam(x, xb)
    p_plain = mse_to_psnr(F.mse_loss(plain, x))
    n_frames = x.shape[0] * T
    res = {
        "clips": x.shape[0], "frames_per_clip": T, "size": list(x.shape[-2:]), "upsample": u,
        "decoder_params": sum(p.numel() for p in dd.parameters()),
        "plain_psnr_db": round(p_plain, 3), "plain_ssim": round(ssim(plain, x), 4),
        "plain_sharpness_ratio": round(hf_energy(plain) / hf_energy(x), 4),
        "plain_temporal_diff_ratio": round(frame_diff(plain) / fd, 4),
        "plain_seam_diff_ratio": round(seam(plain, up(plain_b)) / seam_true, 4),
    }
    for steps in a.steps:
        g = [torch.Generator().manual_seed(i) for i in range(x.shape[0])]
        t0 = time.perf_counter()
        ref_a = torch.cat([dd.refine(codes_a[i:i + 1], plain_a[i:i + 1], steps=steps, generator=g[i])
                           for i in range(x.shape[0])])
        dt = time.perf_counter() - t0
        ref_b = torch.cat([dd.refine(codes_b[i:i + 1], plain_b[i:i + 1], steps=steps, generator=g[i],
                                     prev_frame=ref_a[i:i + 1, :, -1]) for i in range(x.shape[0])])
        p_ref = mse_to_psnr(F.mse_loss(ref_a, x))
        k = f"refined{steps}"
        res.update({
            f"{k}_psnr_db": round(p_ref, 3), f"{k}_psnr_gain_db": round(p_ref - p_plain, 3),
            f"{k}_ssim": round(ssim(ref_a, x), 4),
            f"{k}_sharpness_ratio": round(hf_energy(ref_a) / hf_energy(x), 4),
            f"{k}_temporal_diff_ratio": round(frame_diff(ref_a) / fd, 4),
            f"{k}_seam_diff_ratio": round(seam(ref_a, ref_b) / seam_true, 4),
            f"{k}_psnr_gain_db_second_window": round(mse_to_psnr(F.mse_loss(ref_b, xb))
                                                      - mse_to_psnr(F.mse_loss(up(plain_b), xb)), 3),
            f"{k}_ms_per_frame": round(1000 * dt / n_frames, 2),
        })
    res["refine_psnr_gain_db"] = res[f"refined{a.steps[0]}_psnr_gain_db"]  # at the first --steps (1: the Pipeline default)
    if a.ar_vs_dit_prompts > 0:
        from kinema.eval.ar_vs_dit import compare_ar_dit

        cmp = compare_ar_dit(prompts=a.ar_vs_dit_prompts, video_tokenizer_dir=a.video_tokenizer, lm_pipeline_dir=a.model,
                             dit_dir=str(Path(a.model) / "dit") if a.model else None)
        res.update({f"ar_vs_dit_{k}": v for k, v in cmp.items()})
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
