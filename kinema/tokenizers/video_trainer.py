"""Training loop of the video tokenizer: reconstruction + LFQ losses, then a GAN after a warm-up.

One process, two optimizers (tokenizer and discriminator), bf16 autocast. Data is a pool of clips
held in memory (synthetic-world clips rendered once plus windows of real footage), from which each
step draws random crops, and images as one-frame clips (joint image + video training, as in
MAGVIT-v2/VideoPoet). Resumable: a killed run restarts from the last complete checkpoint with the
same RNG state. Writes metrics.jsonl, loss_curve.png and original|reconstruction sample mp4s.

``init_from`` + ``train_decoder_only`` fine-tune only the decoder of a trained tokenizer: its codes
do not change, so models trained on them (the LM, the DiT) keep working with the better decoder.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from kinema.checkpoint import CheckpointManager, rng_state, set_rng_state
from kinema.config import to_dict
from kinema.data.object_mask import object_pixels
from kinema.errors import ConfigError
from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig
from kinema.tokenizers.video_discriminator import Discriminator3d, LeCAM, d_hinge_loss, g_hinge_loss
from kinema.training import EMA, MetricsLogger, NonFiniteGuard, autocast, cosine_lr, set_lr

HOLDOUT_SEED = 1_000_000  # synthetic seeds >= this are never trained on
REAL_TRAIN_FRACTION = 0.8  # the last 20% of each real file is held out


@dataclass
class VideoTrainConfig:
    model: VideoTokenizerConfig = field(default_factory=VideoTokenizerConfig)
    run_dir: str = "runs/video_tokenizer"
    steps: int = 2000
    batch_size: int = 4
    crop: int = 64  # training crop (the network is convolutional: it runs at any multiple of 8)
    num_frames: int = 9  # 1 + 4k
    image_fraction: float = 0.25  # batches of single frames (joint image/video training)
    lr: float = 4e-4
    warmup: int = 100
    disc_lr: float = 2e-4
    disc_start: int = 1000  # GAN switched on after this many steps
    disc_weight: float = 0.1
    lecam_weight: float = 0.001
    l2_weight: float = 1.0
    object_weight: float = 0.0  # extra loss weight on pixels that stand out from the clip's median colour
    init_from: str = ""  # start from these weights (a save_pretrained directory with the same model config)
    train_decoder_only: bool = False  # freeze encoder + quantizer: codes stay those of init_from, so an LM
    # or DiT trained on them stays valid while the decoder improves
    ema_decay: float = 0.995
    synthetic_clips: int = 300
    real_dirs: list[str] = field(default_factory=list)
    real_windows: int = 120
    size: int = 128
    fps: float = 8.0
    checkpoint_every: int = 200
    sample_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    stop_after: int = 0  # fault drills: return after this many steps of this run, as if killed


def build_pool(cfg: VideoTrainConfig) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) clips: synthetic seeds [0, N) and real windows from the first 80%."""
    from kinema.data.synthetic import generate
    from kinema.media import read_video

    T = max(17, cfg.num_frames)
    clips = []
    for s in tqdm(range(cfg.synthetic_clips), desc="render synthetic", leave=False):
        clips.append(generate(s, (cfg.size, cfg.size), cfg.fps, T / cfg.fps).frames[:T])
    files = [p for d in cfg.real_dirs for p in sorted(Path(d).glob("*")) if p.suffix.lower() in (".avi", ".mp4", ".mkv", ".webm", ".mov")]
    rng = random.Random(cfg.seed)
    per_file = math.ceil(cfg.real_windows / max(1, len(files))) if files else 0
    for f in tqdm(files, desc="read real", leave=False):
        try:
            import av

            with av.open(str(f)) as c:
                dur = (c.duration or 0) / 1e6
            for _ in range(per_file):
                start = rng.uniform(0, max(0.0, dur * REAL_TRAIN_FRACTION - T / cfg.fps))
                clip = read_video(f, fps=cfg.fps, size=(cfg.size, cfg.size), start=start, duration=T / cfg.fps,
                                  audio=False, recover=True)
                if clip.frames.shape[0] >= T:
                    clips.append(clip.frames[:T])
        except Exception as e:  # a bad file must not stop training
            print(f"skipping {f}: {e}")
    return torch.stack(clips)


def sample_batch(pool: torch.Tensor, cfg: VideoTrainConfig, gen: torch.Generator, image: bool) -> torch.Tensor:
    """float (B, 3, T, crop, crop) in [-1, 1] random crops (random time offset, random flip)."""
    N, T, H, W, _ = pool.shape
    frames = 1 if image else cfg.num_frames
    out = []
    for _ in range(cfg.batch_size):
        i = int(torch.randint(N, (1,), generator=gen))
        t0 = int(torch.randint(T - frames + 1, (1,), generator=gen))
        y = int(torch.randint(H - cfg.crop + 1, (1,), generator=gen))
        x = int(torch.randint(W - cfg.crop + 1, (1,), generator=gen))
        clip = pool[i, t0 : t0 + frames, y : y + cfg.crop, x : x + cfg.crop]
        if torch.rand((), generator=gen) < 0.5:
            clip = clip.flip(2)
        out.append(clip)
    return torch.stack(out).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, l2_weight: float, object_weight: float) -> torch.Tensor:
    """L1 + l2_weight * L2, per pixel weighted by 1 + object_weight on pixels whose colour is more than
    0.1 from the clip's median (per channel): small objects on a plain background would otherwise
    hardly register in a mean over the frame. x, x_hat (B, 3, T, H, W) in [-1, 1]."""
    err = (x_hat - x).abs() + l2_weight * (x_hat - x) ** 2
    if object_weight <= 0:
        return err.mean()
    w = 1 + object_weight * object_pixels(x, 0.1).float()  # (B, 1, T, H, W)
    return (err * w).sum() / (w.sum() * 3)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 10 * math.log10(4.0 / max(mse, 1e-10))  # signals in [-1, 1]: peak-to-peak 2


def _write_sample(path: Path, x: torch.Tensor, x_hat: torch.Tensor, fps: float) -> None:
    from kinema.media import Clip, write_video

    side = torch.cat([x, x_hat.clamp(-1, 1)], dim=-1)[0]  # (3, T, H, 2W): original | reconstruction
    frames = ((side.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    write_video(path, Clip(frames, fps))


def train(cfg: VideoTrainConfig, progress: bool = True) -> VideoTokenizer:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.run_dir)
    model = VideoTokenizer(cfg.model)
    if cfg.init_from:
        init = VideoTokenizer.from_pretrained(cfg.init_from)
        if to_dict(init.cfg) != to_dict(cfg.model):
            raise ConfigError(f"init_from {cfg.init_from} has model config {to_dict(init.cfg)}, not {to_dict(cfg.model)}")
        model.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
    if cfg.train_decoder_only and not cfg.init_from:
        raise ConfigError("train_decoder_only needs init_from (the encoder whose codes the decoder learns to read)")
    trained = model.decoder if cfg.train_decoder_only else model
    model.requires_grad_(not cfg.train_decoder_only)
    trained.requires_grad_(True)
    disc = Discriminator3d(base=16)
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.99))
    ema = EMA(model, cfg.ema_decay)
    lecam = LeCAM()
    ckpts = CheckpointManager(run / "checkpoints", keep=cfg.keep_checkpoints)
    log = MetricsLogger(run)
    guard = NonFiniteGuard()
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    latest = ckpts.load_latest()
    if latest is not None:
        model.load_state_dict(latest.modules["model"])
        disc.load_state_dict(latest.modules["disc"])
        ema.load_state_dict(latest.modules["ema"])
        opt.load_state_dict(latest.state["opt"])
        opt_d.load_state_dict(latest.state["opt_d"])
        lecam.real, lecam.fake = latest.state["lecam"]
        gen.set_state(latest.state["gen"])
        set_rng_state(latest.state["rng"])
        start = latest.step
        log.truncate_after(start)
        print(f"resumed from {latest.path} (step {start})")
    pool = build_pool(cfg)
    print(f"training pool: {tuple(pool.shape)} clips; model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="video tokenizer", disable=not progress)
    for step in bar:
        if cfg.stop_after and step - start >= cfg.stop_after:
            return model
        model.train()
        set_lr(opt, cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps))
        image = torch.rand((), generator=gen) < cfg.image_fraction
        x = sample_batch(pool, cfg, gen, bool(image))
        use_gan = step >= cfg.disc_start and not image
        with autocast("cpu"):
            if cfg.train_decoder_only:
                with torch.no_grad():  # LFQ's sign quantisation: exactly the latents of the codes
                    q = torch.where(model.encoder(x) > 0, 1.0, -1.0)
                x_hat, aux = model.decoder(q), torch.zeros(())
            else:
                x_hat, _, aux = model(x)
            x_hat = x_hat.float()
            rec = reconstruction_loss(x_hat, x, cfg.l2_weight, cfg.object_weight)
            loss = rec + aux
            g_loss = torch.zeros(())
            if use_gan:
                g_loss = g_hinge_loss(disc(x_hat).float())
                loss = loss + cfg.disc_weight * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if guard.check(loss, trained.parameters(), step):
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            opt.step()
            ema.update(model)
        d_loss = torch.zeros(())
        if use_gan:
            with autocast("cpu"):
                d_real, d_fake = disc(x).float(), disc(x_hat.detach()).float()
                d_loss = d_hinge_loss(d_real, d_fake) + cfg.lecam_weight * lecam.penalty(d_real, d_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if torch.isfinite(d_loss) and all(torch.isfinite(p.grad).all() for p in disc.parameters() if p.grad is not None):
                lecam.update(d_real.detach(), d_fake.detach())
                torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
                opt_d.step()
            else:
                print(f"step {step}: non-finite discriminator loss/gradient, discriminator step skipped")
        if step % 10 == 0:
            p = psnr(x, x_hat.detach())
            log.log(step, loss=loss.item(), rec_loss=rec.item(), lfq_loss=aux.item(), g_loss=g_loss.item(),
                    d_loss=d_loss.item(), psnr=p)
            bar.set_postfix(rec=f"{rec.item():.4f}", psnr=f"{p:.1f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpts.save(done, {"model": model.state_dict(), "disc": disc.state_dict(), "ema": ema.state_dict()},
                       {"opt": opt.state_dict(), "opt_d": opt_d.state_dict(), "lecam": [lecam.real, lecam.fake],
                        "gen": gen.get_state(), "rng": rng_state()})
            log.plot()
        if done % cfg.sample_every == 0 or done == cfg.steps:
            ema.shadow.eval()
            xs = sample_batch(pool, VideoTrainConfig(**{**cfg.__dict__, "batch_size": 1, "crop": cfg.size, "num_frames": 17}),
                              torch.Generator().manual_seed(done), False)
            with torch.no_grad():
                _write_sample(run / "samples" / f"step_{done:06d}.mp4", xs, ema.shadow.decode(ema.shadow.encode(xs)), cfg.fps)
    ema.shadow.save_pretrained(run / "final")
    return ema.shadow
