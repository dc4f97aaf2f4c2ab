"""Training loop for the audio codec: data, losses, GAN schedule, resumable checkpoints.

Objective after SoundStream (arXiv 2107.03312) / EnCodec (arXiv 2210.13438): multi-scale mel L1 +
multi-resolution STFT + time-domain L1 + RVQ commitment, and from ``adv_start`` on a hinge adversarial loss from a
multi-scale STFT discriminator plus feature matching. bf16 autocast on CPU for the conv nets; the
quantizer runs in fp32. Resumes from the newest verified checkpoint in ``run_dir/checkpoints``.

``train.train_decoder_only`` fine-tunes only the decoder of a trained codec (start from its
checkpoint): codes are computed by the frozen inference path, so tokens extracted before stay valid.
``train.freeze_codebooks`` fine-tunes encoder and decoder around the trained codec's fixed codebooks:
each code vector keeps its meaning (the decoder still renders old tokens), the encoder picks new codes.
``train.schedule_from`` restarts the warm-up + cosine schedule at the parent's last step.
"""
from __future__ import annotations

import math
import random
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kinema.checkpoint import CheckpointManager, rng_state, set_rng_state
from kinema.data.procedural_music import procedural_music
from kinema.errors import ConfigError, MediaError
from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig, CodecOutput
from kinema.tokenizers.audio_discriminator import MultiScaleSTFTDiscriminator
from kinema.tokenizers.audio_losses import (
    MultiResolutionSTFTLoss, MultiScaleMelLoss, feature_matching_loss, hinge_d_loss, hinge_g_loss, log_mel_distance,
)
from kinema.training import MetricsLogger, NonFiniteGuard, autocast, cosine_lr, set_lr

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".mp4", ".mkv", ".avi", ".webm")


@dataclass
class AudioDataConfig:
    folders: list[str] = field(default_factory=list)  # files with these suffixes are read recursively
    holdout: list[str] = field(default_factory=list)  # file names never trained on (the bench uses them)
    segment_seconds: float = 0.64
    synthetic_fraction: float = 0.3  # share of each batch from the synthetic world (bounce tones)
    synthetic_seeds: int = 200  # training seeds 0..N-1; seeds >= 1_000_000 are held out
    min_gain: float = 0.2
    music_fraction: float = 0.0  # share of procedural instrument phrases (kinema.data.procedural_music)
    speed_perturb: float = 0.0  # real clips are resampled by a random factor in [1/(1+s), 1+s] (pitch and tempo)
    tone_fraction: float = 0.0  # share of steady sinusoids (steady_tones): ringing partials, whistles


@dataclass
class AudioTrainLoopConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    disc_lr: float = 2e-4
    warmup: int = 50
    adv_start: int = 600
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    commit_weight: float = 1.0
    wave_weight: float = 1.0  # time-domain L1 (EnCodec's l_t), keeps phase coherent
    adv_weight: float = 0.1
    fm_weight: float = 1.0
    mel_floor: float = 1e-5  # magnitude floor inside the mel loss's log (MultiScaleMelLoss.floor)
    stft_floor: float = 1e-7  # magnitude floor inside the STFT loss's log
    grad_clip: float = 1.0
    max_minutes: float = 30.0
    ckpt_every: int = 100
    sample_every: int = 200
    log_every: int = 10
    seed: int = 0
    bf16: bool = True
    # Decoder-only fine-tune: the encoder and the codebooks are frozen, so every code (and every
    # token an LM was trained on) keeps its meaning; only the decoder (and the discriminator) learn.
    # Quantizer dropout is kept: each batch decodes a random number of levels, 1..num_quantizers.
    train_decoder_only: bool = False
    # Encoder + decoder fine-tune around fixed codebooks (no EMA update): every code vector keeps
    # its meaning, so tokens extracted before still decode, but the encoder may pick other codes for
    # the same audio (re-extract tokens to train an LM on the new encoder's codes).
    freeze_codebooks: bool = False
    # Step at which the warm-up + cosine schedule starts (0: the run's start). A fine-tune resumed
    # from a parent checkpoint at step S sets it to S to get a fresh schedule over S .. steps.
    schedule_from: int = 0


@dataclass
class AudioTrainConfig:
    run_dir: str = "runs/audio_codec"
    export_dir: str = ""  # where save_pretrained writes the final codec ("" -> run_dir/final)
    model: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    train: AudioTrainLoopConfig = field(default_factory=AudioTrainLoopConfig)


# ----------------------------------------------------------------------------- audio I/O
def load_audio_file(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Any audio/video file -> float (N,) mono at ``sample_rate`` (kinema.media.read_audio, channels averaged)."""
    from kinema.media import read_audio

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"audio file not found: {path}")
    wav, _ = read_audio(path, sample_rate=sample_rate, mono=True)  # (1, N)
    return wav.float().reshape(-1)


def write_wav(path: str | Path, wav: torch.Tensor, sample_rate: int) -> None:
    """float (N,) or (1, N) in [-1, 1] -> 16-bit PCM mono wav."""
    x = (wav.detach().float().reshape(-1).clamp(-1, 1) * 32767).round().short().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(x.tobytes())


def list_audio_files(folders: list[str]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        p = Path(folder)
        if not p.exists():
            raise MediaError(f"training folder not found: {p}")
        files += sorted(f for f in ([p] if p.is_file() else p.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES)
    return files


def synthetic_audio(seed: int, seconds: float, sample_rate: int) -> torch.Tensor | None:
    """Sound of one synthetic-world clip (kinema.data.synthetic) as (N,), or None if unavailable."""
    try:
        from kinema.data import synthetic
    except ImportError:
        return None
    try:
        clip = synthetic.generate(seed, size=(32, 32), seconds=seconds, sample_rate=sample_rate)
    except TypeError:
        clip = synthetic.generate(seed)
    audio = getattr(clip, "audio", None)
    if audio is None:
        return None
    audio = torch.as_tensor(audio, dtype=torch.float32)
    return audio.reshape(-1, audio.shape[-1]).mean(0)


def bounce_tones(rng: random.Random, n: int, sample_rate: int) -> torch.Tensor:
    """Procedural stand-in for the synthetic world's sounds: decaying harmonic tone bursts."""
    t = torch.arange(n) / sample_rate
    out = torch.zeros(n)
    for _ in range(rng.randint(1, 4)):
        start = rng.uniform(-0.1, n / sample_rate)
        f0 = rng.uniform(150, 1800)
        decay = rng.uniform(4, 30)
        tt = (t - start).clamp_min(0)
        env = torch.exp(-decay * tt) * (t >= start)
        tone = sum(rng.uniform(0.2, 1) / h * torch.sin(2 * math.pi * f0 * h * tt) for h in range(1, rng.randint(1, 4) + 1))
        out += rng.uniform(0.2, 0.8) * env * tone
    if rng.random() < 0.3:
        out += rng.uniform(0.001, 0.02) * torch.randn(n, generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))
    return out / out.abs().max().clamp_min(1.0)


def steady_tones(rng: random.Random, n: int, sample_rate: int) -> torch.Tensor:
    """One to three sustained sinusoids (40 Hz .. 6 kHz, log-uniform) with slow decays and random phases.

    What a bar's ringing partial or a whistle looks like to the codec: a frame-rate-incommensurate
    frequency held for many frames, which a convolutional decoder can only render by carrying the
    phase from frame to frame (a constant latent gives harmonics of the frame rate only).
    """
    t = torch.arange(n) / sample_rate
    out = torch.zeros(n)
    for _ in range(rng.randint(1, 3)):
        f = math.exp(rng.uniform(math.log(40.0), math.log(6000.0)))
        start = rng.uniform(-1.0, 0.5 * n / sample_rate)  # most start before the segment: already ringing
        tt = (t - start).clamp_min(0)
        env = torch.exp(-rng.uniform(0.0, 4.0) * tt) * (t >= start)
        out += rng.uniform(0.2, 1.0) * env * torch.sin(2 * math.pi * f * tt + rng.uniform(0, 2 * math.pi))
    return out / out.abs().max().clamp_min(1e-4)


class SegmentSampler:
    """Random fixed-length segments from real recordings and synthetic-world audio."""

    def __init__(self, cfg: AudioDataConfig, sample_rate: int, hop: int, seed: int):
        fractions = (cfg.synthetic_fraction, cfg.music_fraction, cfg.tone_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ConfigError(f"data.synthetic_fraction ({cfg.synthetic_fraction}), data.music_fraction "
                              f"({cfg.music_fraction}) and data.tone_fraction ({cfg.tone_fraction}) must be >= 0 "
                              "and sum to at most 1")
        if not 0 <= cfg.speed_perturb <= 1:
            raise ConfigError(f"data.speed_perturb must be in [0, 1] (speeds 1/(1+s) .. 1+s), got {cfg.speed_perturb}")
        self.cfg = cfg
        self.sr = sample_rate
        self.n = max(hop, int(round(cfg.segment_seconds * sample_rate / hop)) * hop)
        self.rng = random.Random(seed)
        holdout = set(cfg.holdout)
        self.files = [f for f in list_audio_files(cfg.folders) if f.name not in holdout]
        self.clips = [w for w in (load_audio_file(f, sample_rate) for f in self.files) if w.numel() >= self.n // 4]
        self.weights = [c.numel() for c in self.clips]  # real clips are drawn in proportion to their length
        self.synth: list[torch.Tensor] = []
        for s in range(cfg.synthetic_seeds if cfg.synthetic_fraction > 0 else 0):
            a = synthetic_audio(s, 4.0, sample_rate)
            if a is None:
                break
            self.synth.append(a)
        if not self.clips and cfg.synthetic_fraction <= 0:
            raise MediaError(f"no usable training audio in {cfg.folders}")

    def _crop(self, w: torch.Tensor, n: int | None = None) -> torch.Tensor:
        n = n or self.n
        if w.numel() < n:
            w = torch.nn.functional.pad(w, (0, n - w.numel()))
        i = self.rng.randrange(0, w.numel() - n + 1)
        return w[i : i + n]

    def _speed(self, w: torch.Tensor) -> torch.Tensor:
        """A crop of ``w`` played at a random speed (pitch and tempo together), ``self.n`` samples."""
        import torchaudio.functional as AF

        s = self.cfg.speed_perturb
        new_rate = int(round(100 / math.exp(self.rng.uniform(-math.log1p(s), math.log1p(s)))))  # 1% speed steps: short filters
        crop = self._crop(w, math.ceil(self.n * 100 / new_rate) + 64)  # 64 samples of margin for the filter
        return AF.resample(crop, 100, new_rate)[16: 16 + self.n]

    def _source(self) -> str:
        """Which kind of audio the next segment is: "synthetic", "music", "tone" or "real"."""
        cfg = self.cfg
        if cfg.music_fraction <= 0 and cfg.tone_fraction <= 0:  # the draws of runs made before those sources existed
            return "synthetic" if not self.clips or self.rng.random() < cfg.synthetic_fraction else "real"
        u = self.rng.random()
        if u < cfg.synthetic_fraction:
            return "synthetic"
        if u < cfg.synthetic_fraction + cfg.music_fraction:
            return "music"
        if u < cfg.synthetic_fraction + cfg.music_fraction + cfg.tone_fraction:
            return "tone"
        return "real" if self.clips else "synthetic"

    def _one(self) -> torch.Tensor:
        source = self._source()
        if source == "music":
            seg = procedural_music(self.rng, self.n, self.sr)
        elif source == "tone":
            seg = steady_tones(self.rng, self.n, self.sr)
        elif source == "synthetic":
            seg = None
            for _ in range(8 if self.synth else 0):  # synthetic clips are mostly silence between bounces
                seg = self._crop(self.rng.choice(self.synth))
                if float(seg.abs().max()) > 1e-3:
                    break
                seg = None
            if seg is None:
                seg = bounce_tones(self.rng, self.n, self.sr)
        else:
            clip = self.rng.choices(self.clips, weights=self.weights)[0]
            seg = self._speed(clip) if self.cfg.speed_perturb > 0 else self._crop(clip)
        peak = seg.abs().max().clamp_min(1e-4)
        return seg / peak * self.rng.uniform(self.cfg.min_gain, 0.95)

    def batch(self, b: int) -> torch.Tensor:
        return torch.stack([self._one() for _ in range(b)])[:, None]  # (B, 1, n)

    def state(self) -> dict:
        st = self.rng.getstate()
        return {"version": st[0], "keys": list(st[1]), "gauss": st[2]}

    def set_state(self, s: dict) -> None:
        self.rng.setstate((s["version"], tuple(s["keys"]), s["gauss"]))


# ----------------------------------------------------------------------------- training
def train_audio_codec(cfg: AudioTrainConfig, progress: bool = True) -> AudioCodec:
    """Train (or resume) a codec; writes checkpoints, metrics, loss curve, samples; returns the model."""
    from tqdm import tqdm

    tc = cfg.train
    if not 0 <= tc.schedule_from < max(1, tc.steps):
        raise ConfigError(f"train.schedule_from ({tc.schedule_from}) must be in [0, train.steps={tc.steps})")
    torch.manual_seed(tc.seed)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    model = AudioCodec(cfg.model).train()
    if tc.train_decoder_only:
        model.encoder.requires_grad_(False)
    if tc.train_decoder_only or tc.freeze_codebooks:
        model.rvq.requires_grad_(False)
    disc = MultiScaleSTFTDiscriminator()
    # all parameters stay in the optimizer (so checkpoints of either mode load); frozen ones get no grad
    opt_g = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.9))
    data = SegmentSampler(cfg.data, model.sample_rate, model.hop_length, tc.seed)
    mel_loss, stft_loss = MultiScaleMelLoss(model.sample_rate, floor=tc.mel_floor), MultiResolutionSTFTLoss(floor=tc.stft_floor)
    mgr = CheckpointManager(run / "checkpoints", keep=2)
    log = MetricsLogger(run)
    guard = NonFiniteGuard()
    step = 0
    ck = mgr.load_latest()
    if ck is None and (tc.train_decoder_only or tc.freeze_codebooks):
        mode = "train_decoder_only" if tc.train_decoder_only else "freeze_codebooks"
        raise ConfigError(f"train.{mode} fine-tunes a trained codec, but {mgr.root} holds no "
                          "checkpoint: copy the parent run's last checkpoint there first (see scripts/train_default.sh)")
    if ck is not None:
        model.load_state_dict(ck.modules["model"])
        disc.load_state_dict(ck.modules["disc"])
        opt_g.load_state_dict(ck.state["opt_g"])
        opt_d.load_state_dict(ck.state["opt_d"])
        set_rng_state(ck.state["rng"])
        data.set_state(ck.state["data"])
        step = ck.step
        log.truncate_after(step)
        print(f"resumed from {ck.path} at step {step}")
    eval_wav = data.batch(2)[:, :, : data.n]  # fixed probe for samples (drawn after resume: deterministic per run)

    def save() -> None:
        mgr.save(step, {"model": model.state_dict(), "disc": disc.state_dict()},
                 {"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng_state(), "data": data.state()})

    t0 = time.time()
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, desc="audio codec")
    while step < tc.steps and (time.time() - t0) / 60 < tc.max_minutes:
        x = data.batch(tc.batch_size)  # (B, 1, n)
        set_lr(opt_g, cosine_lr(max(0, step - tc.schedule_from), tc.lr, tc.warmup, tc.steps - tc.schedule_from))
        adv = step >= tc.adv_start
        with autocast("cpu", tc.bf16):
            if tc.train_decoder_only:
                out = decoder_only_forward(model, x)
            elif tc.freeze_codebooks:
                out = frozen_codebook_forward(model, x)
            else:
                out = model(x)
            y = out.wav.float()
            l_mel, l_stft = mel_loss(y, x), stft_loss(y, x)
            l_wave = (y - x).abs().mean()
            loss = tc.mel_weight * l_mel + tc.stft_weight * l_stft + tc.wave_weight * l_wave + tc.commit_weight * out.commit_loss
            l_g = l_fm = torch.zeros(())
            if adv:
                fake_logits, fake_feats = disc(y)
                with torch.no_grad():
                    _, real_feats = disc(x)
                l_g, l_fm = hinge_g_loss(fake_logits), feature_matching_loss(real_feats, fake_feats)
                loss = loss + tc.adv_weight * l_g + tc.fm_weight * l_fm
        opt_g.zero_grad(set_to_none=True)
        if guard.check(loss, step=step):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt_g.step()
        l_d = torch.zeros(())
        if adv:
            with autocast("cpu", tc.bf16):
                real_logits, _ = disc(x)
                fake_logits, _ = disc(y.detach())
                l_d = hinge_d_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            if guard.check(l_d, step=step):
                l_d.backward()
                torch.nn.utils.clip_grad_norm_(disc.parameters(), tc.grad_clip)
                opt_d.step()
        step += 1
        bar.update(1)
        if step % tc.log_every == 0:
            vals = dict(loss=loss.item(), mel_loss=l_mel.item(), stft_loss=l_stft.item(), wave_loss=l_wave.item(), commit_loss=out.commit_loss.item(),
                        g_loss=l_g.item(), fm_loss=l_fm.item(), d_loss=l_d.item())
            log.log(step, **vals)
            bar.set_postfix(mel=f"{vals['mel_loss']:.3f}", stft=f"{vals['stft_loss']:.3f}")
        if step % tc.ckpt_every == 0:
            save()
        if step % tc.sample_every == 0:
            write_samples(model, eval_wav, run / "samples" / f"step_{step:06d}")
            log.plot()
    bar.close()
    save()
    log.plot()
    model.eval()
    write_samples(model, eval_wav, run / "samples" / "final")
    model.save_pretrained(cfg.export_dir or run / "final")
    return model


def decoder_only_forward(model: AudioCodec, wav: torch.Tensor) -> CodecOutput:
    """Training pass of a decoder-only fine-tune: frozen inference-path codes -> trainable decoder.

    The codes come from :meth:`AudioCodec.encode` (no grad, no codebook update), exactly as token
    extraction computes them; the number of levels is drawn uniformly from 1..num_quantizers per
    batch (quantizer dropout), so the decoder keeps serving every bitrate.
    """
    q = int(torch.randint(1, model.num_quantizers + 1, ()).item())
    codes = model.encode(wav, kbps=model.kbps_for_quantizers(q))  # (B, q, n), no grad
    with torch.no_grad():
        lat = model.codes_to_latent(codes).float()
    wav_hat = model.decoder(lat)
    return CodecOutput(wav=wav_hat, codes=codes, commit_loss=torch.zeros(()))


def frozen_codebook_forward(model: AudioCodec, wav: torch.Tensor) -> CodecOutput:
    """Training pass with frozen codebooks: trainable encoder -> fixed greedy RVQ -> trainable decoder.

    The codebooks are not updated (no EMA step, no gradient), so every code vector keeps its
    meaning and a decoder trained this way still renders the codes an LM was trained on; the
    encoder learns to pick better codes. Codes are the inference path's greedy residual indices;
    the decoder sees them through a straight-through estimator (its gradient reaches the encoder
    unchanged), and the SoundStream commitment loss pulls each level's residual towards its code.
    The number of levels is drawn uniformly from 1..num_quantizers per batch (quantizer dropout).
    """
    q = int(torch.randint(1, model.num_quantizers + 1, ()).item())
    z = model.encoder(wav)  # (B, D, n)
    with torch.autocast(device_type=wav.device.type, enabled=False):
        z = z.float()
        codes = model._quantize_indices(z.detach(), q)  # (B, q, n)
        commit = z.new_zeros(())
        for i in range(1, q + 1):  # level i's residual minus its code = z minus the codes of levels 1..i
            approx = model.codes_to_latent(codes[:, :i]).float().detach()  # (B, D, n)
            commit = commit + (z - approx).pow(2).mean()
        zq = z + (approx - z).detach()
    wav_hat = model.decoder(zq)
    return CodecOutput(wav=wav_hat, codes=codes, commit_loss=commit)


@torch.no_grad()
def write_samples(model: AudioCodec, wav: torch.Tensor, out_dir: Path) -> dict[str, float]:
    """Reference and reconstructions at each of 1.5/3/6 kbps (when supported); returns mel distances."""
    was_training = model.training
    model.eval()
    dists = {}
    for i in range(wav.shape[0]):
        write_wav(out_dir / f"{i}_ref.wav", wav[i], model.sample_rate)
    for kbps in (1.5, 3.0, 6.0):
        try:
            codes = model.encode(wav, kbps=kbps)
        except ValueError:
            continue
        rec = model.decode(codes)[..., : wav.shape[-1]]
        dists[f"mel_{kbps}"] = float(log_mel_distance(rec, wav, model.sample_rate).mean())
        for i in range(wav.shape[0]):
            write_wav(out_dir / f"{i}_{kbps}kbps.wav", rec[i], model.sample_rate)
    model.train(was_training)
    return dists
