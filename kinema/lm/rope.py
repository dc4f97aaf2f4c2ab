"""Multi-axis rotary position embedding over (t, h, w) positions.

Follows RoFormer (Su et al., 2021, arXiv:2104.09864) for the rotation and Qwen2-VL's M-RoPE
(Wang et al., 2024, arXiv:2409.12191) for splitting the rotary frequency pairs between the time,
height and width axes. Unlike Qwen2-VL's contiguous sections we interleave the axes across the
spectrum (t, h, t, w, t, h, ...), as VideoRoPE (Wei et al., 2025, arXiv:2502.05173) suggests, so
every axis gets both fast and slow frequencies. By default all pairs share the ordinary RoPE
frequency table, so a text/audio token at position (p, p, p) is rotated exactly as 1-D RoPE would
rotate position p.

That table was made for thousands of positions; a latent grid is 16 cells a side. With head_dim 32
the width axis gets 0.18, 0.018, ... rad per cell: one usable frequency, so a query cannot single
out "the cell three to the left, one latent earlier", which moving an object needs.
``spatial="grid"`` (:func:`rope_frequencies`) gives the height and width pairs a spectrum made for
grids: pi/2, pi/4, pi/8, ... rad per cell (periods 4, 8, 16, ... cells, a binary code of the
offset), per-axis frequencies as in RoPE for vision transformers (Heo et al., 2024,
arXiv:2403.13298). The time pairs keep the shared table, so text positions still reach thousands;
text tokens are then also turned by the grid pairs, which keeps attention a function of relative
position but is no longer exactly 1-D RoPE.
"""
from __future__ import annotations

import math

import torch

__all__ = ["axis_of_pairs", "rope_frequencies", "rope_tables", "apply_rope", "default_positions", "SPATIAL_SPECTRA"]

SPATIAL_SPECTRA = ("shared", "grid")

# pattern of axes over consecutive frequency pairs: time gets half, height and width a quarter each
_PATTERN = (0, 1, 0, 2)


def axis_of_pairs(head_dim: int) -> torch.Tensor:
    """Which position axis (0=t, 1=h, 2=w) drives each of the head_dim/2 frequency pairs."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
    n = head_dim // 2
    return torch.tensor([_PATTERN[i % len(_PATTERN)] for i in range(n)], dtype=torch.long)


def rope_frequencies(head_dim: int, theta: float = 10000.0, spatial: str = "shared") -> torch.Tensor:
    """Angular frequency (rad per position step) of each of the head_dim/2 pairs, (head_dim/2,) float32.

    ``"shared"``: the ordinary RoPE table ``theta ** (-2i / head_dim)`` for every pair. ``"grid"``:
    time pairs keep that table; the j-th height pair and the j-th width pair turn ``pi / 2 ** (j + 1)``
    rad per cell."""
    if spatial not in SPATIAL_SPECTRA:
        raise ValueError(f"spatial spectrum must be one of {SPATIAL_SPECTRA}, got {spatial!r}")
    axes = axis_of_pairs(head_dim)
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if spatial == "grid":
        for axis in (1, 2):
            idx = (axes == axis).nonzero().view(-1)
            inv[idx] = math.pi / 2.0 ** (torch.arange(idx.numel(), dtype=torch.float32) + 1)
    return inv


def default_positions(batch: int, length: int, device: torch.device | str = "cpu", start: int = 0) -> torch.Tensor:
    """Text-style positions (p, p, p) for p = start..start+length-1.  # (B, L, 3)"""
    p = torch.arange(start, start + length, device=device)
    return p.view(1, length, 1).expand(batch, length, 3)


def rope_tables(
    positions: torch.Tensor, inv_freq: torch.Tensor, axes: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables for ``positions`` (B, L, 3) -> each (B, 1, L, head_dim).

    Angles are computed in float32 (positions can reach 1e5) and cast to ``dtype`` at the end.
    """
    if positions.dim() == 2:  # (B, L) plain 1-D positions
        positions = positions.unsqueeze(-1).expand(*positions.shape, 3)
    if positions.dim() != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be (B, L, 3) or (B, L), got {tuple(positions.shape)}")
    pos = positions.index_select(-1, axes.to(positions.device)).float()  # (B, L, P)
    ang = pos * inv_freq.to(positions.device)  # (B, L, P)
    ang = torch.cat([ang, ang], dim=-1).unsqueeze(1)  # (B, 1, L, D)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, L, D) by the tables; pairs are (i, i + D/2) as in Llama."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin
