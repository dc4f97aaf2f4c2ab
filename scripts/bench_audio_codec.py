"""Benchmark the audio codec against Opus (libopus through PyAV) on held-out audio.

Held out: the real recordings named in the codec's training config (``data.holdout``) and
synthetic-world sound from seeds >= 1_000_000 (decaying harmonic tone bursts when
``kinema.data.synthetic`` is not installed). For each bitrate: SI-SNR (dB, higher is better),
log-mel distance and multi-resolution STFT distance (lower is better); encode+decode real-time
factor on this CPU. Opus runs in the same process at the same nominal bitrates (libopus floors
its rate near 6 kbps; the measured bitrate is reported). Writes a plot; prints one JSON line last.

    OMP_NUM_THREADS=2 python scripts/bench_audio_codec.py [--codec DIR] [--threads 2] [--plot out.png]
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kinema.config import read_mapping  # noqa: E402
from kinema.tokenizers.audio import AudioCodec  # noqa: E402
from kinema.tokenizers.audio_losses import log_mel_distance, si_snr, stft_distance  # noqa: E402
from kinema.tokenizers.audio_trainer import bounce_tones, load_audio_file, synthetic_audio  # noqa: E402

KBPS = (1.0, 1.5, 3.0, 6.0)  # 1 kbps (2 levels) is what the LM generates with
OPUS_KBPS = (1.5, 3.0, 6.0, 12.0)


def opus_roundtrip(x: np.ndarray, sr: int, kbps: float) -> tuple[np.ndarray, float, float]:
    """float (N,) -> (decoded (N,), measured kbps, seconds spent) through libopus in an Ogg stream."""
    import av

    t0 = time.perf_counter()
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as oc:
        st = oc.add_stream("libopus", rate=sr, layout="mono")
        st.bit_rate = int(kbps * 1000)
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sr
        for p in st.encode(frame):
            oc.mux(p)
        for p in st.encode(None):
            oc.mux(p)
    nbytes = len(buf.getvalue())
    buf.seek(0)
    parts = []
    with av.open(buf) as ic:
        rs = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for f in ic.decode(audio=0):
            for o in rs.resample(f):
                parts.append(o.to_ndarray().reshape(-1))
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return y, nbytes * 8 / (len(x) / sr) / 1000, time.perf_counter() - t0


def align(y: np.ndarray, x: np.ndarray, max_lag: int = 800) -> np.ndarray:
    """Shift ``y`` by the lag (|lag| <= max_lag) best correlating with ``x``; pad/crop to len(x)."""
    n = len(x)
    y = np.pad(y, (max_lag, max_lag + max(0, n - len(y))))
    best, best_c = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1, 1):
        c = float(np.dot(y[max_lag + lag : max_lag + lag + n], x))
        if c > best_c:
            best, best_c = lag, c
    return y[max_lag + best : max_lag + best + n]


def metrics(rec: torch.Tensor, ref: torch.Tensor, sr: int) -> dict[str, float]:
    return {
        "si_snr": float(si_snr(rec, ref).mean()),
        "mel_distance": float(log_mel_distance(rec, ref, sr).mean()),
        "stft_distance": float(stft_distance(rec, ref).mean()),
    }


def held_out(cfg_path: Path, sr: int, n_synth: int, max_seconds: float) -> list[tuple[str, torch.Tensor]]:
    data = read_mapping(cfg_path).get("data", {})
    clips = []
    for folder in data.get("folders", []):
        folder = (REPO / folder) if not Path(folder).is_absolute() else Path(folder)
        for name in data.get("holdout", []):
            f = folder / name
            if f.is_file():
                w = load_audio_file(f, sr)[: int(max_seconds * sr)]
                clips.append((name, 0.9 * w / w.abs().max().clamp_min(1e-4)))
    found, s = 0, 1_000_000
    while found < n_synth and s < 1_000_000 + 50 * n_synth:  # held-out seeds whose clip has sound
        w = synthetic_audio(s, 4.0, sr)
        name = f"synthetic-{s}"
        if w is None:
            w, name = bounce_tones(random.Random(s), 4 * sr, sr), f"tones-{s}"
        s += 1
        if float(w.abs().max()) < 1e-3:
            continue  # silent clip (no bounce): SI-SNR is undefined there
        clips.append((name, 0.9 * w / w.abs().max()))
        found += 1
    return clips


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default=None, help="codec directory (default: the embedded one)")
    p.add_argument("--config", default=str(REPO / "configs/audio_codec/small.yaml"), help="training config naming the held-out files")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--synthetic", type=int, default=3, help="held-out synthetic clips")
    p.add_argument("--max-seconds", type=float, default=8.0)
    p.add_argument("--plot", default="runs/bench_audio_codec.png")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ac = AudioCodec.from_pretrained(args.codec)
    sr = ac.sample_rate
    clips = held_out(Path(args.config), sr, args.synthetic, args.max_seconds)
    if not clips:
        sys.exit("no held-out audio found")
    total_s = sum(w.numel() for _, w in clips) / sr
    ours: dict[float, list[dict]] = {k: [] for k in KBPS}
    theirs: dict[float, list[dict]] = {k: [] for k in OPUS_KBPS}
    opus_rate: dict[float, list[float]] = {k: [] for k in OPUS_KBPS}
    t_enc = t_dec = t_opus = 0.0
    ac.encode(clips[0][1][None, None, :3200])  # warm-up
    for name, w in clips:
        x = w[None, None]  # (1, 1, N)
        for k in KBPS:
            t0 = time.perf_counter()
            codes = ac.encode(x, kbps=k)
            t1 = time.perf_counter()
            rec = ac.decode(codes)[..., : x.shape[-1]]
            t2 = time.perf_counter()
            if k == 6.0:
                t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
            ours[k].append(metrics(rec, x, sr))
        for k in OPUS_KBPS:
            y, rate, dt = opus_roundtrip(w.numpy(), sr, k)
            if k == 6.0:
                t_opus += dt
            y = torch.from_numpy(align(y, w.numpy()).copy())[None, None]
            theirs[k].append(metrics(y, x, sr))
            opus_rate[k].append(rate)
        print(f"{name}: mel@6 kinema {ours[6.0][-1]['mel_distance']:.3f} opus {theirs[6.0][-1]['mel_distance']:.3f}", file=sys.stderr)

    def mean(rows: list[dict], key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 4)

    result: dict = {"clips": len(clips), "seconds": round(total_s, 2), "threads": args.threads,
                    "held_out": [n for n, _ in clips], "codec_params_m": round(sum(p.numel() for p in ac.parameters()) / 1e6, 3)}
    for k in KBPS:
        for key in ("si_snr", "mel_distance", "stft_distance"):
            result[f"{key}_{k:g}kbps"] = mean(ours[k], key)
    for k in OPUS_KBPS:
        for key in ("si_snr", "mel_distance", "stft_distance"):
            result[f"opus_{key}_{k:g}kbps"] = mean(theirs[k], key)
        result[f"opus_measured_kbps_{k:g}"] = round(float(np.mean(opus_rate[k])), 3)
    result["mel_distance_gain_vs_opus_6kbps"] = round(result["opus_mel_distance_6kbps"] / result["mel_distance_6kbps"], 4)
    result["encode_rtf"] = round(total_s / t_enc, 2)
    result["decode_rtf"] = round(total_s / t_dec, 2)
    result["rtf_encode_decode"] = round(total_s / (t_enc + t_dec), 2)
    result["opus_rtf_encode_decode"] = round(total_s / t_opus, 2)
    result["rtf_speedup_vs_opus"] = round(result["rtf_encode_decode"] / result["opus_rtf_encode_decode"], 4)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key in zip(axes, ("mel_distance", "stft_distance", "si_snr")):
        ax.plot(KBPS, [result[f"{key}_{k:g}kbps"] for k in KBPS], "o-", label="kinema codec")
        ax.plot([result[f"opus_measured_kbps_{k:g}"] for k in OPUS_KBPS], [result[f"opus_{key}_{k:g}kbps"] for k in OPUS_KBPS], "s--", label="Opus (measured kbps)")
        ax.set_xlabel("kbps")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=100)
    result["plot"] = args.plot
    print(json.dumps(result))


if __name__ == "__main__":
    main()
