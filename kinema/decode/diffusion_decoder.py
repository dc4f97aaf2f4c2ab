"""Diffusion decoder head: refines (and optionally 2x upsamples) the plain detokeniser's frames.

A residual rectified-flow denoiser in pixel space, in the spirit of OpenAI's consistency decoder and
HART's residual diffusion (Tang et al., arXiv 2410.10812): the plain detokenisation ``x_detok`` is the
condition, and the flow generates the residual ``x - up(x_detok)`` (scaled by ``residual_scale``) in
a few Euler steps (:mod:`kinema.decode.flow`). The network is the DiT backbone
(:mod:`kinema.decode.dit`, arXiv 2212.09748) over spacetime patches of
``[noisy residual, up(x_detok), anchor frame, anchor flag]``, so every frame attends to its
neighbours (temporal consistency within a window). A residual is mostly edges, finer than a patch, so
full-resolution 3x3 convolutions sit before and after the transformer (the trick U-ViT, Bao et al.
arXiv 2209.12152, uses after unpatchify): the DiT brings spacetime context at patch level, the
convolutions put it back on the exact pixels. Because the network predicts the clean residual, one
step from t = 1 is its posterior-mean estimate (best PSNR); more steps sample detail. Across
continuation windows, ``prev_frame`` (the previous window's last refined frame) is given as the
anchor; training shows the true frame before the clip half of the time.

    dd = DiffusionDecoder.from_pretrained()           # embedded default (if shipped) or a directory
    x = dd.refine(codes, x_detok, steps=4, generator=torch.Generator().manual_seed(0))
    # x_detok (B, 3, T, H, W) in [-1, 1] -> (B, 3, T, H*u, W*u) with u = cfg.upsample
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained
from kinema.decode import flow
from kinema.decode.dit import DiT, DiTConfig, timestep_embedding
from kinema.paths import default_component_dir

KIND = "diffusion_decoder"


@dataclass
class DiffusionDecoderConfig:
    dim: int = 96
    depth: int = 4
    heads: int = 4
    patch: tuple[int, int, int] = (1, 8, 8)
    upsample: int = 1  # 1 (refine) or 2 (refine + 2x super-resolution)
    residual_scale: float = 0.3  # residuals are divided by this so the flow sees ~unit variance
    anchor_drop: float = 0.5  # training: probability of hiding the anchor frame
    shift: float = 1.0  # sampler timestep shift
    pixel_channels: int = 32  # width of the full-resolution convolutions around the DiT

    @staticmethod
    def preset(name: str) -> "DiffusionDecoderConfig":
        presets = {"tiny": DiffusionDecoderConfig(dim=32, depth=2, heads=4, patch=(1, 4, 4), pixel_channels=8),
                   "small": DiffusionDecoderConfig(),
                   "small2x": DiffusionDecoderConfig(upsample=2, patch=(1, 16, 16))}
        if name not in presets:
            raise ValueError(f"unknown diffusion decoder preset {name!r}; choose from {', '.join(presets)}")
        return presets[name]


class FrameResBlock(nn.Module):
    """Per-frame residual block of two 3x3 convolutions, FiLM-conditioned on the flow time."""

    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        groups = 8 if ch % 8 == 0 else 1
        self.norm1, self.conv1 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * ch)
        self.norm2, self.conv2 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h (N, ch, H, W), c (N, cond_dim)."""
        y = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)
        y = y * (1 + scale) + shift
        return h + self.conv2(F.silu(self.norm2(y)))


class DiffusionDecoder(nn.Module):
    IN_CHANNELS = 3 + 3 + 3 + 1  # noisy residual, up(x_detok), anchor frame, anchor flag

    def __init__(self, cfg: DiffusionDecoderConfig | None = None):
        super().__init__()
        cfg = cfg or DiffusionDecoderConfig()
        if cfg.upsample not in (1, 2):
            raise ValueError(f"upsample must be 1 or 2, got {cfg.upsample}")
        self.cfg = cfg
        C = cfg.pixel_channels
        self.net = DiT(DiTConfig(in_channels=self.IN_CHANNELS, out_channels=C, patch=tuple(cfg.patch), dim=cfg.dim,
                                 depth=cfg.depth, heads=cfg.heads, cond_dim=cfg.dim))
        self.t_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.stem = nn.Conv2d(self.IN_CHANNELS, C, 3, padding=1)
        self.pre = FrameResBlock(C, cfg.dim)
        self.merge = nn.Conv2d(2 * C, C, 1)
        self.post = FrameResBlock(C, cfg.dim)
        self.out = nn.Conv2d(C, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # an untrained head returns the plain detokenisation
        nn.init.zeros_(self.out.bias)

    # ------------------------------------------------------------------ conditioning
    def _check(self, x_detok: torch.Tensor, prev_frame: torch.Tensor | None) -> None:
        if not isinstance(x_detok, torch.Tensor) or x_detok.ndim != 5 or x_detok.shape[1] != 3:
            shape = tuple(x_detok.shape) if isinstance(x_detok, torch.Tensor) else type(x_detok).__name__
            raise ValueError(f"x_detok must be float (B, 3, T, H, W) in [-1, 1], got {shape}")
        if not x_detok.is_floating_point():
            raise ValueError(f"x_detok must be a float tensor, got {x_detok.dtype}")
        if prev_frame is not None:
            B, _, _, H, W = x_detok.shape
            u = self.cfg.upsample
            if prev_frame.shape not in ((B, 3, H * u, W * u), (B, 3, H, W)):
                raise ValueError(f"prev_frame must be (B, 3, H, W) = {(B, 3, H * u, W * u)}, got {tuple(prev_frame.shape)}")

    def condition(self, x_detok: torch.Tensor, prev_frame: torch.Tensor | None) -> torch.Tensor:
        """(B, 7, T, H*u, W*u): up(x_detok), anchor frame broadcast over time, anchor flag."""
        B, _, T, H, W = x_detok.shape
        u = self.cfg.upsample
        up = x_detok
        if u != 1:
            up = F.interpolate(x_detok.flatten(1, 2).float(), scale_factor=u, mode="bilinear", align_corners=False)
            up = up.view(B, 3, T, H * u, W * u)
        if prev_frame is None:
            anchor = torch.zeros(B, 4, T, H * u, W * u, dtype=up.dtype, device=up.device)
        else:
            if prev_frame.shape[-1] != W * u:
                prev_frame = F.interpolate(prev_frame.float(), scale_factor=u, mode="bilinear", align_corners=False)
            pf = prev_frame.to(up.dtype)[:, :, None].expand(B, 3, T, H * u, W * u)
            anchor = torch.cat([pf, torch.ones_like(pf[:, :1])], dim=1)
        return torch.cat([up, anchor], dim=1)

    def predict_clean(self, r_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Clean scaled residual r0_hat (B, 3, T, H', W') from the noisy one at flow times t (B,)."""
        inp = torch.cat([r_t, cond], dim=1)  # (B, 10, T, H', W')
        B, _, T, H, W = inp.shape
        c = self.t_mlp(timestep_embedding(t, self.cfg.dim).to(inp.dtype)).repeat_interleave(T, 0)  # (B*T, dim)
        frames = inp.transpose(1, 2).flatten(0, 1)  # (B*T, 10, H', W')
        local = self.pre(self.stem(frames), c)
        context = self.net.forward_batch(inp, t).transpose(1, 2).flatten(0, 1)  # (B*T, C, H', W')
        h = self.post(self.merge(torch.cat([local, context], dim=1)), c)
        return self.out(F.silu(h)).view(B, T, 3, H, W).transpose(1, 2)

    def velocity(self, r_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Velocity for the scaled residual r_t (B, 3, T, H', W').

        The network predicts the clean residual (x-prediction, Li & He "Back to Basics", arXiv
        2511.13720: with wide patches a narrow transformer cannot carry the noise through, so it
        should not have to); the velocity follows as (r_t - r0_hat) / t, t clamped at 0.05.
        """
        r0_hat = self.predict_clean(r_t, t, cond)
        return (r_t - r0_hat) / flow._bcast(t.clamp_min(0.05), r_t)

    # ------------------------------------------------------------------ training
    def loss(self, x: torch.Tensor, x_detok: torch.Tensor, prev_frame: torch.Tensor | None,
             generator: torch.Generator | None = None, temporal_weight: float = 0.0) -> torch.Tensor:
        """Rectified-flow (x-prediction) loss on the scaled residual; x (B, 3, T, H*u, W*u) original, x_detok (B, 3, T, H, W).

        ``temporal_weight`` > 0 adds the MSE of the frame-to-frame differences of the prediction
        against the original's, so the head does not buy PSNR with flicker.
        """
        cond = self.condition(x_detok, prev_frame)
        if prev_frame is not None and self.training and self.cfg.anchor_drop > 0:
            drop = torch.rand(x.shape[0], generator=generator) < self.cfg.anchor_drop
            cond = torch.where(drop.view(-1, 1, 1, 1, 1).to(x.device), self.condition(x_detok, None), cond)
        r0 = (x - cond[:, :3]) / self.cfg.residual_scale
        # x-prediction loss: the velocity loss reweighted by t^2 (v - v_true = (r0 - r0_hat) / t), so
        # every time counts like the one-step read-out at t = 1, and PSNR is what it optimises; times
        # are uniform so t near 1 is trained as often as the rest
        t = flow.sample_t(x.shape[0], generator, logit_normal=False, device=x.device)
        noise = torch.randn(r0.shape, generator=generator, dtype=r0.dtype).to(x.device)
        r0_hat = self.predict_clean(flow.interpolate(r0, noise, t), t, cond).float()
        loss = F.mse_loss(r0_hat, r0.float())
        if temporal_weight > 0 and r0.shape[2] > 1:
            loss = loss + temporal_weight * F.mse_loss(r0_hat.diff(dim=2), r0.float().diff(dim=2))
        return loss

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def refine(self, codes: torch.Tensor | None, x_detok: torch.Tensor, steps: int = 4,
               generator: torch.Generator | None = None, prev_frame: torch.Tensor | None = None) -> torch.Tensor:
        """Refined frames (B, 3, T, H*u, W*u) in [-1, 1] from the plain detokenisation.

        ``codes`` (B, t, h, w) are checked against ``x_detok`` when given (the head conditions on
        their decoded pixels); ``prev_frame`` (B, 3, H*u, W*u) is the previous continuation window's
        last refined frame, for consistency across windows. ``steps`` <= 8 Euler steps.
        """
        self._check(x_detok, prev_frame)
        if codes is not None and (codes.ndim != 4 or codes.shape[0] != x_detok.shape[0]):
            raise ValueError(f"codes must be (B, t, h, w) with B = {x_detok.shape[0]}, got {tuple(codes.shape)}")
        if not 1 <= steps <= 8:
            raise ValueError(f"steps must be in 1..8, got {steps}")
        generator = generator or torch.Generator().manual_seed(0)
        cond = self.condition(x_detok.float(), prev_frame)
        shape = (cond.shape[0], 3, *cond.shape[2:])
        r = flow.sample_from_noise(lambda r_t, t: self.velocity(r_t, t, cond), shape, generator, steps=steps,
                                   shift=self.cfg.shift, device=cond.device)
        return (cond[:, :3] + self.cfg.residual_scale * r).clamp(-1, 1)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "DiffusionDecoder":
        directory = Path(directory) if directory is not None else default_component_dir(KIND)
        cfg, state = load_pretrained(directory, DiffusionDecoderConfig, KIND)
        model = cls(cfg)
        load_state_strict(model, state, str(directory))
        return model.eval()


@torch.no_grad()
def synthetic_pairs(vt, seeds: list[int], size: tuple[int, int] = (64, 64), num_frames: int = 9,
                    upsample: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, x_detok, x, prev_frame) training/eval pairs from synthetic-world clips.

    Each clip renders ``num_frames + 1`` frames at ``size * upsample``; frame 0 is the anchor (the
    frame before the window), frames 1.. are the target ``x`` and, downsampled by ``upsample``, the
    tokenizer input. Shapes: codes (N, t, h, w), x_detok (N, 3, T, H, W), x (N, 3, T, H*u, W*u),
    prev_frame (N, 3, H*u, W*u).
    """
    from kinema.data.synthetic import generate

    fps = 8.0
    H, W = size
    out = ([], [], [], [])
    for s in seeds:
        clip = generate(int(s), size=(H * upsample, W * upsample), fps=fps, seconds=(num_frames + 1) / fps)
        fr = clip.frames[: num_frames + 1].permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T+1, H*u, W*u)
        x = fr[:, 1:].unsqueeze(0)
        x_low = x if upsample == 1 else F.avg_pool3d(x, (1, upsample, upsample))
        codes = vt.encode(x_low.clamp(-1, 1))
        for lst, v in zip(out, (codes, vt.decode(codes), x, fr[:, 0].unsqueeze(0))):
            lst.append(v)
    return tuple(torch.cat(v) for v in out)  # type: ignore[return-value]
