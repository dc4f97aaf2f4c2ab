"""Train the diffusion decoder head on (tokens, original frames) pairs from the synthetic world.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_diffusion_decoder.py --out runs/dd \
        --preset small --clips 48 --minutes 8

Pairs come from :func:`kinema.decode.diffusion_decoder.synthetic_pairs` with the given video
tokenizer (default: the embedded one). bf16 autocast, AdamW, cosine LR, EMA, NonFiniteGuard,
metrics JSONL + loss curve; training checkpoints (weights, EMA, optimizer, RNG) every
``--ckpt-every`` steps in ``<out>/checkpoints``, and a rerun with the same ``--out`` resumes from
the newest valid one (``--minutes`` is a budget per invocation); the end writes ``<out>/final``
(save_pretrained, EMA weights).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.checkpoint import CheckpointManager, rng_state, set_rng_state  # noqa: E402
from kinema.decode.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig, synthetic_pairs  # noqa: E402
from kinema.tokenizers.video import VideoTokenizer  # noqa: E402
from kinema.training import EMA, MetricsLogger, NonFiniteGuard, autocast, cosine_lr, set_lr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--video-tokenizer", default=None)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64))
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temporal-weight", type=float, default=0.0,
                    help="weight of the frame-difference loss (temporal consistency); 0 = plain x-prediction MSE")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-every", type=int, default=200, help="training checkpoint every N steps (a rerun resumes)")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="fault drills/tests: exit hard (code 17) right after the checkpoint of this step")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    cfg = DiffusionDecoderConfig.preset(a.preset)
    vt = VideoTokenizer.from_pretrained(a.video_tokenizer)
    print(f"rendering and tokenising {a.clips} clips ...", flush=True)
    _, x_detok, x, prev = synthetic_pairs(vt, list(range(1000, 1000 + a.clips)), tuple(a.size), a.frames, cfg.upsample)
    res = (x - torch.nn.functional.interpolate(x_detok.flatten(1, 2), scale_factor=cfg.upsample).view_as(x)
           if cfg.upsample == 2 else x - x_detok)
    print(f"residual std {res.std():.4f} (residual_scale {cfg.residual_scale})", flush=True)
    model = DiffusionDecoder(cfg).train()
    ema = EMA(model, decay=0.995)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    guard, log = NonFiniteGuard(), MetricsLogger(a.out)
    g = torch.Generator().manual_seed(a.seed)
    ckpts, start = CheckpointManager(Path(a.out) / "checkpoints", keep=2), 0
    latest = ckpts.load_latest()
    if latest is not None:
        model.load_state_dict(latest.modules["model"])
        ema.load_state_dict(latest.modules["ema"])
        opt.load_state_dict(latest.state["opt"])
        g.set_state(latest.state["gen"])
        set_rng_state(latest.state["rng"])
        start = latest.step
        print(f"resumed from {latest.path} at step {start}", flush=True)
    log.truncate_after(start)  # records are numbered by completed steps, like the checkpoints
    t0 = time.time()
    pbar = tqdm(range(start, a.steps), initial=start, total=a.steps, desc="diffusion decoder")
    for step in pbar:
        done = step + 1
        idx = torch.randint(0, x.shape[0], (a.batch,), generator=g)
        set_lr(opt, cosine_lr(step, a.lr, 100, a.steps))
        with autocast("cpu"):
            loss = model.loss(x[idx], x_detok[idx], prev[idx], generator=g, temporal_weight=a.temporal_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if guard.check(loss, model.parameters(), done):
            opt.step()
            ema.update(model)
            if done % a.log_every == 0:
                log.log(done, loss=loss.item())
                pbar.set_postfix(loss=f"{loss.item():.4f}")
        out_of_time = time.time() - t0 > a.minutes * 60
        if done % a.ckpt_every == 0 or done == a.steps or done == a.stop_after or out_of_time:
            ckpts.save(done, {"model": model.state_dict(), "ema": ema.state_dict()},
                       {"opt": opt.state_dict(), "gen": g.get_state(), "rng": rng_state()})
            if a.stop_after and done == a.stop_after:
                os._exit(17)  # simulated crash right after a checkpoint
        if out_of_time:
            print(f"time budget reached at step {done} (resume by rerunning)", flush=True)
            break
    log.plot()
    model.load_state_dict(ema.state_dict())
    out = model.eval().save_pretrained(Path(a.out) / "final", dtype=torch.bfloat16)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
