"""Run the frozen tokenizers once over a dataset and write memory-mapped token shards.

    python scripts/extract_tokens.py --data data/synth --out data/synth_tokens --fps 8 --size 64 64 \\
        --frames 17 --kbps 6 --workers 2

``--data`` is a folder with ``manifest.jsonl`` (or the file itself): one JSON object per clip with
the media path (``video``/``path``/``file``, relative to the manifest) and ``caption``; optional
``start`` (seconds). Each clip gives one sample: its first ``--frames`` frames (cut down to
1 + 4k for the causal video tokenizer) resampled to ``--fps`` and ``--size``, the audio over the
same time span, and the caption's text ids. Killed runs resume where they stopped (re-run the same
command). LM training then reads the shards with ``kinema.lm.token_data.TokenShardDataset``.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch

from kinema.errors import KinemaError
from kinema.lm.shards import Record, extract
from kinema.lm.vocab import Vocab


def read_manifest(path: Path) -> list[dict[str, Any]]:
    path = path / "manifest.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise KinemaError(f"manifest not found: {path}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise KinemaError(f"{path}:{n}: not JSON ({e})") from None
        media = next((rec[k] for k in ("video", "path", "file", "mp4") if isinstance(rec.get(k), str)), None)
        if media is None:
            raise KinemaError(f"{path}:{n}: no media path (keys video/path/file)")
        items.append({"path": str((path.parent / media).resolve()), "caption": str(rec.get("caption", "")),
                      "start": float(rec.get("start", 0.0)), "key": str(rec.get("id", media))})
    if not items:
        raise KinemaError(f"{path} lists no clips")
    return items


def load_tokenizers(args: argparse.Namespace):
    from kinema.tokenizers.audio import AudioCodec
    from kinema.tokenizers.text import TextTokenizer
    from kinema.tokenizers.video import VideoTokenizer

    vt = VideoTokenizer.from_pretrained(args.video_tokenizer).eval()
    ac = None if args.no_audio else AudioCodec.from_pretrained(args.audio_codec).eval()
    tt = TextTokenizer.from_pretrained(args.text_tokenizer)
    return vt, ac, tt


def make_encoder(args: argparse.Namespace, items: list[dict[str, Any]]):
    """Runs once per worker: load the frozen tokenizers, return ``encode(i) -> Record | None``."""
    from kinema.media import read_video

    vt, ac, tt = load_tokenizers(args)
    w, h = args.size

    @torch.inference_mode()
    def encode(i: int) -> Record | None:
        item = items[i]
        try:
            clip = read_video(item["path"], fps=args.fps, size=(w, h), start=item["start"],
                              duration=args.frames / args.fps, audio=ac is not None)
        except (KinemaError, ValueError) as e:
            warnings.warn(f"skipping {item['path']}: {e}")
            return None
        T = (min(clip.num_frames, args.frames) - 1) // 4 * 4 + 1
        if T < 1:
            warnings.warn(f"skipping {item['path']}: no frames")
            return None
        x = clip.to_model_input()[:, :, :T]  # (1, 3, T, H, W)
        arrays = {"video": vt.encode(x)[0].cpu().numpy()}  # (t, h, w)
        if ac is not None and clip.audio is not None and clip.audio.shape[-1] > 0:
            wav = ac.prepare(clip.audio, clip.sample_rate)[..., : round(T / args.fps * ac.sample_rate)]
            arrays["audio"] = ac.encode(wav, kbps=args.kbps)[0].cpu().numpy()  # (Q, n)
        return Record(i, item["key"], item["caption"], tt.encode(item["caption"]), arrays)

    return encode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with manifest.jsonl, or the file")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("W", "H"))
    ap.add_argument("--frames", type=int, default=17, help="frames per clip (cut to 1 + 4k)")
    ap.add_argument("--kbps", type=float, default=6.0)
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--video-tokenizer", default=None, help="directory (default: embedded)")
    ap.add_argument("--audio-codec", default=None, help="directory (default: embedded)")
    ap.add_argument("--text-tokenizer", default=None, help="directory (default: embedded)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-mb", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=None, help="stop after N new samples (resume later)")
    args = ap.parse_args(argv)
    try:
        if args.frames < 1 or args.fps <= 0 or min(args.size) < 1 or args.workers < 1:
            raise KinemaError("--frames, --fps, --size and --workers must be positive")
        items = read_manifest(args.data)
        vt, ac, tt = load_tokenizers(args)
        meta = {"text_size": tt.vocab_size, "video_codebook_size": int(vt.codebook_size),
                "audio_codebook_size": int(ac.codebook_size) if ac else None,
                "audio_num_quantizers": int(ac.quantizers_for_kbps(args.kbps)) if ac else None,
                "fps": args.fps, "size": list(args.size), "frames": args.frames, "kbps": args.kbps,
                "sample_rate": int(ac.sample_rate) if ac else None, "data": str(args.data.resolve()),
                # which encoders made the codes; train_lm.py stores them in the LM (LMConfig.trained_on)
                "code_fingerprints": {"video_tokenizer": vt.code_fingerprint(),
                                      **({"audio_codec": ac.code_fingerprint()} if ac else {})}}
        # the default unified vocabulary for these tokenizers (factorised when the codebook is large)
        meta["vocab"] = Vocab(meta["text_size"], meta["video_codebook_size"], meta["audio_codebook_size"] or 1,
                              meta["audio_num_quantizers"] or 1,
                              video_factorize=meta["video_codebook_size"] > 2**14).to_dict()
        del vt, ac, tt
        counts = extract(args.out, len(items), partial(make_encoder, args, items), meta=meta,
                         num_workers=args.workers, shard_bytes=args.shard_mb << 20, limit=args.limit)
    except (KinemaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "items": len(items), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
