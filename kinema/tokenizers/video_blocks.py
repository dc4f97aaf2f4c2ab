"""Causal 3D convolution blocks for the video tokenizer (MAGVIT-v2, arXiv 2310.05737).

Everything that mixes time is causal: convolutions pad only the past (by repeating the first
frame), and normalisation is per frame, so output frame t never depends on input frames after t
and the first frame is coded on its own. Temporal down-sampling maps 1+2m frames to 1+m (the
first frame keeps its own slot); temporal up-sampling is its depth-to-space inverse.

A *local* encoder (``local=True``) uses :class:`ChannelNorm` (statistics of one position's channels)
and replicates the border instead of zero padding, so a token depends only on the pixels in its
receptive field: a flat clip gets one code everywhere and a static background keeps its codes while
objects move elsewhere (``kinema.eval.code_locality`` measures this). Group norm over a frame and
zero padding make every token depend on the whole frame and on its distance to the border.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame separately: keeps the network causal in time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        B = x.shape[0]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=B)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each (t, h, w) position, with a per-channel scale and shift:
    no statistic crosses positions, so the network stays causal and spatially local."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        y = F.layer_norm(x.movedim(1, -1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


def norm(channels: int, local: bool = False) -> nn.Module:
    if local:
        return ChannelNorm(channels)
    return FrameGroupNorm(min(32, channels // 4 if channels >= 8 else 1), channels, eps=1e-6)


class CausalConv3d(nn.Module):
    """Conv3d padded on the past only (first frame repeated), 'same' in space (zeros, or the border
    replicated when ``replicate``)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int] = 3, stride=(1, 1, 1),
                 replicate: bool = False):
        super().__init__()
        self.pad_mode = "replicate" if replicate else "constant"
        kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.time_pad = kt - 1
        self.space_pad = (kw // 2, kw // 2, kh // 2, kh // 2)
        self.conv = nn.Conv3d(cin, cout, (kt, kh, kw), stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if any(self.space_pad):
            x = F.pad(x, (*self.space_pad, 0, 0), mode=self.pad_mode)
        return self.conv(x)


class ResBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, local: bool = False):
        super().__init__()
        self.block = nn.Sequential(norm(cin, local), nn.SiLU(), CausalConv3d(cin, cout, 3, replicate=local),
                                   norm(cout, local), nn.SiLU(), CausalConv3d(cout, cout, 3, replicate=local))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class Downsample(nn.Module):
    """Spatial 2x (strided conv per frame) and optionally temporal 2x (1+2m -> 1+m frames)."""

    def __init__(self, cin: int, cout: int, temporal: bool, local: bool = False):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(cin, cout, (3 if temporal else 1, 4, 4), stride=(2 if temporal else 1, 2, 2),
                                 replicate=local)
        # pad so a 4x4 kernel with stride 2 halves H and W exactly
        self.conv.space_pad = (1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Depth-to-space: spatial 2x and optionally temporal 2x (1+m -> 1+2m frames)."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.ft = 2 if temporal else 1
        self.conv = CausalConv3d(cin, cout * 4 * self.ft, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(self.conv(x), "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=self.ft, fh=2, fw=2)
        return y[:, :, self.ft - 1 :]  # the first latent frame stands for one frame only


class Encoder(nn.Module):
    """Optional space-to-depth by ``patch`` first (cheap on CPU), then conv stages that each halve
    H and W (and T where ``temporal_downs`` says), then a 1x1 projection to ``z_channels``.
    ``local``: channel norm and replicated borders (see the module docstring)."""

    def __init__(self, base: int, mults: tuple[int, ...], temporal_downs: tuple[bool, ...], z_channels: int,
                 num_res: int = 1, patch: int = 1, local: bool = False):
        super().__init__()
        chans = [base * m for m in mults]
        self.patch = patch
        self.conv_in = CausalConv3d(3 * patch * patch, chans[0], 3, replicate=local)
        layers: list[nn.Module] = []
        c = chans[0]
        for i, (cout, tdown) in enumerate(zip(chans, temporal_downs)):
            for _ in range(num_res):
                layers.append(ResBlock3d(c, cout, local))
                c = cout
            nxt = chans[min(i + 1, len(chans) - 1)]
            layers.append(Downsample(c, nxt, tdown, local))
            c = nxt
        layers += [ResBlock3d(c, c, local), ResBlock3d(c, c, local), norm(c, local), nn.SiLU(),
                   nn.Conv3d(c, z_channels, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch > 1:
            x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=self.patch, q=self.patch)
        return self.layers(self.conv_in(x))


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: depth-to-space up-sampling, then depth-to-space by ``patch``."""

    def __init__(self, base: int, mults: tuple[int, ...], temporal_downs: tuple[bool, ...], z_channels: int,
                 num_res: int = 1, patch: int = 1):
        super().__init__()
        self.patch = patch
        chans = [base * m for m in mults]
        c = chans[-1]
        layers: list[nn.Module] = [CausalConv3d(z_channels, c, 3), ResBlock3d(c, c), ResBlock3d(c, c)]
        for i in reversed(range(len(chans))):
            cout = chans[i]
            layers.append(Upsample(c, cout, temporal_downs[i]))
            c = cout
            for _ in range(num_res):
                layers.append(ResBlock3d(c, c))
        layers += [norm(c), nn.SiLU(), CausalConv3d(c, 3 * patch * patch, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layers(z)
        if self.patch > 1:
            x = rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=self.patch, q=self.patch)
        return x
