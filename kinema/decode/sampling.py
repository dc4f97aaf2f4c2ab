"""Pure sampling functions over logits: temperature, top-k, top-p, CFG mixing, id-range constraints.

Nothing here knows about the network. Every random draw takes an explicit ``torch.Generator`` so
the same seed gives the same tokens. Top-p is nucleus sampling (Holtzman et al., 2020,
arXiv:1904.09751); guidance mixing is classifier-free guidance (Ho & Salimans, 2022,
arXiv:2207.12598) applied to logits as in autoregressive image models (e.g. Parti, Yu et al., 2022);
a second, contrastive guidance term is summed onto it as composable diffusion sums the terms of
several conditions (Liu et al., 2022, arXiv:2206.01714).
"""
from __future__ import annotations

import math

import torch

__all__ = ["cfg_mix", "contrast_mix", "constrain", "apply_temperature", "top_k_filter", "top_p_filter", "sample"]

NEG_INF = float("-inf")


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float, plausibility: float = 0.0) -> torch.Tensor:
    """uncond + scale * (cond - uncond); scale 1 gives the conditional logits, 0 the unconditional.

    Ids masked out (-inf) in either input stay masked, never NaN. ``plausibility`` > 0 keeps only
    ids whose conditional probability is at least that fraction of the most likely id's (the
    adaptive plausibility constraint of contrastive decoding, Li et al., 2022, arXiv:2210.15097):
    without it, an id that both branches find unlikely but the unconditional one finds far less
    likely gets the largest guided logit (cond -8, uncond -20, scale 3: -8 + 2 * 12 = +16).
    """
    if not 0.0 <= plausibility < 1.0:
        raise ValueError(f"plausibility must be in [0, 1), got {plausibility}")
    if scale == 1.0:
        return cond
    mixed = uncond + scale * (cond - uncond)
    masked = torch.isneginf(cond) | torch.isneginf(uncond)
    if plausibility > 0.0:
        logp = cond.float().log_softmax(-1)
        masked |= logp < logp.max(-1, keepdim=True).values + math.log(plausibility)
    return mixed.masked_fill(masked, NEG_INF)


def contrast_mix(mixed: torch.Tensor, cond: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """``mixed + scale * (cond - negative)``: push the guided logits further away from a second,
    contrasting prompt (e.g. the caption with its motion phrases replaced by "standing still", so the
    term carries only what the caption says about motion). Scale 0 returns ``mixed`` unchanged; ids
    masked (-inf) in any input stay masked, never NaN."""
    if scale == 0.0:
        return mixed
    masked = torch.isneginf(mixed) | torch.isneginf(cond) | torch.isneginf(negative)
    return (mixed + scale * (cond - negative)).masked_fill(masked, NEG_INF)


def constrain(logits: torch.Tensor, lo: int | torch.Tensor, hi: int | torch.Tensor) -> torch.Tensor:
    """Set every logit outside [lo, hi) to -inf (per row when lo/hi are (B,) tensors).  # (B, V)"""
    V = logits.shape[-1]
    lo_t = torch.as_tensor(lo, device=logits.device)
    hi_t = torch.as_tensor(hi, device=logits.device)
    if bool((lo_t < 0).any()) or bool((hi_t > V).any()) or bool((hi_t <= lo_t).any()):
        raise ValueError(f"allowed id range [{lo}, {hi}) is empty or outside the vocabulary of {V}")
    ids = torch.arange(V, device=logits.device)
    if lo_t.dim() == 0:
        keep = (ids >= lo_t) & (ids < hi_t)  # (V,)
    else:
        keep = (ids >= lo_t.view(-1, 1)) & (ids < hi_t.view(-1, 1))  # (B, V)
    return logits.masked_fill(~keep, NEG_INF)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (k <= 0: keep all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of ids whose probability mass reaches p (always at least the top one)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(-1)
    before = probs.cumsum(-1) - probs  # mass strictly above each id
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def sample(
    logits: torch.Tensor,  # (B, V)
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One id per row, (B,) long. ``temperature == 0`` means greedy (argmax)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
