"""Grouped-query prefix-LM attention and the preallocated KV cache.

Grouped-query attention follows Ainslie et al., 2023 (GQA, arXiv:2305.13245). The prefix-LM mask
(bidirectional inside the condition prefix, causal after it) follows Raffel et al., 2020 (T5,
"prefix LM") and VideoPoet (Kondratyuk et al., 2024), which conditions its decoder-only model the
same way. Attention goes through flash-attn when it is installed and the call is a plain causal
one on a GPU; everything else uses ``torch.nn.functional.scaled_dot_product_attention``.

Mask rule, for query at buffer index i and key at buffer index j of sample b::

    visible = (j <= i or j < prefix_end[b]) and (key_valid[b, j] or j == i)

``prefix_end`` is where the bidirectional region ends; ``key_valid`` marks real (non-padding)
tokens. A padded query still sees itself so no row of the softmax is empty (its output is unused).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.errors import ResourceError
from kinema.lm.rope import apply_rope

try:  # optional, GPU only
    from flash_attn import flash_attn_func as _flash_attn_func  # type: ignore
except Exception:  # pragma: no cover - not installed on CPU machines
    _flash_attn_func = None

__all__ = ["prefix_lm_mask", "KVCache", "Attention"]


def prefix_lm_mask(
    q_start: int,
    n_q: int,
    n_k: int,
    prefix_end: torch.Tensor | None,
    key_valid: torch.Tensor | None,
    device: torch.device | str,
) -> torch.Tensor:
    """Boolean attention mask (B or 1, 1, n_q, n_k); True = may attend."""
    qi = torch.arange(q_start, q_start + n_q, device=device).view(n_q, 1)  # (Q, 1)
    kj = torch.arange(n_k, device=device).view(1, n_k)  # (1, K)
    vis = (kj <= qi).unsqueeze(0)  # (1, Q, K)
    if prefix_end is not None:
        vis = vis | (kj.unsqueeze(0) < prefix_end.view(-1, 1, 1))  # (B, Q, K)
    if key_valid is not None:
        vis = vis & (key_valid[:, :n_k].unsqueeze(1) | (kj == qi).unsqueeze(0))
    return vis.unsqueeze(1)


class KVCache:
    """Preallocated keys/values for every layer, plus which slots hold real tokens.

    Buffers are (n_layers, B, n_kv_heads, max_len, head_dim). ``length`` slots are filled. Rotary
    angles are applied before caching, with absolute positions, so :meth:`trim` can drop old slots
    (sliding window) without invalidating the rest: attention only depends on position differences.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if max_len <= 0:
            raise ValueError(f"KV cache max_len must be positive, got {max_len}")
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        gib = 2 * torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size() / 2**30
        try:
            self.k = torch.empty(shape, dtype=dtype, device=device)
            self.v = torch.empty(shape, dtype=dtype, device=device)
        except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
            raise ResourceError(f"KV cache of {gib:.2f} GiB ({shape}) does not fit: {e}") from None
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.prefix_end = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0
        self.max_len = max_len
        self.has_padding = False

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def reserve(self, n: int, key_valid: torch.Tensor | None) -> None:
        """Mark the next ``n`` slots as about to be written (called once per forward)."""
        if self.length + n > self.max_len:
            raise ResourceError(
                f"KV cache full: {self.length} + {n} tokens > max_len {self.max_len}; "
                "allocate a longer cache or trim() it (sliding window)"
            )
        sl = slice(self.length, self.length + n)
        if key_valid is None:
            self.valid[:, sl] = True
        else:
            self.valid[:, sl] = key_valid
            self.has_padding = self.has_padding or not bool(key_valid.all())

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, n, D) at the reserved slots; return all keys/values so far."""
        n = k.shape[2]
        end = self.length + n
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def trim(self, keep_first: int, keep_last: int) -> None:
        """Keep the first ``keep_first`` slots (e.g. the condition) and the last ``keep_last``."""
        if keep_first < 0 or keep_last < 0:
            raise ValueError("trim sizes must be non-negative")
        if keep_first + keep_last >= self.length:
            return
        src = torch.arange(self.length - keep_last, self.length, device=self.k.device)
        dst = slice(keep_first, keep_first + keep_last)
        self.k[:, :, :, dst] = self.k.index_select(3, src)
        self.v[:, :, :, dst] = self.v.index_select(3, src)
        self.valid[:, dst] = self.valid.index_select(1, src)
        self.prefix_end = self.prefix_end.clamp(max=keep_first)
        self.length = keep_first + keep_last

    def select(self, index: torch.Tensor) -> None:
        """Keep only batch rows ``index`` (e.g. to drop finished prompts)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        self.valid = self.valid.index_select(0, index)
        self.prefix_end = self.prefix_end.index_select(0, index)


def _neg_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class Attention(nn.Module):
    """Fused-QKV grouped-query attention with rotary positions."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.qkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * head_dim, bias=bias)
        self.out = nn.Linear(n_heads * head_dim, dim, bias=False)

    def _short_query(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention for a handful of queries (KV-cache decode) as two batched matmuls per KV head.

        The queries of the G heads sharing one KV head are stacked, so GQA needs no key copies.
        CPU SDPA kernels are tuned for long query blocks; for 1-8 queries this is several times faster.
        """
        B, H, L, D = q.shape
        Hk, K = k.shape[1], k.shape[2]
        G = H // Hk
        qg = q.reshape(B, Hk, G * L, D)  # head h uses KV head h // G
        scores = torch.matmul(qg, k.to(q.dtype).transpose(-1, -2)).float() * D**-0.5  # (B, Hk, G*L, K)
        if mask is not None:
            scores = (scores.view(B, Hk, G, L, K) + _neg_mask(mask, scores.dtype).unsqueeze(1)).view(B, Hk, G * L, K)
        probs = scores.softmax(-1).to(q.dtype)
        return torch.matmul(probs, v.to(q.dtype)).view(B, H, L, D)  # (B, H, L, D)

    def forward(
        self,
        x: torch.Tensor,  # (B, L, C)
        cos: torch.Tensor,
        sin: torch.Tensor,  # (B, 1, L, D)
        mask: torch.Tensor | None,  # (B|1, 1, L, K) bool, or None
        is_causal: bool,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, L, _ = x.shape
        H, Hk, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv(x).view(B, L, H + 2 * Hk, D).transpose(1, 2)  # (B, H+2Hk, L, D)
        q, k, v = qkv.split([H, Hk, Hk], dim=1)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)  # (B, Hk, K, D)
        if (_flash_attn_func is not None and x.is_cuda and mask is None and q.dtype in (torch.float16, torch.bfloat16)
                and (is_causal or L == 1)):
            o = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype),
                                 causal=is_causal)  # (B, L, H, D)
            return self.out(o.reshape(B, L, H * D))
        if cache is not None and L <= 8:  # decode: a few queries over a long cache
            return self.out(self._short_query(q, k, v, mask).transpose(1, 2).reshape(B, L, H * D))
        o = F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=is_causal and mask is None,
            enable_gqa=Hk != H,
        )  # (B, H, L, D)
        return self.out(o.transpose(1, 2).reshape(B, L, H * D))
