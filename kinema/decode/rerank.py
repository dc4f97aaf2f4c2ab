"""Best-of-K decoding of an output's head: draw K heads in one batch, keep the best, decode the rest.

The first latent frame of a text-to-video window is decoded from the caption alone, and it is where
the objects' colours and shapes are decided; everything after mostly carries them on. So instead of
drawing one head, draw ``candidates`` heads in one batch and keep the one a ranking function likes
best; the rest of the output is then decoded after the chosen head, exactly as if it had been drawn
first. Two rankings:

- :func:`caption_rank`: a contrastive caption <-> frame scorer
  (:class:`kinema.decode.caption_scorer.CaptionScorer`), as DALL-E reranks its samples with CLIP
  (Ramesh et al., 2021, arXiv:2102.12092). This is the one the pipeline uses.
- :func:`pmi`: the head's pointwise mutual information with the prompt under the LM itself,
  ``sum_i log p(x_i | caption, x_<i) - log p(x_i | no caption, x_<i)``, from the two rows guided
  decoding computes anyway (maximum-mutual-information reranking, Li et al., 2016,
  arXiv:1510.03055). Measured on kinema-tiny it picks no better than chance (README), because the
  sum is dominated by the background's many tokens; it is kept as the scorer-free baseline.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from kinema.decode.generate import Contrast, generate

__all__ = ["decode_reranked_head", "pmi", "caption_rank"]

Rank = Callable[[torch.Tensor, dict], torch.Tensor]  # (heads (K, n) ids, generate's scores) -> (K,)


def pmi(heads: torch.Tensor, scores: dict) -> torch.Tensor:
    """Each head's pointwise mutual information with the condition, (K,) nats."""
    if scores.get("uncond") is None:
        raise ValueError("PMI ranking needs the unconditional prompt (uncond_ids=...)")
    return (scores["cond"] - scores["uncond"]).sum(1)


def caption_rank(scorer: Any, text: list[int], to_codes: Callable[[torch.Tensor], torch.Tensor]) -> Rank:
    """Rank heads by the caption scorer: ``to_codes`` turns head ids (K, n) into code grids
    (K, t, h, w); a head's rank is ``scorer.score`` with ``text`` averaged over its t latent frames."""
    def rank(heads: torch.Tensor, scores: dict) -> torch.Tensor:
        codes = to_codes(heads)
        K, t = codes.shape[:2]
        dev = next(scorer.parameters()).device
        return scorer.score(codes.flatten(0, 1).to(dev), text).float().cpu().view(K, t).mean(1)
    return rank


def decode_reranked_head(model: Any, ids: torch.Tensor, positions: torch.Tensor, plan: Any, *,
                         head_len: int, candidates: int, rank: Rank = pmi, uncond_ids: torch.Tensor | None = None,
                         uncond_positions: torch.Tensor | None = None, uncond_plan: Any = None,
                         contrast_ids: torch.Tensor | None = None, contrast_positions: torch.Tensor | None = None,
                         contrast_plan: Any = None, contrasts: tuple[Contrast, ...] | list[Contrast] = (),
                         **gen_kw: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode ``plan`` after one prompt ``ids`` (L,) / ``positions`` (L, 3): its first ``head_len``
    outputs the best of ``candidates`` by ``rank``, the rest after the chosen head. ``uncond_*`` (the
    prompt without its condition) are guidance's unconditional branch, ``contrast_*`` and
    ``contrasts`` (one prompt each) its contrast branches (:func:`generate`). ``gen_kw`` go to
    :func:`generate` (guidance, temperature, generator, ...). Returns the output ids (N,) and
    ``{"rank": [K floats], "chosen": k}``.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if not 0 < head_len < plan.length:
        raise ValueError(f"head_len {head_len} must be inside the plan's {plan.length} outputs")
    progress = gen_kw.pop("progress", False)
    head, tail = plan.split(head_len)
    head_kw, tail_kw = {}, {}  # per-index schedules cut at the head

    def cut(value: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.as_tensor(value, dtype=torch.float32).flatten()
        return (scale, scale) if scale.numel() == 1 else (scale[:head_len], scale[head_len:])

    for name, default in (("guidance_scale", 1.0), ("guidance_plausibility", 0.0)):
        head_kw[name], tail_kw[name] = cut(gen_kw.pop(name, default))
    K = int(candidates)
    contrast_scale = gen_kw.pop("contrast_scale", 0.0)
    given = ([Contrast(contrast_ids, contrast_positions, contrast_plan, None, contrast_scale)]
             if contrast_ids is not None else []) + list(contrasts)
    u_plan = uncond_plan if uncond_plan is not None else plan
    if uncond_ids is not None:
        head_kw.update(uncond_ids=[uncond_ids] * K, uncond_positions=[uncond_positions] * K,
                       uncond_plan=[u_plan.split(head_len)[0]] * K)
    head_kw["contrasts"], tail_contrasts = [], []
    for c in given:
        c_plan = c.plan if c.plan is not None else plan
        (c_head, c_tail), (s_head, s_tail) = c_plan.split(head_len), cut(c.scale)
        head_kw["contrasts"].append(Contrast([c.ids] * K, [c.positions] * K, [c_head] * K, None, s_head))
        tail_contrasts.append((c, c_head, c_tail, s_tail))
    heads, scores = generate(model, [ids] * K, [positions] * K, [head] * K, return_scores=True,
                             progress=progress, **head_kw, **gen_kw)
    ranks = rank(heads, scores).view(-1)  # (K,)
    k = int(ranks.argmax())
    chosen = heads[k].to(ids.device)
    if uncond_ids is not None:
        u_head, u_tail = u_plan.split(head_len)
        tail_kw.update(uncond_ids=[torch.cat([uncond_ids, chosen])],
                       uncond_positions=[torch.cat([uncond_positions, u_head.positions.to(positions.device)])],
                       uncond_plan=[u_tail], uncond_prefix_len=[int(uncond_ids.numel())])
    tail_kw["contrasts"] = [Contrast([torch.cat([c.ids, chosen])],
                                     [torch.cat([c.positions, c_head.positions.to(positions.device)])],
                                     [c_tail], [int(c.ids.numel())], s_tail)
                            for c, c_head, c_tail, s_tail in tail_contrasts]
    rest = generate(model, [torch.cat([ids, chosen])], [torch.cat([positions, head.positions.to(positions.device)])],
                    [tail], prefix_len=[int(ids.numel())], progress=progress, **tail_kw, **gen_kw)
    return torch.cat([chosen, rest[0]]), {"rank": [round(float(v), 4) for v in ranks], "chosen": k}
