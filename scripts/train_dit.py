"""Train the text-conditioned DiT generator on video-tokenizer latents of the synthetic world, with DeepSpeed.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_dit.py --config configs/diffusion/dit_small.yaml \
        train.max_minutes=10
    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 deepspeed --num_gpus 2 scripts/train_dit.py --config ...   # 2 processes
    deepspeed --num_gpus 8 scripts/train_dit.py --config ... --deepspeed_config configs/deepspeed/zero2.json

Rank 0 renders ``data.clips`` synthetic clips (never one with a held-out evaluation caption), encodes
them with the video tokenizer (``encode_latents``, continuous) and the captions with the text
tokenizer, and caches them in ``<run_dir>/latents.safetensors``; per-channel latent mean/std go into
the model config. bf16 autocast, cosine LR, EMA (rank 0), NonFiniteGuard, metrics JSONL + loss
curve, DeepSpeed checkpoints in ``<run_dir>/ds_checkpoints`` (a rerun resumes); the end writes ``<run_dir>/final``
(save_pretrained, EMA weights, bf16). ``train.eval_clips=N`` keeps the cache's last N clips out of
training and logs their flow loss (fixed noise and times, so steps compare) as ``eval_loss``.
``train.init_from=DIR`` starts a new run from a trained DiT, grown first (``kinema.decode.dit_grow``) when
the config is deeper; ``train.object_weight=w`` weights the loss 1 + w on latent positions that show an
object (``kinema.data.object_mask``; masks rendered again from the cache's seeds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
    os.environ["DS_ACCELERATOR"] = "cpu"
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.checkpoint import load_tensors, rng_state, save_tensors, set_rng_state  # noqa: E402
from kinema.config import load_config, save_config  # noqa: E402
from kinema.decode.dit_generator import DiTGenerator, DiTGeneratorConfig, caption_lists  # noqa: E402
from kinema.decode.dit_grow import deepen_dit  # noqa: E402
from kinema.distributed import all_finite, deepspeed_config, init_distributed  # noqa: E402
from kinema.errors import ConfigError, KinemaError  # noqa: E402
from kinema.training import EMA, MetricsLogger, NonFiniteGuard, autocast, cosine_lr  # noqa: E402


@dataclass
class DiTDataConfig:
    clips: int = 64
    first_seed: int = 100000  # synthetic seeds from first_seed on (held-out evaluation captions skipped)
    size: tuple[int, int] = (64, 64)  # (width, height)
    frames: int = 17  # 1 + 4k
    fps: float = 8.0
    video_tokenizer: str = ""  # empty: the embedded default
    text_tokenizer: str = ""


@dataclass
class DiTOptimConfig:
    steps: int = 2000
    micro_batch_size: int = 8
    lr: float = 5e-4
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.995
    bf16: bool = True
    log_every: int = 10
    ckpt_every: int = 200
    seed: int = 0
    max_minutes: float = 0.0  # 0: no limit
    # a DiT model directory whose weights start a new run (not a resumed one); a config deeper than it
    # grows it first with kinema.decode.dit_grow.deepen_dit, which leaves its predictions unchanged
    init_from: str = ""
    # extra flow-loss weight on latent positions with object pixels (kinema.data.object_mask; the loss
    # weight there is 1 + object_weight), as the tokenizer's second stage weights object pixels; 0: off
    object_weight: float = 0.0
    # the last eval_clips clips of the latent cache never train; every eval_every steps (and at the end)
    # their flow loss under fixed noise, times and caption drops is logged as eval_loss (0: off)
    eval_clips: int = 0
    eval_every: int = 500
    stop_after: int = 0  # fault drills/tests: exit hard (code 17) right after the checkpoint of this step
    # fault drills/tests: these steps (counted from 1, as in metrics.jsonl) get a NaN loss, which the
    # non-finite guard must skip; never set it for real training
    inject_nonfinite_at: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.eval_every < 1:
            raise ValueError(f"train.eval_every must be >= 1, got {self.eval_every}")
        if self.object_weight < 0:
            raise ValueError(f"train.object_weight must be >= 0, got {self.object_weight}")


@dataclass
class DiTTrainConfig:
    run_dir: str = "runs/dit"
    preset: str = "small"
    model: dict = field(default_factory=dict)
    data: DiTDataConfig = field(default_factory=DiTDataConfig)
    train: DiTOptimConfig = field(default_factory=DiTOptimConfig)


def build_latents(cfg: DiTDataConfig, path: Path) -> dict[str, torch.Tensor]:
    """Continuous latents (N, C, t, h, w), padded caption ids (N, M) (-1 = pad) and the scenes' seeds
    (N,), cached in ``path``. Seeds from ``cfg.first_seed`` on, skipping every scene whose caption is one
    of the evaluation's held-out prompts (kinema.data.heldout), as the dataset writer does."""
    if path.is_file():
        return load_tensors(path)
    from kinema.data.heldout import is_heldout
    from kinema.data.synthetic import render, sample_scene
    from kinema.tokenizers.text import TextTokenizer
    from kinema.tokenizers.video import VideoTokenizer

    vt = VideoTokenizer.from_pretrained(cfg.video_tokenizer or None)
    tt = TextTokenizer.from_pretrained(cfg.text_tokenizer or None)
    zs, ids, seeds = [], [], []
    seed = cfg.first_seed - 1
    bar = tqdm(total=cfg.clips, desc="encoding clips")
    while len(zs) < cfg.clips:
        seed += 1
        scene = sample_scene(seed, aspect=cfg.size[0] / cfg.size[1])
        if is_heldout(scene.caption):  # the evaluation's prompts stay out of training
            continue
        c = render(scene, tuple(cfg.size), cfg.fps, cfg.frames / cfg.fps)
        x = c.frames[: cfg.frames].permute(3, 0, 1, 2).float().unsqueeze(0) / 127.5 - 1  # (1, 3, T, H, W)
        zs.append(vt.encode_latents(x)[0])
        ids.append(tt.encode(c.caption))
        seeds.append(seed)
        bar.update(1)
    bar.close()
    m = max(len(s) for s in ids)
    text = torch.full((len(ids), m), -1, dtype=torch.long)
    for i, s in enumerate(ids):
        text[i, : len(s)] = torch.tensor(s)
    out = {"latents": torch.stack(zs).float(), "text": text, "seeds": torch.tensor(seeds),
           "text_vocab": torch.tensor([tt.vocab_size])}
    save_tensors(path, out)
    return out


def build_object_masks(cfg: DiTDataConfig, seeds: torch.Tensor, grid: tuple[int, int, int], path: Path) -> torch.Tensor:
    """(N, t, h, w) bool: the latent positions with object pixels of each cached clip, rendered again from
    its seed (the cache keeps latents, not frames), cached in ``path``."""
    if path.is_file():
        masks = load_tensors(path)["masks"]
        if masks.shape == (len(seeds), *grid):
            return masks.bool()
    from kinema.data.object_mask import latent_object_mask
    from kinema.data.synthetic import render, sample_scene

    masks = []
    for seed in tqdm(seeds.tolist(), desc="object masks"):
        c = render(sample_scene(int(seed), aspect=cfg.size[0] / cfg.size[1]), tuple(cfg.size), cfg.fps,
                   cfg.frames / cfg.fps)
        masks.append(latent_object_mask(c.frames[: cfg.frames], grid))
    out = torch.stack(masks)
    save_tensors(path, {"masks": out.to(torch.uint8)})
    return out


def check_init(init: DiTGenerator, init_from: str, mcfg: DiTGeneratorConfig, unknown: tuple[str, ...] = ()) -> None:
    """Refuse a trained DiT that does not fit ``mcfg``: every shape entry must match (``unknown`` ones are
    not compared, e.g. those the latent cache decides) and the depth may only grow."""
    skip = {"depth", "latent_mean", "latent_std", "text_drop", "cond_prob", "shift", *unknown}

    def norm(v):  # JSON gives lists where the config has tuples
        return tuple(v) if isinstance(v, (list, tuple)) else v
    have, want = asdict(init.cfg), asdict(mcfg)
    diff = [f"{k}: {have[k]} vs {want[k]}" for k in want if k not in skip and norm(have[k]) != norm(want[k])]
    if diff:
        raise ConfigError(f"train.init_from {init_from} does not match the config ({'; '.join(diff)})")
    if mcfg.depth < init.cfg.depth:
        raise ConfigError(f"train.init_from {init_from} has depth {init.cfg.depth}; the config asks for "
                          f"{mcfg.depth} (a model can be grown, not cut)")


def load_init(init_from: str, shape: DiTGeneratorConfig) -> DiTGenerator:
    """The trained DiT in ``init_from``, checked against the config's model ``shape`` (latent channels and
    text vocabulary, which the latent cache decides, are checked by :func:`initial_model`)."""
    if not (Path(init_from) / "config.json").is_file():
        raise ConfigError(f"train.init_from: {init_from} is not a DiT model directory (no config.json)")
    init = DiTGenerator.from_pretrained(init_from).float().train()
    check_init(init, init_from, shape, unknown=("latent_channels", "text_vocab"))
    return init


def initial_model(mcfg: DiTGeneratorConfig, init: DiTGenerator | None = None, init_from: str = "") -> DiTGenerator:
    """A fresh DiT for ``mcfg``, or the trained ``init`` (from :func:`load_init`), grown to ``mcfg.depth`` if
    that is deeper (:func:`kinema.decode.dit_grow.deepen_dit`). A trained model keeps its own latent
    statistics (its weights were fitted to them); its caption drop, conditioning rate and shift follow ``mcfg``."""
    if init is None:
        return DiTGenerator(mcfg)
    check_init(init, init_from, mcfg)
    for k in ("text_drop", "cond_prob", "shift"):
        setattr(init.cfg, k, getattr(mcfg, k))
    return deepen_dit(init, mcfg.depth) if mcfg.depth > init.cfg.depth else init


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML (configs/diffusion/dit_*.yaml)")
    p.add_argument("--deepspeed_config", default="configs/deepspeed/zero1.json")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=10")
    args = p.parse_args(argv)
    try:
        return train(args)
    except (KinemaError, ValueError, FileNotFoundError, FloatingPointError) as e:  # FloatingPointError: diverged
        print(f"train_dit: error: {e}", file=sys.stderr)
        return 2


def train(args) -> int:
    import deepspeed
    import torch.distributed as dist

    cfg = load_config(DiTTrainConfig, args.config, args.overrides)
    tc, run = cfg.train, Path(cfg.run_dir)
    ds_cfg = deepspeed_config(args.deepspeed_config, tc.micro_batch_size, 1, tc.grad_clip)
    rank, world, device = init_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)

    init = None
    if tc.init_from:  # refuse a model that does not fit before any clip is rendered
        try:
            shape = DiTGeneratorConfig.preset(cfg.preset, **cfg.model)
        except TypeError as e:
            raise ConfigError(f"model: {e}") from None
        init = load_init(tc.init_from, shape)
    run.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        build_latents(cfg.data, run / "latents.safetensors")
    dist.barrier()
    data = load_tensors(run / "latents.safetensors")
    z, text = data["latents"], data["text"]  # (N, C, t, h, w), (N, M)
    masks = None
    if tc.object_weight > 0:
        mask_args = (cfg.data, data["seeds"], tuple(z.shape[2:]), run / "object_masks.safetensors")
        masks = build_object_masks(*mask_args) if rank == 0 else None
        dist.barrier()
        if masks is None:  # the other ranks read the cache rank 0 wrote
            masks = build_object_masks(*mask_args)
    if not 0 <= tc.eval_clips < z.shape[0]:
        raise ValueError(f"train.eval_clips must be in [0, {z.shape[0]}) for {z.shape[0]} clips, got {tc.eval_clips}")
    n_train = z.shape[0] - tc.eval_clips  # clips [n_train, N) are held out for eval_loss
    mean = z[:n_train].mean(dim=(0, 2, 3, 4))
    std = z[:n_train].std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    try:
        mcfg = DiTGeneratorConfig.preset(cfg.preset, **{**cfg.model, "latent_channels": z.shape[1],
                                                        "text_vocab": int(data["text_vocab"][0]),
                                                        "latent_mean": mean.tolist(), "latent_std": std.tolist()})
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None
    torch.manual_seed(tc.seed)
    model = initial_model(mcfg, init, tc.init_from)
    mcfg = model.cfg
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, 1.0, tc.warmup, tc.steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"DiT {cfg.preset}: {n_params / 1e6:.2f}M params, {z.shape[0]} clips of latents {tuple(z.shape[1:])}, "
        f"{world} process(es), device {device}")
    ema = EMA(engine.module, tc.ema) if rank == 0 else None

    ckpt_dir, step = run / "ds_checkpoints", 0
    if (ckpt_dir / "latest").is_file():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is not None:
            step = client["step"]
            set_rng_state(client["rng"])
            if ema is not None and "ema" in client:
                ema.load_state_dict(client["ema"])
            log(f"resumed from {path} at step {step}")
    logger = MetricsLogger(run, enabled=rank == 0)
    logger.truncate_after(step)
    if rank == 0:
        save_config(cfg, run / "train_config.yaml")
    guard = NonFiniteGuard(max_in_row=5, log=log)
    g = torch.Generator()
    t0 = time.time()
    bar = tqdm(total=tc.steps, initial=step, desc="train_dit", disable=rank != 0)
    while step < tc.steps:
        # batch and noise draws are a pure function of (seed, rank, step), so a resumed run draws
        # exactly what the uninterrupted one would have (the client state holds rank 0's RNG only)
        g.manual_seed(int(np.random.SeedSequence([tc.seed, rank, step]).generate_state(1, np.uint64)[0]))
        idx = torch.randint(0, n_train, (tc.micro_batch_size,), generator=g)
        ids = caption_lists(text[idx])
        weight = None if masks is None else (1 + tc.object_weight * masks[idx].float()).to(device)
        with autocast(device, enabled=tc.bf16):  # (ZeRO hooks sit on the submodules)
            loss = engine.module.loss(z[idx].to(device), ids, g, position_weight=weight)
        if step + 1 in tc.inject_nonfinite_at:
            loss = loss * float("nan")  # fault drill
        skipped = not all_finite(loss, world)
        if skipped:  # no backward, no optimizer or LR step; the guard stops a run that keeps diverging
            guard.check(torch.tensor(float("nan")), None, step + 1)
        else:
            guard.check(loss, None, step + 1)
            engine.backward(loss)
            engine.step()
            if ema is not None:
                ema.update(engine.module)
        step += 1
        bar.update(1)
        if skipped:
            logger.log(step, nonfinite_skipped=1)
        elif step % tc.log_every == 0:
            logger.log(step, train_loss=float(loss), lr=engine.get_lr()[0])
            bar.set_postfix(loss=f"{float(loss):.4f}")
        if tc.eval_clips and (step % tc.eval_every == 0 or step == tc.steps):
            with autocast(device, enabled=tc.bf16):
                eval_loss = engine.module.fixed_noise_loss(z[n_train:], text[n_train:], tc.micro_batch_size)
            logger.log(step, eval_loss=eval_loss)
        out_of_time = tc.max_minutes > 0 and (time.time() - t0) / 60 > tc.max_minutes
        if step % tc.ckpt_every == 0 or step == tc.steps or step == tc.stop_after or out_of_time:
            client = {"step": step, "rng": rng_state(), **({"ema": ema.state_dict()} if ema is not None else {})}
            engine.save_checkpoint(str(ckpt_dir), tag=f"step_{step:08d}", client_state=client)
            if tc.stop_after and step == tc.stop_after:
                dist.barrier()
                os._exit(17)  # simulated crash right after a checkpoint
        if out_of_time:
            log(f"stopping at step {step}: max_minutes {tc.max_minutes} reached (resume by rerunning)")
            break
    bar.close()
    if rank == 0:
        logger.plot()
        final = DiTGenerator(mcfg)
        final.load_state_dict(ema.state_dict())
        final.save_pretrained(run / "final", dtype=torch.bfloat16)
        log(f"wrote {run / 'final'}")
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
