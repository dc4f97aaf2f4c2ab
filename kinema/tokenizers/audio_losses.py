"""Losses and quality metrics for the audio codec.

Reconstruction losses follow SoundStream (arXiv 2107.03312) and EnCodec (Defossez et al., arXiv
2210.13438): a multi-resolution STFT loss (spectral convergence + log magnitude, Yamamoto et al.,
Parallel WaveGAN, arXiv 1910.11480) and a multi-scale log-mel L1 loss (torchaudio
MelSpectrogram). Adversarial hinge losses and feature matching go with the STFT discriminator in
``audio_discriminator.py``. Metrics used by the benchmark: SI-SNR, log-mel distance, multi-res STFT
distance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    # x: (B, 1, N) -> (B, F, T) magnitude, computed in fp32
    win = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.float().reshape(-1, x.shape[-1]), n_fft, hop, window=win, return_complex=True)
    return spec.abs().clamp_min(1e-7)


class MultiResolutionSTFTLoss(nn.Module):
    """Sum over FFT sizes of spectral convergence + L1 of log magnitudes."""

    def __init__(self, ffts: tuple[int, ...] = (512, 1024, 2048, 256, 128), floor: float = 1e-7):
        super().__init__()
        self.ffts = ffts
        self.floor = floor  # added to magnitudes before the log: how quiet a bin still counts

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = y.new_zeros((), dtype=torch.float32)
        for n in self.ffts:
            a, b = _stft_mag(y_hat, n, n // 4), _stft_mag(y, n, n // 4)
            # spectral convergence over the whole batch, so a silent item cannot blow it up
            sc = torch.linalg.norm(b - a) / torch.linalg.norm(b).clamp_min(1e-3)
            total = total + sc + F.l1_loss((a + self.floor).log(), (b + self.floor).log())
        return total / len(self.ffts)


class MultiScaleMelLoss(nn.Module):
    """L1 on log-mel spectrograms at several window sizes (after EnCodec's multi-scale mel loss)."""

    def __init__(self, sample_rate: int = 16000, ffts: tuple[int, ...] = (256, 512, 1024, 2048), n_mels: int = 64,
                 floor: float = 1e-5):
        super().__init__()
        import torchaudio

        # Added to mel magnitudes before the log. A tiny floor makes near-silent bins dominate the
        # loss, and a decoder that cannot yet render a clean tone learns to play it quietly rather
        # than add audible error around it; a floor near the level that matters keeps tones loud.
        self.floor = floor
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n, hop_length=n // 4, n_mels=min(n_mels, n // 8), power=1.0)
            for n in ffts
        )

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = y.new_zeros((), dtype=torch.float32)
        for mel in self.mels:
            a, b = mel(y_hat.float()), mel(y.float())
            total = total + F.l1_loss(torch.log(a + self.floor), torch.log(b + self.floor))
        return total / len(self.mels)


# ----------------------------------------------------------------------------- adversarial
def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss averaged over sub-discriminators."""
    loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    return loss / len(real_logits)


def hinge_g_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - f).mean() for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    """Relative L1 between discriminator features of real and decoded audio (EnCodec eq. 2)."""
    total, count = 0.0, 0
    for rf, ff in zip(real_feats, fake_feats):
        for r, f in zip(rf, ff):
            r = r.detach().float()
            total = total + F.l1_loss(f.float(), r) / r.abs().mean().clamp_min(1e-5)
            count += 1
    return total / max(1, count)


# ----------------------------------------------------------------------------- metrics
@torch.no_grad()
def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB per item; est, ref: (B, 1, N)."""
    est = est.float().flatten(1)
    ref = ref.float().flatten(1)
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - proj
    return 10 * torch.log10((proj.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


@torch.no_grad()
def log_mel_distance(est: torch.Tensor, ref: torch.Tensor, sample_rate: int = 16000, n_fft: int = 1024, n_mels: int = 80) -> torch.Tensor:
    """Mean |log10 mel(est) - log10 mel(ref)| per item (power mel, floor 1e-5); est, ref: (B, 1, N)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels).to(ref.device)
    a = torch.log10(mel(est.float()).clamp_min(1e-5))
    b = torch.log10(mel(ref.float()).clamp_min(1e-5))
    return (a - b).abs().flatten(1).mean(-1)


@torch.no_grad()
def stft_distance(est: torch.Tensor, ref: torch.Tensor, ffts: tuple[int, ...] = (256, 512, 1024, 2048)) -> torch.Tensor:
    """Multi-resolution STFT distance: mean |log10 |STFT(est)| - log10 |STFT(ref)|| over resolutions
    (magnitudes floored at 1e-4 so silence does not dominate); est, ref: (B, 1, N) -> (B,)."""
    total = 0.0
    for n in ffts:
        a = _stft_mag(est, n, n // 4).clamp_min(1e-4).log10()
        b = _stft_mag(ref, n, n // 4).clamp_min(1e-4).log10()
        total = total + (a - b).abs().flatten(1).mean(-1)
    return total / len(ffts)
