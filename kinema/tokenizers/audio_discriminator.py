"""Multi-scale STFT discriminator for the audio codec.

After SoundStream's STFT discriminator and EnCodec's MS-STFTD (Defossez et al., arXiv 2210.13438,
section 3.4): each sub-discriminator takes the complex STFT (real and imaginary parts as two
channels) at one window size and applies 2D convs dilated along time, strided along frequency.
It returns logits and intermediate feature maps (for the feature-matching loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # x: (B, 1, N) -> logits (B, 1, T', F'), features
        win = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x.float().reshape(-1, x.shape[-1]), self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, T, F)
        feats = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several :class:`STFTDiscriminator` at different window sizes."""

    def __init__(self, ffts: tuple[int, ...] = (1024, 512, 256), channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(n, channels) for n in ffts)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, feats = [], []
        for d in self.discs:
            lg, ft = d(x)
            logits.append(lg)
            feats.append(ft)
        return logits, feats
