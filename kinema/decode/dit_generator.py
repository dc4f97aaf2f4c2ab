"""Text-conditioned DiT over the video tokenizer's continuous latents (the diffusion generation path).

A rectified-flow transformer (Esser et al., SD3, arXiv 2403.03206; backbone: Peebles & Xie, DiT,
arXiv 2212.09748, :mod:`kinema.decode.dit`) that generates the pre-quantisation latents
``VideoTokenizer.encode_latents`` produces, so the AR and diffusion paths share one decoder.

- Text: a small bidirectional transformer over sentencepiece ids; its tokens are prepended to each
  clip's latent tokens inside the DiT attention and its mean is added to the timestep conditioning.
  Captions are padded to ``max_text_len`` with a pad token, so a sample never depends on what else is
  in the batch. Dropping the text during training (``text_drop``) gives the unconditional branch for
  classifier-free guidance (Ho & Salimans, arXiv 2207.12598).
- Long videos: the first ``k <= max_cond_frames`` latent frames of a window may be given (input
  channels ``[noisy, sign(cond), flag]``, loss masked there), so a window continues the previous
  one's last latents, as the AR path does with its token windows.
- Latents are normalised per channel (statistics stored in the config at training time); outputs
  are snapped to the sign (``snap=True``), which is exactly what the tokenizer's LFQ keeps, so
  ``VideoTokenizer.decode_latents`` sees in-distribution inputs.

    gen = DiTGenerator.from_pretrained()               # embedded default or a directory
    z = gen.generate([ids], num_latent_frames=5, grid=(8, 8), guidance_scale=3.0, steps=8,
                     generator=torch.Generator().manual_seed(0))   # (1, C, 5, 8, 8)
    frames = video_tokenizer.decode_latents(z)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained
from kinema.decode import flow
from kinema.decode.dit import DiT, DiTConfig, sincos_1d
from kinema.paths import default_component_dir

KIND = "dit"
TextIds = Sequence[Sequence[int]] | torch.Tensor | None


@dataclass
class DiTGeneratorConfig:
    latent_channels: int = 10
    text_vocab: int = 512
    max_text_len: int = 32
    text_layers: int = 2
    dim: int = 128
    depth: int = 4
    heads: int = 4
    patch: tuple[int, int, int] = (1, 1, 1)
    max_cond_frames: int = 2
    text_drop: float = 0.1  # training: probability of the null caption (CFG)
    cond_prob: float = 0.5  # training: probability of conditioning on leading latent frames
    shift: float = 1.0
    latent_mean: list[float] = field(default_factory=list)  # per channel; empty: 0
    latent_std: list[float] = field(default_factory=list)  # per channel; empty: 1

    @staticmethod
    def preset(name: str, **overrides) -> "DiTGeneratorConfig":
        presets = {"tiny": dict(dim=32, depth=2, heads=4, text_layers=1, max_text_len=8),
                   "small": dict(dim=128, depth=4, heads=4),
                   "base": dict(dim=384, depth=12, heads=6, text_layers=4)}
        if name not in presets:
            raise ValueError(f"unknown DiT preset {name!r}; choose from {', '.join(presets)}")
        return DiTGeneratorConfig(**{**presets[name], **overrides})


def caption_lists(text: torch.Tensor) -> list[list[int]]:
    """Padded caption ids (N, M), -1 = pad (the training cache's format) -> one id list per caption."""
    return [[int(j) for j in row if j >= 0] for row in text]


class TextEncoder(nn.Module):
    """Sentencepiece ids (B, M) -> tokens (B, M, dim) and a pooled vector (B, dim)."""

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, max_len: int):
        super().__init__()
        self.null_id, self.pad_id, self.max_len = vocab, vocab + 1, max_len
        self.embed = nn.Embedding(vocab + 2, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, dim)

    def ids_tensor(self, text_ids: TextIds, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, max_len) padded ids; an empty or None caption becomes the null caption."""
        if text_ids is None:
            text_ids = [[] for _ in range(batch)]
        if isinstance(text_ids, torch.Tensor):
            if text_ids.ndim != 2 or text_ids.is_floating_point():
                raise ValueError(f"text_ids must be integer (B, M), got {tuple(text_ids.shape)} {text_ids.dtype}")
            text_ids = text_ids.tolist()
        if len(text_ids) != batch:
            raise ValueError(f"got {len(text_ids)} captions for a batch of {batch}")
        out = torch.full((batch, self.max_len), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(text_ids):
            ids = [int(j) for j in ids][: self.max_len] or [self.null_id]
            if min(ids) < 0 or max(ids) > self.null_id:
                raise ValueError(f"caption {i}: text ids must lie in [0, {self.null_id}), got {min(ids)}..{max(ids)}")
            out[i, : len(ids)] = torch.tensor(ids)
        return out.to(device)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = ids == self.pad_id  # (B, M)
        pos = sincos_1d(torch.arange(ids.shape[1], device=ids.device), self.embed.embedding_dim)
        h = self.norm(self.encoder(self.embed(ids) + pos, src_key_padding_mask=pad))
        h = h.masked_fill(pad[..., None], 0.0)
        keep = (~pad).float()[..., None]
        pooled = self.pool((h * keep).sum(1) / keep.sum(1).clamp_min(1.0))
        return h, pooled


class DiTGenerator(nn.Module):
    def __init__(self, cfg: DiTGeneratorConfig | None = None):
        super().__init__()
        cfg = cfg or DiTGeneratorConfig()
        C = cfg.latent_channels
        for name in ("latent_mean", "latent_std"):
            if getattr(cfg, name) and len(getattr(cfg, name)) != C:
                raise ValueError(f"{name} has {len(getattr(cfg, name))} entries, expected {C}")
        self.cfg = cfg
        self.text = TextEncoder(cfg.text_vocab, cfg.dim, cfg.heads, cfg.text_layers, cfg.max_text_len)
        self.net = DiT(DiTConfig(in_channels=2 * C + 1, out_channels=C, patch=tuple(cfg.patch), dim=cfg.dim,
                                 depth=cfg.depth, heads=cfg.heads, cond_dim=cfg.dim))
        mean = torch.tensor(cfg.latent_mean or [0.0] * C).view(1, C, 1, 1, 1)
        std = torch.tensor(cfg.latent_std or [1.0] * C).view(1, C, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    # ------------------------------------------------------------------ pieces
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def cond_input(self, cond: torch.Tensor | None, B: int, T: int, h: int, w: int) -> torch.Tensor:
        """(B, C + 1, T, h, w): sign of the given leading latents (zeros after) and their flag."""
        C = self.cfg.latent_channels
        out = torch.zeros(B, C + 1, T, h, w, device=self.mean.device)
        if cond is not None and cond.shape[2] > 0:
            k = cond.shape[2]
            out[:, :C, :k] = torch.where(cond > 0, 1.0, -1.0)
            out[:, C, :k] = 1.0
        return out

    def velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond_in: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """z_t (B, C, T, h, w) normalised noisy latents -> predicted velocity, same shape."""
        tokens, pooled = text
        cond_in = cond_in.to(z_t.dtype)
        z_t = z_t * (1 - cond_in[:, -1:])  # given frames: the information is in sign(cond) only
        x = torch.cat([z_t, cond_in], dim=1)
        return self.net.forward_batch(x, t, pooled, extra_tokens=list(tokens.unbind(0)))

    def _check_latents(self, z: torch.Tensor, what: str) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != self.cfg.latent_channels:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{what} must be (B, {self.cfg.latent_channels}, t, h, w), got {shape}")

    # ------------------------------------------------------------------ training
    def loss(self, z: torch.Tensor, text_ids: TextIds, generator: torch.Generator | None = None,
             context_frames: int | None = None, position_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Rectified-flow loss on continuous latents z (B, C, t, h, w); random text drop and leading
        conditioning frames (masked out of the loss): ``context_frames`` of them, or (None) a random
        number up to ``max_cond_frames`` with probability ``cond_prob``. ``position_weight`` (B, t, h, w),
        optional, weights each latent position (e.g. more where the objects are)."""
        self._check_latents(z, "latents")
        B, C, T, h, w = z.shape
        if position_weight is not None and tuple(position_weight.shape) != (B, T, h, w):
            raise ValueError(f"position_weight must be {(B, T, h, w)}, got {tuple(position_weight.shape)}")
        ids = self.text.ids_tensor(text_ids, B, z.device)
        drop = torch.rand(B, generator=generator) < self.cfg.text_drop
        ids[drop.to(ids.device)] = self.text.pad_id
        ids[drop.to(ids.device), 0] = self.text.null_id
        kmax = min(self.cfg.max_cond_frames, T - 1)
        ks = torch.randint(1, kmax + 1, (B,), generator=generator) if kmax > 0 else torch.zeros(B, dtype=torch.long)
        ks = torch.where(torch.rand(B, generator=generator) < self.cfg.cond_prob, ks, torch.zeros_like(ks))
        if context_frames is not None:
            if not 0 <= context_frames < T:
                raise ValueError(f"context_frames must be in [0, {T}), got {context_frames}")
            ks = torch.full((B,), int(context_frames), dtype=torch.long)
        frame = torch.arange(T)[None, :]  # (1, T)
        is_cond = (frame < ks[:, None]).to(z.device)  # (B, T)
        cond_in = self.cond_input(z, B, T, h, w)
        cond_in = cond_in * is_cond[:, None, :, None, None]
        weight = (~is_cond).float()[:, None, :, None, None]  # (B, 1, T, 1, 1)
        if position_weight is not None:
            weight = weight * position_weight.to(weight)[:, None]  # (B, 1, T, h, w)
        text = self.text(ids)
        return flow.flow_loss(lambda x, t: self.velocity(x, t, cond_in, text), self.normalize(z), generator,
                              weight=weight)

    @torch.no_grad()
    def fixed_noise_loss(self, z: torch.Tensor, text: torch.Tensor, batch_size: int = 8) -> float:
        """Mean :meth:`loss` over clips z (N, C, t, h, w) with captions ``text`` (N, M; -1 = pad, the
        training cache's format), each batch drawing the same noise, times and caption drops every call,
        so values from different checkpoints or training steps compare (held-out loss)."""
        total = 0.0
        for start in range(0, z.shape[0], batch_size):
            zb = z[start: start + batch_size]
            g = torch.Generator().manual_seed(1_000_003 + start)
            ids = caption_lists(text[start: start + batch_size])
            total += float(self.loss(zb.to(self.mean.device), ids, g)) * zb.shape[0]
        return total / z.shape[0]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, text_ids: TextIds, num_latent_frames: int, grid: tuple[int, ...], guidance_scale: float = 3.0,
                 steps: int = 8, generator: torch.Generator | None = None, cond_latents: torch.Tensor | None = None,
                 snap: bool = True, progress: bool = False,
                 contrasts: Sequence[tuple[TextIds, float]] = ()) -> torch.Tensor:
        """New latents (B, C, num_latent_frames, h, w) following ``cond_latents`` (B, C, k, h, w) if given.

        ``grid`` is the latent (h, w) (or (t, h, w); t is ignored). ``snap`` returns the sign (+-1),
        i.e. quantised latents for ``VideoTokenizer.decode_latents``; else continuous latents.
        ``contrasts`` are (captions, scale) pairs of motion guidance: each adds
        ``scale * (v(caption) - v(contrast caption))`` to the guided velocity (:func:`flow.guided`).
        """
        if len(grid) not in (2, 3):
            raise ValueError(f"grid must be (h, w) or (t, h, w), got {grid}")
        h, w = (int(g) for g in grid[-2:])
        if num_latent_frames < 1 or h < 1 or w < 1:
            raise ValueError(f"need num_latent_frames >= 1 and a positive grid, got {num_latent_frames}, {grid}")
        if not 1 <= steps <= 1000:
            raise ValueError(f"steps must be in 1..1000, got {steps}")
        B = len(text_ids) if text_ids is not None else (cond_latents.shape[0] if cond_latents is not None else 1)
        k = 0
        if cond_latents is not None:
            self._check_latents(cond_latents, "cond_latents")
            if cond_latents.shape[0] != B or tuple(cond_latents.shape[-2:]) != (h, w):
                raise ValueError(f"cond_latents {tuple(cond_latents.shape)} do not match batch {B} and grid {(h, w)}")
            k = min(cond_latents.shape[2], self.cfg.max_cond_frames)
            cond_latents = cond_latents[:, :, cond_latents.shape[2] - k:].to(self.mean.device)
        T, C = k + num_latent_frames, self.cfg.latent_channels
        generator = generator or torch.Generator().manual_seed(0)
        dev = self.mean.device
        cond_in = self.cond_input(cond_latents, B, T, h, w)

        def velocity(ids: TextIds) -> flow.Velocity:
            text = self.text(self.text.ids_tensor(ids, B, dev))
            return lambda x, t: self.velocity(x, t, cond_in, text)

        model = flow.guided(velocity(text_ids), velocity(None), guidance_scale,
                            [(velocity(ids), float(scale)) for ids, scale in contrasts if scale != 0])
        z = flow.sample_from_noise(model, (B, C, T, h, w), generator, steps=steps, shift=self.cfg.shift,
                                   device=dev, progress=progress)
        z = self.denormalize(z[:, :, k:])
        return torch.where(z > 0, 1.0, -1.0) if snap else z

    @torch.no_grad()
    def generate_long(self, text_ids: TextIds, total_latent_frames: int, grid: tuple[int, ...], window: int = 5,
                      context: int | None = None, generator: torch.Generator | None = None,
                      cond_latents: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Any number of latent frames, window by window, each conditioned on the previous window's
        last ``context`` latents (default ``max_cond_frames``); (B, C, total_latent_frames, h, w)."""
        context = self.cfg.max_cond_frames if context is None else context
        if not 0 <= context < window:
            raise ValueError(f"need 0 <= context < window, got context={context}, window={window}")
        out: list[torch.Tensor] = []
        made, prev = 0, cond_latents
        while made < total_latent_frames:
            n = min(window - (prev.shape[2] if prev is not None else 0), total_latent_frames - made)
            z = self.generate(text_ids, n, grid, generator=generator, cond_latents=prev, **kw)
            out.append(z)
            made += n
            allz = torch.cat(([prev] if prev is not None else []) + [z], dim=2)
            prev = allz[:, :, allz.shape[2] - context:] if context else None
        return torch.cat(out, dim=2)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "DiTGenerator":
        directory = Path(directory) if directory is not None else default_component_dir(KIND)
        cfg, state = load_pretrained(directory, DiTGeneratorConfig, KIND)
        model = cls(cfg)
        load_state_strict(model, state, str(directory))
        return model.eval()


__all__ = ["DiTGenerator", "DiTGeneratorConfig", "TextEncoder", "caption_lists"]
