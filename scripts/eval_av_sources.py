"""A/V sync split by where the sound track comes from, on true renders of the held-out prompts.

    python scripts/eval_av_sources.py --prompts 48 --seconds 3 --out runs/av_sources.json [--model DIR ...]

The evaluation's A/V number (``kinema eval``) mixes three things: the audio codec, the LM's
video-to-audio, and the wall contacts of the video the LM drew. This script takes the video out of
it. For each of the first N held-out captions (kinema.data.heldout) the synthetic world renders the
true clip with its bounce tones; the clip's visual wall contacts (the detector's, as in the
evaluation) are matched with the onsets of these sound tracks:

- ``truth``: the render's own audio (what a perfect sound track scores);
- ``codec``: that audio through the audio codec at the LM's number of quantizers (encode + decode):
  the ceiling any generated sound track has;
- ``v2a`` per model: the LM's sound for the true video (``Pipeline(task="v2a")`` with the caption,
  so guidance as in text-to-video generation). Against the evaluation's number, this says how much
  of the A/V gap is the sound the LM makes and how much the videos it draws.

Clips without a bouncing or falling object have no contacts and do not count. One JSON line with
the summary per source is printed last and written to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.errors import KinemaError  # noqa: E402
from kinema.eval.metrics import evaluate_clip  # noqa: E402
from kinema.eval.run import heldout_prompts, render_caption  # noqa: E402
from kinema.pipeline import Pipeline  # noqa: E402


def summarize_av(rows: list[dict | None]) -> dict:
    """Per-source numbers over clips with contacts: mean within-one-frame, mean offset, totals."""
    rows = [r for r in rows if r and r["contacts"]]
    offs = [r["mean_abs_offset_frames"] for r in rows if r["mean_abs_offset_frames"] is not None]
    return {"clips_with_contacts": len(rows),
            "contacts": int(sum(r["contacts"] for r in rows)),
            "onsets": int(sum(r["onsets"] for r in rows)),
            "within_one_frame": float(np.mean([r["within_one_frame"] for r in rows])) if rows else None,
            "mean_abs_offset_frames": float(np.mean(offs)) if offs else None}


def codec_roundtrip(pipe: Pipeline, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The clip's audio through the codec with the LM's quantizer count, at the codec's rate, (1, N)."""
    ac = pipe.ac
    wav = ac.prepare(audio, sample_rate)
    codes = ac.encode(wav, kbps=None)[:, : pipe.vocab.audio_num_quantizers]
    return ac.decode(codes)[0, :, : wav.shape[-1]]


def run(args) -> dict:
    prompts = heldout_prompts(args.prompts)
    pipes = {m or "kinema-tiny (embedded)": Pipeline.from_pretrained(m) for m in (args.model or [None])}
    first = next(iter(pipes.values()))
    if first.ac is None:
        raise KinemaError("the model has no audio codec: there is no sound to judge")
    W, H = first.config.size[0], first.config.size[1]
    fps = float(first.config.fps)
    rows: dict[str, list] = {"truth": [], "codec": [], **{f"v2a {m}": [] for m in pipes}}
    for i, caption in enumerate(tqdm(prompts, desc="av sources", unit="prompt")):
        clip = render_caption(caption, args.seconds, W, H, fps)
        if clip is None:
            continue

        def av(audio: torch.Tensor, sr: int) -> dict | None:
            return evaluate_clip(clip.frames, caption, fps, audio, sr).get("av")

        rows["truth"].append(av(clip.audio, clip.sample_rate))
        rows["codec"].append(av(codec_roundtrip(first, clip.audio, clip.sample_rate), first.ac.sample_rate))
        for m, pipe in pipes.items():
            g = pipe(caption, task="v2a", video=clip.frames, fps=fps, seed=i)
            rows[f"v2a {m}"].append(av(g.audio, g.sample_rate))
    return {"prompts": len(prompts), "seconds": args.seconds,
            "sources": {k: summarize_av(v) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model directory (repeatable; default: the embedded kinema-tiny)")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the JSON here as well")
    args = ap.parse_args(argv)
    if args.prompts <= 0 or args.seconds <= 0:
        ap.error("--prompts and --seconds must be positive")
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (KinemaError, ValueError, FileNotFoundError) as e:
        print(f"eval_av_sources: error: {e}", file=sys.stderr)
        return 2
    for name, s in result["sources"].items():
        print(f"{name}: within one frame {s['within_one_frame']}, mean offset {s['mean_abs_offset_frames']} frames, "
              f"{s['contacts']} contacts / {s['onsets']} onsets in {s['clips_with_contacts']} clips")
    text = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
