"""DiT backbone: spacetime patches, adaLN-zero blocks, NaViT-style packing of differently shaped clips.

After Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT, arXiv 2212.09748):
patchified inputs, transformer blocks whose LayerNorm shift/scale and residual gates are regressed
from a conditioning vector, with the regression zero-initialised so every block starts as the
identity ("adaLN-zero"). Clips of different duration / resolution / aspect ratio are packed into one
token sequence with block-diagonal attention, after Dehghani et al., "Patch n' Pack: NaViT"
(arXiv 2307.06304), which OpenAI cites for Sora. Positions are factorised sinusoidal embeddings of
each token's (t, h, w) patch coordinates, so any grid works without a learned table.

    net = DiT(DiTConfig(in_channels=4, out_channels=4, cond_dim=64))
    outs = net([x1, x2], t, cond)   # x_i (C, T_i, H_i, W_i), t (2,), cond (2, cond_dim) -> list like x
    y = net.forward_batch(x, t, cond)   # x (B, C, T, H, W), same shape out

Shapes not divisible by the patch are padded (edge replicate) and cropped back on the way out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DiTConfig:
    in_channels: int = 4
    out_channels: int = 4
    patch: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw)
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    cond_dim: int = 128  # conditioning vector (timestep embedding is added inside)


# ----------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(C, T, H, W) -> (N, C*pt*ph*pw), N = (T/pt)(H/ph)(W/pw) in (t, h, w) raster order."""
    if x.ndim != 4:
        raise ValueError(f"patchify expects one clip (C, T, H, W), got shape {tuple(x.shape)}")
    C, T, H, W = x.shape
    pt, ph, pw = patch
    if T % pt or H % ph or W % pw:
        raise ValueError(f"clip {T}x{H}x{W} (T x H x W) is not divisible by patch {patch}; pad it first")
    x = x.reshape(C, T // pt, pt, H // ph, ph, W // pw, pw)
    return x.permute(1, 3, 5, 0, 2, 4, 6).reshape((T // pt) * (H // ph) * (W // pw), C * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (N, C*pt*ph*pw) with grid (t, h, w) -> (C, T, H, W)."""
    t, h, w = grid
    pt, ph, pw = patch
    N, D = tokens.shape
    if N != t * h * w or D % (pt * ph * pw):
        raise ValueError(f"{N} tokens of width {D} do not fit grid {grid} with patch {patch}")
    C = D // (pt * ph * pw)
    x = tokens.reshape(t, h, w, C, pt, ph, pw).permute(3, 0, 4, 1, 5, 2, 6)
    return x.reshape(C, t * pt, h * ph, w * pw)


def pad_to_patch(x: torch.Tensor, patch: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Edge-replicate pad (C, T, H, W) up to multiples of ``patch``; returns (padded, original T, H, W)."""
    C, T, H, W = x.shape
    pads = [(-s) % p for s, p in zip((T, H, W), patch)]
    if any(pads):
        x = F.pad(x.unsqueeze(0), (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate").squeeze(0)
    return x, (T, H, W)


# ----------------------------------------------------------------------------- packing
def pack(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate token sequences (N_i, D) into one (sum N_i, D) plus segment ids (sum N_i,)."""
    if not seqs:
        raise ValueError("pack needs at least one sequence")
    ids = torch.cat([torch.full((s.shape[0],), i, dtype=torch.long, device=s.device) for i, s in enumerate(seqs)])
    return torch.cat(seqs, dim=0), ids


def unpack(packed: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """Split (sum N_i, D) back into the sequences."""
    if sum(lengths) != packed.shape[0]:
        raise ValueError(f"lengths sum to {sum(lengths)}, packed has {packed.shape[0]} tokens")
    return list(torch.split(packed, lengths, dim=0))


def block_diagonal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean (L, L) attention mask: token i may attend to j only within the same clip."""
    return segment_ids[:, None] == segment_ids[None, :]


def sincos_1d(pos: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) float positions -> (N, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=pos.device, dtype=torch.float32) / max(half, 1))
    ang = pos.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


def grid_positions(grid: tuple[int, int, int], dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(t*h*w, dim) factorised sin-cos embedding of (t, h, w) coordinates (dim split 1/4, 3/8, 3/8)."""
    t, h, w = grid
    dt = (dim // 4) // 2 * 2
    dh = ((dim - dt) // 2) // 2 * 2
    dw = dim - dt - dh
    tt, hh, ww = torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                                torch.arange(w, device=device), indexing="ij")
    return torch.cat([sincos_1d(tt.reshape(-1), dt), sincos_1d(hh.reshape(-1), dh), sincos_1d(ww.reshape(-1), dw)], -1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) (scaled by 1000 as in DiT)."""
    return sincos_1d(t * 1000.0, dim)


# ----------------------------------------------------------------------------- blocks
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNZeroBlock(nn.Module):
    """Self-attention + MLP, each pre-normed with conditioning shift/scale and a zero-init gate."""

    def __init__(self, dim: int, heads: int, cond_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), c (B, L, cond_dim) per-token conditioning, mask (L, L) bool or None."""
        B, L, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), sh1, sc1)
        q, k, v = self.qkv(h).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, L, dh)
        x = x + g1 * self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, cond_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
        self.out = nn.Linear(dim, out_dim)
        for m in (self.ada[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.out(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Packed DiT: a list of clips in, a list of same-shaped predictions out."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        pt, ph, pw = cfg.patch
        self.patch = (pt, ph, pw)
        self.in_proj = nn.Linear(cfg.in_channels * pt * ph * pw, cfg.dim)
        self.t_mlp = nn.Sequential(nn.Linear(cfg.cond_dim, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.blocks = nn.ModuleList(AdaLNZeroBlock(cfg.dim, cfg.heads, cfg.cond_dim, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg.dim, cfg.cond_dim, cfg.out_channels * pt * ph * pw)
        self.force_packing = False  # tests: pack even equal-length clips

    def forward(self, clips: list[torch.Tensor], t: torch.Tensor, cond: torch.Tensor | None = None,
                extra_tokens: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """clips: list of (C_in, T_i, H_i, W_i); t (n,); cond (n, cond_dim) or None -> list of (C_out, T_i, H_i, W_i).

        ``extra_tokens`` (optional, per clip (M_i, dim)) are prepended to that clip's tokens inside
        its attention block (e.g. text tokens) and dropped at the output.
        """
        n = len(clips)
        if t.shape[0] != n:
            raise ValueError(f"got {n} clips but {t.shape[0]} times")
        seqs, grids, shapes, lens = [], [], [], []
        for i, x in enumerate(clips):
            if x.ndim != 4 or x.shape[0] != self.cfg.in_channels:
                raise ValueError(f"clip {i}: expected ({self.cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
            xp, orig = pad_to_patch(x, self.patch)
            grid = tuple(s // p for s, p in zip(xp.shape[1:], self.patch))
            tok = self.in_proj(patchify(xp, self.patch)) + grid_positions(grid, self.cfg.dim, x.device).to(x.dtype)
            if extra_tokens is not None:
                tok = torch.cat([extra_tokens[i], tok], dim=0)
            seqs.append(tok)
            grids.append(grid)
            shapes.append(orig)
            lens.append(tok.shape[0])
        c = timestep_embedding(t, self.cfg.cond_dim).to(seqs[0].dtype)
        if cond is not None:
            c = c + cond
        c = self.t_mlp(c)  # (n, cond_dim)
        if len(set(lens)) == 1 and not self.force_packing:
            # equal lengths: an ordinary batch, same result as packing with a block-diagonal mask
            h, cc, mask = torch.stack(seqs), c[:, None], None  # (n, N, D)
        else:
            hp, seg = pack(seqs)  # (L, D), (L,)
            h, cc, mask = hp.unsqueeze(0), c[seg].unsqueeze(0), block_diagonal_mask(seg)  # (1, L, *)
        for blk in self.blocks:
            h = blk(h, cc, mask)
        out = self.final(h, cc).reshape(-1, self.final.out.out_features)  # (L, patch_dim)
        res = []
        for i, o in enumerate(unpack(out, lens)):
            if extra_tokens is not None:
                o = o[extra_tokens[i].shape[0]:]
            y = unpatchify(o, grids[i], self.patch)
            T, H, W = shapes[i]
            res.append(y[:, :T, :H, :W])
        return res

    def forward_batch(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                      extra_tokens: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C, T, H, W) batch of equal-shaped clips, packed as B separate clips."""
        if x.ndim != 5:
            raise ValueError(f"expected (B, C, T, H, W), got {tuple(x.shape)}")
        return torch.stack(self.forward(list(x.unbind(0)), t, cond, extra_tokens))
