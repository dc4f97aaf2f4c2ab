"""Video tokenizer vs x264 at equal bits per pixel, on held-out clips.

    python scripts/bench_video_tokenizer.py [--model DIR] [--clips 8] [--out runs/bench_video_tokenizer]
        [--roundtrip-prompts 32 --exclude data/synth_train/manifest.jsonl]

Held out: synthetic seeds >= 1_000_000 and windows from the last 20% of each real file (neither is
used in training). At 128x128 and 17 frames it measures the tokenizer's PSNR/SSIM, bits per pixel
(tokens x log2(codebook) / pixels), codebook usage and perplexity, encode/decode frames/s; then
x264 (PyAV) over a CRF sweep, interpolated (in log-bpp) to the tokenizer's bpp. Writes a
rate-distortion plot, a grid of original | reconstruction frames (``samples.png``) and prints one
JSON line last.

It also measures how local the codes are on the held-out synthetic clips
(:mod:`kinema.eval.code_locality`: codes of a flat clip, codes kept where nothing moved, codes changed
far from a small square), which decides how predictable the tokens are for the LM.

``--roundtrip-prompts N`` also measures the ceiling this tokenizer puts on generation: the synthetic
world's renders of N held-out captions, encoded and decoded, judged by the evaluation's detector
(prompt alignment, motion, persistence) next to the renders themselves.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from kinema.eval.code_locality import code_locality
from kinema.tokenizers.video import VideoTokenizer

SIZE, FRAMES, FPS = 128, 17, 8.0


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of uint8-range frames (T, H, W, 3), 7x7 box window on luma."""
    w = torch.tensor([0.299, 0.587, 0.114])
    ya, yb = (a.float() @ w)[:, None], (b.float() @ w)[:, None]
    k = torch.ones(1, 1, 7, 7) / 49
    mu_a, mu_b = F.conv2d(ya, k), F.conv2d(yb, k)
    va = F.conv2d(ya * ya, k) - mu_a**2
    vb = F.conv2d(yb * yb, k) - mu_b**2
    cov = F.conv2d(ya * yb, k) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 10 * math.log10(255**2 / max(mse, 1e-10))


def heldout_clips(n: int, media: Path) -> dict[str, list[torch.Tensor]]:
    from kinema.data.synthetic import generate
    from kinema.media import read_video

    out = {"synthetic": [generate(1_000_000 + i, (SIZE, SIZE), FPS, FRAMES / FPS).frames[:FRAMES] for i in range(n)], "real": []}
    files = sorted((media / "video").glob("*.avi")) if (media / "video").is_dir() else []
    files = [f for f in files if "bugy" not in f.name]
    for i in range(n):
        if not files:
            break
        f = files[i % len(files)]
        with av.open(str(f)) as c:
            dur = (c.duration or 0) / 1e6
        start = dur * 0.8 + (dur * 0.2 - FRAMES / FPS) * ((i // len(files)) / max(1, n // len(files)))
        clip = read_video(f, fps=FPS, size=(SIZE, SIZE), start=max(0.0, start), duration=FRAMES / FPS, audio=False, recover=True)
        if clip.num_frames >= FRAMES:
            out["real"].append(clip.frames[:FRAMES])
    return out


def x264_point(frames: torch.Tensor, crf: int) -> tuple[float, float, float]:
    """(bpp, psnr, ssim) of one clip through libx264 at ``crf`` (payload bits, no container)."""
    buf = io.BytesIO()
    bits = 0
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=int(FPS))
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        for i, f in enumerate(frames.numpy()):
            fr = av.VideoFrame.from_ndarray(f, format="rgb24")
            fr.pts = i
            for p in s.encode(fr):
                bits += p.size * 8
                out.mux(p)
        for p in s.encode(None):
            bits += p.size * 8
            out.mux(p)
    buf.seek(0)
    with av.open(buf) as inp:
        dec = torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]))
    return bits / frames[..., 0].numel(), psnr_u8(frames, dec), ssim(frames, dec)


def interp(x: float, xs: list[float], ys: list[float]) -> float:
    order = np.argsort(xs)
    return float(np.interp(math.log(x), np.log(np.array(xs)[order]), np.array(ys)[order]))


def sample_grid(pairs: list[tuple[torch.Tensor, torch.Tensor]], path: Path, n_frames: int = 6) -> None:
    """Rows of original then reconstruction, ``n_frames`` frames spread over each clip, as one PNG."""
    from PIL import Image

    rows = []
    for orig, rec in pairs:
        idx = np.linspace(0, orig.shape[0] - 1, n_frames).round().astype(int).tolist()
        rows += [torch.cat([orig[i] for i in idx], 1), torch.cat([rec[i] for i in idx], 1)]
    Image.fromarray(torch.cat(rows, 0).numpy()).save(path)


def roundtrip_ceiling(vt: VideoTokenizer, n: int, seconds: float, exclude: str | None) -> dict:
    """Detector scores of held-out caption renders and of the same renders through the tokenizer."""
    from kinema.eval.ar_vs_dit import caption_renders, judge, tokenizer_roundtrip
    from kinema.eval.run import heldout_prompts, manifest_captions

    captions = heldout_prompts(n, exclude=manifest_captions(exclude) if exclude else None)
    renders = caption_renders(captions, seconds, (SIZE, SIZE), FPS)
    keys = ("prompt_alignment", "color_alignment", "shape_accuracy", "motion_correct", "motion_by_kind",
            "slide_speed_px_per_frame", "persistence_frames")
    ref = judge([f for f, _ in renders], [p for _, p in renders], FPS)
    rt = judge([tokenizer_roundtrip(vt, f) for f, _ in renders], [p for _, p in renders], FPS)
    return {"prompts": len(renders), "seconds": seconds, **{f"render_{k}": ref[k] for k in keys},
            **{f"roundtrip_{k}": rt[k] for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--media", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "media"))
    ap.add_argument("--out", default="runs/bench_video_tokenizer")
    ap.add_argument("--roundtrip-prompts", type=int, default=0,
                    help="also judge N held-out caption renders round-tripped through the tokenizer")
    ap.add_argument("--roundtrip-seconds", type=float, default=3.0)
    ap.add_argument("--exclude", default=None, help="training manifest.jsonl whose captions are never used as prompts")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    vt = VideoTokenizer.from_pretrained(args.model)
    sets = heldout_clips(args.clips, Path(args.media))
    result: dict = {"size": SIZE, "frames": FRAMES, "codebook_size": vt.codebook_size}
    all_codes = []
    curves = {}
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, clips in sets.items():
        if not clips:
            continue
        ps, ss, enc_t, dec_t = [], [], 0.0, 0.0
        for frames in clips:
            x = frames.permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            t0 = time.perf_counter()
            codes = vt.encode(x)
            t1 = time.perf_counter()
            x_hat = vt.decode(codes)
            t2 = time.perf_counter()
            enc_t, dec_t = enc_t + t1 - t0, dec_t + t2 - t1
            rec = ((x_hat[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            ps.append(psnr_u8(frames, rec))
            if len(ps) <= 2:  # the first two clips of each set
                shown.append((frames, rec))
            ss.append(ssim(frames, rec))
            all_codes.append(codes.flatten())
        bpp = codes.numel() * math.log2(vt.codebook_size) / frames[..., 0].numel()
        pts = [[x264_point(f, crf) for f in clips] for crf in (18, 26, 32, 38, 44, 51)]
        xb = [float(np.mean([p[0] for p in row])) for row in pts]
        xp = [float(np.mean([p[1] for p in row])) for row in pts]
        xs = [float(np.mean([p[2] for p in row])) for row in pts]
        n_frames = len(clips) * FRAMES
        result[name] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "bpp": bpp,
                        "x264_psnr_at_bpp": interp(bpp, xb, xp), "x264_ssim_at_bpp": interp(bpp, xb, xs),
                        "x264_min_bpp": min(xb), "x264_clamped": bpp < min(xb),  # below CRF 51: x264 cannot go that low
                        "encode_fps": n_frames / enc_t, "decode_fps": n_frames / dec_t,
                        "clips": len(clips)}
        result[name]["psnr_gain_vs_x264_db"] = result[name]["psnr"] - result[name]["x264_psnr_at_bpp"]
        curves[name] = (xb, xp, bpp, float(np.mean(ps)))
    codes = torch.cat(all_codes)
    counts = torch.bincount(codes, minlength=vt.codebook_size).float()
    p = counts / counts.sum()
    result["codebook_usage"] = float((counts > 0).float().mean())
    result["codebook_perplexity"] = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    if sets["synthetic"]:
        result["code_locality"] = code_locality(vt.encode, [f.numpy() for f in sets["synthetic"]], (SIZE, SIZE), FRAMES)
    enc_dec = [1 / (1 / result[n]["encode_fps"] + 1 / result[n]["decode_fps"]) for n in sets if n in result]
    result["encode_decode_fps"] = float(np.mean(enc_dec))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xb, xp, bpp, tp) in curves.items():
        ax.plot(xb, xp, "o-", label=f"x264 ({name})")
        ax.plot([bpp], [tp], "*", ms=14, label=f"kinema ({name})")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "rate_distortion.png", dpi=100)
    result["plot"] = str(out_dir / "rate_distortion.png")
    if shown:
        sample_grid(shown, out_dir / "samples.png")
        result["samples"] = str(out_dir / "samples.png")
    if args.roundtrip_prompts > 0:
        result["roundtrip"] = roundtrip_ceiling(vt, args.roundtrip_prompts, args.roundtrip_seconds, args.exclude)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
