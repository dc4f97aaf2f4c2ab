"""A small 3D convolutional patch discriminator and the GAN losses for the video tokenizer.

Hinge loss with LeCAM regularisation (Tseng et al., "Regularizing Generative Adversarial Networks
under Limited Data", CVPR 2021), which MAGVIT-v2 uses to keep the discriminator in check.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Discriminator3d(nn.Module):
    def __init__(self, base: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(3, base, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2)]
        c = base
        for i in range(1, layers):
            cout = base * 2**i
            mods += [nn.Conv3d(c, cout, 4, stride=2, padding=1), nn.GroupNorm(min(32, cout // 4), cout), nn.LeakyReLU(0.2)]
            c = cout
        mods.append(nn.Conv3d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> patch logits
        return self.net(x)


class LeCAM:
    """EMA of the discriminator's mean outputs on real and fake, and the LeCAM penalty."""

    def __init__(self, decay: float = 0.99):
        self.decay = decay
        self.real = 0.0
        self.fake = 0.0

    def update(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        self.real = self.decay * self.real + (1 - self.decay) * float(d_real.mean())
        self.fake = self.decay * self.fake + (1 - self.decay) * float(d_fake.mean())

    def penalty(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return F.relu(d_real - self.fake).pow(2).mean() + F.relu(self.real - d_fake).pow(2).mean()


def d_hinge_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def g_hinge_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()
