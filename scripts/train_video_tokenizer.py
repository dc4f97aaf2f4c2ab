"""Train the video tokenizer.

    python scripts/train_video_tokenizer.py --config configs/video_tokenizer/small.yaml [key=value ...]

Single process with two optimizers (tokenizer + discriminator): the GAN's alternating updates are
simplest without a distributed engine, and the model is small. Re-running the same command after a
kill resumes from the last complete checkpoint in run_dir/checkpoints.
"""
from __future__ import annotations

import argparse
import sys

from kinema.config import load_config, save_config
from kinema.tokenizers.video_trainer import VideoTrainConfig, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="YAML config (VideoTrainConfig)")
    ap.add_argument("--export", default=None, help="also write the EMA weights (bf16) here, e.g. kinema/assets/kinema-tiny/video_tokenizer")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. steps=100 model.codebook_bits=12")
    args = ap.parse_args(argv)
    cfg = load_config(VideoTrainConfig, args.config, args.overrides)
    save_config(cfg, f"{cfg.run_dir}/train_config.yaml")
    model = train(cfg)
    if args.export:
        import torch

        model.save_pretrained(args.export, dtype=torch.bfloat16)
        print(f"exported to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
