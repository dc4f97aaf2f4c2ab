"""Causal, streamable 1D convolution blocks of the audio codec.

Encoder and decoder follow SoundStream (Zeghidour et al., arXiv 2107.03312) and SEANet: strided
conv blocks with dilated residual units (dilations 1, 3, 9), ELU activations, weight norm, and
only causal (left) padding, so every output sample depends on the past alone.

Streaming: each conv takes an optional ``state`` dict. With a dict, it keeps the last
``receptive - stride`` input samples of the previous call (keyed by the module's id) instead of
zero padding, so feeding a signal chunk by chunk (chunk lengths a multiple of the block's stride)
gives exactly the same output as feeding it whole. Upsampling uses a sub-pixel conv (conv to
``C * stride`` channels, then fold channels into time), which needs no look-ahead and no
overlap-add, so the decoder streams the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

State = dict[int, torch.Tensor]


class CausalConv1d(nn.Module):
    """Conv1d padded on the left only; output frame t sees inputs up to the end of its stride block."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        if kernel < stride:
            raise ValueError(f"kernel {kernel} must be >= stride {stride}")
        self.conv = weight_norm(nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation))
        self.stride = stride
        self.pad = (kernel - 1) * dilation + 1 - stride  # left context carried between chunks

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        # x: (B, C, N) with N a multiple of stride -> (B, C', N // stride)
        if x.shape[-1] % self.stride:
            raise ValueError(f"input length {x.shape[-1]} is not a multiple of stride {self.stride}")
        if state is None:
            x = F.pad(x, (self.pad, 0))
        else:
            prev = state.get(id(self))
            if prev is None:
                prev = x.new_zeros(x.shape[0], x.shape[1], self.pad)
            x = torch.cat([prev, x], dim=-1)
            state[id(self)] = x[..., x.shape[-1] - self.pad :].detach()
        return self.conv(x)


class ResidualUnit(nn.Module):
    """ELU -> dilated causal conv (k=7) -> ELU -> 1x1 conv, plus the input (SEANet)."""

    def __init__(self, ch: int, dilation: int, kernel: int = 7):
        super().__init__()
        self.conv1 = CausalConv1d(ch, ch, kernel, dilation=dilation)
        self.conv2 = CausalConv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        y = self.conv1(F.elu(x), state)
        return x + self.conv2(F.elu(y), state)


class EncoderBlock(nn.Module):
    """Residual units at ``cin`` channels, then a strided conv down by ``stride`` to ``cout``."""

    def __init__(self, cin: int, cout: int, stride: int, dilations: tuple[int, ...]):
        super().__init__()
        self.units = nn.ModuleList(ResidualUnit(cin, d) for d in dilations)
        self.down = CausalConv1d(cin, cout, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        for u in self.units:
            x = u(x, state)
        return self.down(F.elu(x), state)


class DecoderBlock(nn.Module):
    """Sub-pixel upsampling by ``stride`` to ``cout`` channels, then residual units."""

    def __init__(self, cin: int, cout: int, stride: int, dilations: tuple[int, ...]):
        super().__init__()
        self.stride = stride
        self.up = CausalConv1d(cin, cout * stride, 3)
        self.units = nn.ModuleList(ResidualUnit(cout, d) for d in dilations)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        y = self.up(F.elu(x), state)  # (B, cout*s, n)
        b, cs, n = y.shape
        # fold the s phases into time: (B, cout, s, n) -> (B, cout, n, s) -> (B, cout, n*s)
        y = y.view(b, cs // self.stride, self.stride, n).transpose(2, 3).reshape(b, cs // self.stride, n * self.stride)
        for u in self.units:
            y = u(y, state)
        return y


class Encoder(nn.Module):
    """(B, 1, N) waveform -> (B, D, N / hop) latent frames."""

    def __init__(self, channels: int, latent_dim: int, strides: tuple[int, ...], mults: tuple[int, ...], dilations: tuple[int, ...]):
        super().__init__()
        self.stem = CausalConv1d(1, channels * mults[0], 7)
        blocks = []
        for i, s in enumerate(strides):
            cin = channels * mults[i]
            cout = channels * mults[min(i + 1, len(mults) - 1)]
            blocks.append(EncoderBlock(cin, cout, s, dilations))
        self.blocks = nn.ModuleList(blocks)
        self.head = CausalConv1d(channels * mults[-1], latent_dim, 3)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = self.stem(x, state)
        for b in self.blocks:
            x = b(x, state)
        return self.head(F.elu(x), state)


class Decoder(nn.Module):
    """(B, D, n) latent frames -> (B, 1, n * hop) waveform (mirror of :class:`Encoder`)."""

    def __init__(self, channels: int, latent_dim: int, strides: tuple[int, ...], mults: tuple[int, ...], dilations: tuple[int, ...]):
        super().__init__()
        self.stem = CausalConv1d(latent_dim, channels * mults[-1], 7)
        blocks = []
        n = len(strides)
        for j, s in enumerate(reversed(strides)):
            i = n - 1 - j  # mirrors encoder block i
            cin = channels * mults[min(i + 1, len(mults) - 1)]
            cout = channels * mults[i]
            blocks.append(DecoderBlock(cin, cout, s, dilations))
        self.blocks = nn.ModuleList(blocks)
        self.head = CausalConv1d(channels * mults[0], 1, 7)

    def forward(self, z: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = self.stem(z, state)
        for b in self.blocks:
            x = b(x, state)
        return self.head(F.elu(x), state)
