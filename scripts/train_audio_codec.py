"""Train the audio codec from a YAML config (resumable; bf16 autocast on CPU).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_audio_codec.py configs/audio_codec/small.yaml \
        [train.max_minutes=30 run_dir=runs/ac ...]
"""
from __future__ import annotations

import argparse
import sys

import torch

from kinema.config import load_config
from kinema.errors import KinemaError
from kinema.tokenizers.audio_trainer import AudioTrainConfig, train_audio_codec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (configs/audio_codec/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(AudioTrainConfig, args.config, args.overrides)
        train_audio_codec(cfg)
    except KinemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
