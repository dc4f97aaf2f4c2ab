"""KinemaLM: the decoder-only prefix-LM transformer over the unified token vocabulary.

Llama-style blocks (Touvron et al., 2023, arXiv:2302.13971): pre-norm RMSNorm (Zhang & Sennrich,
2019), SwiGLU feed-forward (Shazeer, 2020, arXiv:2002.05202), rotary positions extended to
(t, h, w) axes (see :mod:`kinema.lm.rope`), grouped-query attention with a prefix-LM mask (see
:mod:`kinema.lm.attention`). The model sees integers only; it never imports a tokenizer.

    cfg = LMConfig.preset("tiny", vocab_size=1000)
    model = KinemaLM(cfg)
    out = model(ids, positions, prefix_len=prefix_len, attention_mask=valid, loss_mask=loss_mask)
    out.loss.backward()

    cache = model.new_cache(batch=B, max_len=L + N)
    logits = model.prefill(prompt_ids, prompt_positions, cache)       # (B, V) at the last token
    logits = model.decode_step(next_ids, next_positions, cache)       # (B, n, V)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained
from kinema.errors import CheckpointError, ConfigError
from kinema.lm.attention import Attention, KVCache, prefix_lm_mask
from kinema.lm.loss import fused_linear_cross_entropy
from kinema.lm.rope import SPATIAL_SPECTRA, axis_of_pairs, default_positions, rope_frequencies, rope_tables

__all__ = ["LMConfig", "LMOutput", "KinemaLM", "PRESETS"]

KIND = "lm"

# name -> (dim, n_layers, n_heads, n_kv_heads, ffn_dim)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 2, 176),
    "small": (384, 6, 6, 2, 1024),
    "300M": (1024, 24, 16, 8, 2816),
    "1B": (2048, 22, 32, 4, 5632),  # TinyLlama-1.1B shape
    "8B": (4096, 32, 32, 8, 14336),  # Llama-3-8B shape
}


@dataclass
class LMConfig:
    vocab_size: int = 1024
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 176
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_spatial: str = "shared"  # "grid": height/width rotary pairs at pi/2, pi/4, ... rad per cell (kinema.lm.rope)
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    activation_checkpointing: bool = False
    vocab: dict = field(default_factory=dict)  # the unified vocabulary layout (kinema.lm.vocab), stored with the weights
    # code fingerprints of the tokenizers whose tokens trained it ({"video_tokenizer": ..., "audio_codec": ...},
    # kinema.checkpoint.weights_fingerprint); a Pipeline refuses other encoders. Empty: not recorded
    trained_on: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"LMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ConfigError(f"LMConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"LMConfig.n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(f"head dim {self.dim // self.n_heads} must be even (rotary pairs)")
        if self.rope_spatial not in SPATIAL_SPECTRA:
            raise ConfigError(f"LMConfig.rope_spatial must be one of {SPATIAL_SPECTRA}, got {self.rope_spatial!r}")
        if self.vocab.get("size", self.vocab_size) != self.vocab_size:
            raise ConfigError(f"LMConfig.vocab_size {self.vocab_size} differs from its vocabulary's size {self.vocab['size']}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "LMConfig":
        """Named sizes: tiny (tests), small (embedded default), 300M, 1B, 8B."""
        if name not in PRESETS:
            raise ConfigError(f"unknown LM preset {name!r}; known: {', '.join(PRESETS)}")
        dim, n_layers, n_heads, n_kv, ffn = PRESETS[name]
        base = dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, ffn_dim=ffn)
        base.update(overrides)
        return cls(**base)

    def num_params(self, embeddings: bool = True) -> int:
        """Parameter count without building the model."""
        hd = self.head_dim
        attn = self.dim * (self.n_heads + 2 * self.n_kv_heads) * hd + self.n_heads * hd * self.dim
        mlp = 3 * self.dim * self.ffn_dim
        n = self.n_layers * (attn + mlp + 2 * self.dim) + self.dim
        if embeddings:
            n += self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return n


@dataclass
class LMOutput:
    logits: torch.Tensor | None  # (B, L, V); None when a loss is computed
    loss: torch.Tensor | None  # scalar mean cross-entropy over the loss positions
    n_tokens: int = 0  # how many positions the loss averages over


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.ffn_dim)

    def forward(self, x, cos, sin, mask, is_causal, cache=None, layer=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class KinemaLM(nn.Module):
    """Decoder-only prefix-LM. ``forward`` trains; ``prefill``/``decode_step`` generate."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        inv_freq = rope_frequencies(hd, cfg.rope_theta, cfg.rope_spatial)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("rope_axes", axis_of_pairs(hd), persistent=False)
        self.reset_parameters()

    # ------------------------------------------------------------------ init / io
    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        out_std = std / (2 * self.cfg.n_layers) ** 0.5  # GPT-2 style scaling of residual outputs
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith("attn.out.weight") or name.endswith("mlp.down.weight"):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=std)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, vocab: Any = None, vocab_size: int | None = None,
                        device: torch.device | str = "cpu") -> "KinemaLM":
        """Load a save_pretrained directory; refuse it when its vocabulary is not the tokenizers' one.

        ``vocab_size`` / ``vocab``: what the tokenizers in use produce (from kinema.lm.vocab). A
        mismatch raises CheckpointError naming both sizes. No directory: the embedded default.
        """
        if directory is None:
            from kinema.paths import default_component_dir

            directory = default_component_dir(KIND)
        cfg, state = load_pretrained(directory, LMConfig, KIND)
        if vocab is not None and hasattr(vocab, "to_dict"):  # a kinema.lm.vocab.Vocab
            vocab = vocab.to_dict()
        if vocab is not None and vocab_size is None and "size" in vocab:
            vocab_size = vocab["size"]
        if vocab_size is not None and int(vocab_size) != cfg.vocab_size:
            raise CheckpointError(
                f"LM checkpoint {directory} has a vocabulary of {cfg.vocab_size} ids but the tokenizers "
                f"give {vocab_size}; the LM was trained with different tokenizers"
            )
        if vocab is not None and cfg.vocab and vocab != cfg.vocab:
            theirs = vocab.get("size", vocab.get("vocab_size", "?"))
            diff = sorted(k for k in set(vocab) | set(cfg.vocab) if vocab.get(k) != cfg.vocab.get(k))
            raise CheckpointError(
                f"LM checkpoint {directory} vocabulary (size {cfg.vocab_size}) does not match the tokenizers' "
                f"vocabulary (size {theirs}); differing entries: {', '.join(diff[:8])}"
            )
        model = cls(cfg)
        load_state_strict(model, state, str(directory))
        return model.to(device)

    # ------------------------------------------------------------------ shared trunk
    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.cfg.vocab_size}); got min {int(ids.min())}, max {int(ids.max())}"
            )

    def _positions(self, ids: torch.Tensor, positions: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        B, L = ids.shape
        if positions is None:
            return default_positions(B, L, ids.device, start)
        if positions.shape[:2] != (B, L):
            raise ValueError(f"positions {tuple(positions.shape)} do not match ids {tuple(ids.shape)}")
        return positions

    def _trunk(self, ids, positions, mask, is_causal, cache=None) -> torch.Tensor:
        x = self.embed(ids)  # (B, L, C)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        cos, sin = rope_tables(positions, self.inv_freq, self.rope_axes, dtype)  # (B, 1, L, D)
        for i, block in enumerate(self.blocks):
            if self.cfg.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, cos, sin, mask, is_causal, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, is_causal, cache, i)
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        w = self.embed.weight if self.head is None else self.head.weight
        return F.linear(h, w)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        ids: torch.Tensor,  # (B, L) long
        positions: torch.Tensor | None = None,  # (B, L, 3) long; default (p, p, p)
        prefix_len: torch.Tensor | None = None,  # (B,) bidirectional prefix length per sample
        attention_mask: torch.Tensor | None = None,  # (B, L) bool, True = real token
        loss_mask: torch.Tensor | None = None,  # (B, L) bool, True = token is a prediction target
        loss_weight: torch.Tensor | None = None,  # (B, L) float, weight of each target; None: all 1
    ) -> LMOutput:
        """Logits for every position, or — given ``loss_mask`` — the next-token loss.

        ``loss_mask[b, t]`` says token t is predicted (from the logits at t-1), so position 0 is
        never a target. With a loss mask only the loss is returned (``logits`` is None): the
        vocabulary projection runs only at the predicting positions, fused with the cross-entropy
        in row chunks (:mod:`kinema.lm.loss`), so the (N, V) logits are never held in memory.
        ``loss_weight[b, t]`` weighs target t; the loss is then the weighted mean over the targets.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, L), got {tuple(ids.shape)}")
        self._check_ids(ids)
        positions = self._positions(ids, positions)
        mask = None
        if prefix_len is not None or attention_mask is not None:
            pe = None if prefix_len is None else torch.as_tensor(prefix_len, device=ids.device).view(-1)
            kv = None if attention_mask is None else attention_mask.to(torch.bool)
            mask = prefix_lm_mask(0, ids.shape[1], ids.shape[1], pe, kv, ids.device)
        h = self._trunk(ids, positions, mask, is_causal=mask is None)  # (B, L, C)
        if loss_mask is None:
            return LMOutput(self.logits(h), None)
        sel = loss_mask[:, 1:].to(torch.bool)  # (B, L-1)
        if attention_mask is not None:
            sel = sel & attention_mask[:, 1:].to(torch.bool)
        n = int(sel.sum())
        if n == 0:
            return LMOutput(None, h.sum() * 0.0, 0)
        w = self.embed.weight if self.head is None else self.head.weight
        rw = None if loss_weight is None else loss_weight[:, 1:][sel]  # (N,)
        loss = fused_linear_cross_entropy(h[:, :-1][sel], w, ids[:, 1:][sel], row_weight=rw)  # (N, C) x (V, C)
        return LMOutput(None, loss, n)

    # ------------------------------------------------------------------ generation
    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """Preallocated cache; dtype defaults to the autocast dtype when autocast is on."""
        if dtype is None:
            dt = self.device.type
            dtype = torch.get_autocast_dtype(dt) if torch.is_autocast_enabled(dt) else self.embed.weight.dtype
        c = self.cfg
        return KVCache(c.n_layers, batch, c.n_kv_heads, c.head_dim, max_len, dtype, self.device)

    @torch.no_grad()
    def prefill(
        self,
        ids: torch.Tensor,  # (B, L) left-padded prompts
        positions: torch.Tensor | None,
        cache: KVCache,
        prefix_len: torch.Tensor | None = None,  # (B,) buffer index where the bidirectional part ends; default L
        attention_mask: torch.Tensor | None = None,  # (B, L) bool, False on left padding
        last_only: bool = True,
    ) -> torch.Tensor:
        """Run the prompt into an empty cache; logits at the last position (B, V) (or all, (B, L, V))."""
        if cache.length != 0:
            raise ValueError("prefill expects an empty cache; use decode_step to extend one")
        self._check_ids(ids)
        B, L = ids.shape
        positions = self._positions(ids, positions)
        pe = torch.full((B,), L, device=ids.device) if prefix_len is None else torch.as_tensor(prefix_len, device=ids.device).view(-1)
        cache.prefix_end = pe.clone()
        kv = None if attention_mask is None else attention_mask.to(torch.bool)
        cache.reserve(L, kv)
        full_bidir = prefix_len is None and not cache.has_padding
        mask = None if full_bidir else prefix_lm_mask(0, L, L, pe, cache.valid[:, :L] if cache.has_padding else None, ids.device)
        h = self._trunk(ids, positions, mask, is_causal=False, cache=cache)
        cache.advance(L)
        return self.logits(h[:, -1] if last_only else h)

    @torch.no_grad()
    def decode_step(self, ids: torch.Tensor, positions: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
        """Append ``ids`` (B, n) (causal among themselves) to the cache; logits (B, n, V)."""
        self._check_ids(ids)
        B, n = ids.shape
        positions = self._positions(ids, positions, start=cache.length)
        cache.reserve(n, None)
        K = cache.length + n
        if n == 1 and not cache.has_padding:
            mask = None  # the new token sees everything cached
        else:
            mask = prefix_lm_mask(cache.length, n, K, None, cache.valid[:, :K] if cache.has_padding else None, ids.device)
        h = self._trunk(ids, positions, mask, is_causal=False, cache=cache)
        cache.advance(n)
        return self.logits(h)


def config_from_preset(name: str, **overrides: Any) -> LMConfig:
    return LMConfig.preset(name, **overrides)


def replace(cfg: LMConfig, **changes: Any) -> LMConfig:
    return dataclasses.replace(cfg, **changes)
