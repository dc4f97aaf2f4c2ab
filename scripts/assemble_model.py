"""Assemble a model directory (what ``Pipeline.from_pretrained`` and ``kinema eval --model`` read) from a
base model with some components replaced, e.g. a new video tokenizer and the LM trained on its codes:

    python scripts/assemble_model.py --out runs/model_local \
        --video-tokenizer checkpoints/video_tokenizer_local --lm checkpoints/lm_kinema_tiny_grid_local
    # (those two hand-offs live in git: git checkout 694b312 -- checkpoints)

Components are ``save_pretrained`` directories (``config.json`` + ``model.safetensors``, or the text
tokenizer's files). The diffusion decoder, the DiT and the caption scorer are trained on one video
tokenizer's latents or codes. When ``--video-tokenizer`` replaces the base's, they are left out unless
they are given too, and ``pipeline.json`` is rewritten so the defaults do not ask for them (``refine``
off, one candidate). The result is loaded once as a Pipeline, so a vocabulary mismatch fails here and
not in the middle of an evaluation. JSON line last.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from kinema.checkpoint import atomic_write_text
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline
from kinema.pipeline_files import CONFIG_NAME, DEFAULT_MODEL

COMPONENTS = ("video_tokenizer", "audio_codec", "text_tokenizer", "lm", "diffusion_decoder", "dit", "caption_scorer")
# components that read the video tokenizer's latents or codes: a new tokenizer makes them stale
TIED_TO_VIDEO_CODES = ("diffusion_decoder", "dit", "caption_scorer")


def assemble(out: Path, base: Path, replace: dict[str, Path]) -> dict:
    """Write ``out`` from ``base`` with ``replace``'s components; returns what was done."""
    if not base.is_dir():
        raise FileNotFoundError(f"base model directory {base} does not exist")
    for name, src in replace.items():
        if not src.is_dir():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {src} does not exist")
        if name != "text_tokenizer" and not (src / "config.json").is_file():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {src}: not a save_pretrained directory (no config.json)")
    if out.resolve() == base.resolve() or out.resolve() in [s.resolve() for s in replace.values()]:
        raise ValueError(f"--out {out} must be a new directory, not an input")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty")
    dropped = []
    if "video_tokenizer" in replace:
        dropped = [c for c in TIED_TO_VIDEO_CODES if c not in replace and (base / c).is_dir()]
    out.mkdir(parents=True, exist_ok=True)
    sources = {}
    for c in COMPONENTS:
        src = replace.get(c, base / c)
        if c in dropped or not src.is_dir():
            continue
        shutil.copytree(src, out / c)
        sources[c] = str(src)
    cfg = json.loads((base / CONFIG_NAME).read_text()) if (base / CONFIG_NAME).is_file() else {}
    if "diffusion_decoder" not in sources:
        cfg["refine"] = False
    if "caption_scorer" not in sources:
        cfg["candidates"] = 1
    atomic_write_text(out / CONFIG_NAME, json.dumps(cfg, indent=2))
    try:
        Pipeline.from_pretrained(out)
    except Exception:
        shutil.rmtree(out)
        raise
    return {"out": str(out), "components": sources, "dropped": dropped, "pipeline": cfg}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="new model directory")
    p.add_argument("--base", default=str(DEFAULT_MODEL), help="model directory to start from (default: kinema-tiny)")
    for c in COMPONENTS:
        p.add_argument(f"--{c.replace('_', '-')}", default=None, help=f"replacement {c} directory")
    args = p.parse_args(argv)
    replace = {c: Path(getattr(args, c)) for c in COMPONENTS if getattr(args, c) is not None}
    try:
        res = assemble(Path(args.out), Path(args.base), replace)
    except (FileNotFoundError, FileExistsError, ValueError, KinemaError) as e:
        print(f"assemble_model: {e}", file=sys.stderr)
        return 2
    if res["dropped"]:
        print(f"assemble_model: left out {', '.join(res['dropped'])} (trained on the base's video codes)",
              file=sys.stderr)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
