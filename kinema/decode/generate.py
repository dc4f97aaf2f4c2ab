"""Prefill + KV-cache decoding of the output part of a task, following an output plan.

    seq = layout.build_prefix("t2v", vocab, text=ids)
    plan = layout.output_plan("t2v", vocab, video_grid=(t, h, w), start_pos=seq.next_pos)
    useq = layout.build_prefix("t2v", vocab, text=None)            # text dropped: CFG's unconditional
    uplan = layout.output_plan("t2v", vocab, video_grid=(t, h, w), start_pos=useq.next_pos)
    g = torch.Generator().manual_seed(0)
    out = generate(model, [seq.ids], [seq.positions], [plan],
                   uncond_ids=[useq.ids], uncond_positions=[useq.positions], uncond_plan=[uplan],
                   guidance_scale=3.0, temperature=1.0, top_k=100, generator=g)   # (1, plan.length)

Prompts of different lengths are left-padded into one batch (padding is masked out as attention
keys), so every row writes the same cache slot at each step. With guidance the conditional and
unconditional rows run as ONE batched forward of 2B rows; their logits are mixed per step
(classifier-free guidance, Ho & Salimans 2022); a contrast prompt (``contrast_ids=``, or each
:class:`Contrast` in ``contrasts=``) adds one more block of B rows to the same forward and one more
guidance term. At each output index only the ids the plan allows
can be drawn; forced tokens (``<bov>``, ``<eos>``, ...) are written without sampling, and runs of
them are fed to the model in one call. Wrap the call in ``kinema.training.autocast`` for bf16.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from kinema.decode.sampling import cfg_mix, constrain, contrast_mix, sample
from kinema.errors import ResourceError

__all__ = ["Contrast", "generate", "left_pad"]


@dataclass
class Contrast:
    """One contrast branch of :func:`generate`: its prompt(s) (one, or one per row), their positions,
    output plan(s) and bidirectional prefix lengths, as for the unconditional branch, and its scale (one,
    or one per output index): ``scale * (cond - contrast)`` is added to the guided logits."""
    ids: Any
    positions: Any = None
    plan: Any = None
    prefix_len: Sequence[int] | None = None
    scale: Any = 0.0


def _as_list(x: Any, name: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if x.dim() in (1,) or (name.endswith("positions") and x.dim() == 2):
            return [x]
        return list(x.unbind(0))
    if isinstance(x, (list, tuple)) and x:
        return [torch.as_tensor(v) for v in x]
    raise ValueError(f"{name} must be a tensor or a non-empty list of tensors")


def left_pad(ids: list[torch.Tensor], positions: list[torch.Tensor], pad_id: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> ids (R, L), positions (R, L, 3), valid (R, L) bool, left-padded."""
    R, L = len(ids), max(int(v.numel()) for v in ids)
    out = torch.full((R, L), pad_id, dtype=torch.long)
    pos = torch.zeros(R, L, 3, dtype=torch.long)
    valid = torch.zeros(R, L, dtype=torch.bool)
    for r, (v, p) in enumerate(zip(ids, positions)):
        n = int(v.numel())
        if n == 0:
            raise ValueError("an empty prompt cannot be decoded from (it needs at least <bos> and a task token)")
        if p.shape[0] != n:
            raise ValueError(f"prompt {r}: {n} ids but {p.shape[0]} positions")
        p = p.view(n, -1).expand(n, 3) if p.dim() == 1 or p.shape[-1] == 1 else p
        out[r, L - n:] = v.view(-1)
        pos[r, L - n:] = p
        valid[r, L - n:] = True
    return out, pos, valid


def _plan_parts(plan: Any, n_rows: int, prefix_positions: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """bounds (N, 2) shared by all rows, positions (R, N, 3) per row."""
    if isinstance(plan, int):  # N free tokens with text-style positions continuing each prompt
        if plan <= 0:
            raise ValueError(f"number of new tokens must be positive, got {plan}")
        bounds = torch.tensor([[0, -1]]).expand(plan, 2).clone()
        starts = [int(p.view(p.shape[0], -1)[-1].max()) + 1 for p in prefix_positions]
        pos = torch.stack([torch.arange(s, s + plan).view(plan, 1).expand(plan, 3) for s in starts])
        return bounds, pos
    plans = list(plan) if isinstance(plan, (list, tuple)) else [plan]
    if len(plans) == 1:
        plans = plans * n_rows
    if len(plans) != n_rows:
        raise ValueError(f"got {len(plans)} output plans for {n_rows} prompts")
    bounds = plans[0].bounds()
    for p in plans[1:]:
        if not torch.equal(p.bounds(), bounds):
            raise ValueError("all prompts in a batch must share the same output plan layout (ids per step)")
    return bounds, torch.stack([p.positions for p in plans])


def _schedule(scale: Any, n: int, name: str) -> list[float]:
    """One float per output index from a scalar or an (n,) schedule."""
    s = torch.as_tensor(scale, dtype=torch.float32).flatten()
    if s.numel() == 1:
        s = s.expand(n)
    elif s.numel() != n:
        raise ValueError(f"{name} has {s.numel()} scales for a plan of {n} outputs")
    return s.tolist()


def _branch(ids: Any, positions: Any, plan: Any, prefix_len: Sequence[int] | None, B: int, bounds: torch.Tensor,
            V: int, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[int]]:
    """A guidance branch's prompts (one, or one per row), output positions (B, N, 3) and prefix lengths;
    its plan must lay out the same ids per step as the conditional one."""
    b_ids = _as_list(ids, f"{name} ids")
    b_pos = [torch.arange(v.numel()) for v in b_ids] if positions is None else _as_list(positions, f"{name} positions")
    if len(b_ids) == 1 and B > 1:
        b_ids, b_pos = b_ids * B, b_pos * B
    if len(b_ids) != B:
        raise ValueError(f"got {len(b_ids)} {name} prompts for {B} prompts")
    b_bounds, b_out_pos = _plan_parts(plan, B, b_pos)
    b_bounds[:, 1] = torch.where(b_bounds[:, 1] < 0, V, b_bounds[:, 1])
    if not torch.equal(b_bounds, bounds):
        raise ValueError(f"the {name} plan must have the same output layout as the conditional one")
    plens = list(prefix_len) if prefix_len is not None else [int(v.numel()) for v in b_ids]
    return b_ids, b_pos, b_out_pos, plens


@torch.no_grad()
def generate(
    model: Any,
    prefix_ids: torch.Tensor | Sequence[torch.Tensor],  # (B, L) or list of (L_b,)
    prefix_positions: torch.Tensor | Sequence[torch.Tensor] | None,  # (B, L, 3) or list of (L_b, 3)
    plan: Any,  # OutputPlan, list of OutputPlan (one per prompt), or an int (free tokens)
    *,
    prefix_len: Sequence[int] | None = None,  # bidirectional tokens per prompt; default: the whole prompt
    uncond_ids: torch.Tensor | Sequence[torch.Tensor] | None = None,
    uncond_positions: torch.Tensor | Sequence[torch.Tensor] | None = None,
    uncond_plan: Any = None,
    uncond_prefix_len: Sequence[int] | None = None,
    guidance_scale: float | Sequence[float] | torch.Tensor = 1.0,  # one scale, or one per output index (N,)
    guidance_plausibility: float | Sequence[float] | torch.Tensor = 0.0,  # one value, or one per output index (N,)
    contrast_ids: torch.Tensor | Sequence[torch.Tensor] | None = None,
    contrast_positions: torch.Tensor | Sequence[torch.Tensor] | None = None,
    contrast_plan: Any = None,
    contrast_prefix_len: Sequence[int] | None = None,
    contrast_scale: float | Sequence[float] | torch.Tensor = 0.0,  # one scale, or one per output index (N,)
    contrasts: Sequence[Contrast] = (),  # more contrast branches, after the contrast_* one
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    max_cache_len: int | None = None,
    return_scores: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """Decode the output tokens of ``plan`` after each prompt; returns ids (B, N) long.

    ``temperature=0`` is greedy. ``guidance_scale`` is one scale for every output or a schedule of
    one scale per output index (scale 1 there: the conditional logits alone).
    ``guidance_plausibility`` (with guidance; one value or one per output index) keeps only ids whose
    conditional probability is at least that fraction of the best id's (see ``cfg_mix``).
    ``contrast_*`` is a second guidance branch, a contrasting prompt (e.g. the caption with its
    motion replaced by "standing still"): ``contrast_scale * (cond - contrast)`` is added to the
    guided logits at each output index (``contrast_mix``); scale 0 everywhere skips the branch.
    ``contrasts`` adds more such branches, each with its own prompt and scale; their terms are summed.
    ``max_cache_len`` bounds the KV cache: when it fills, the prompt slots are kept and the oldest
    generated slots dropped (sliding window), so memory stays constant for long outputs. The model
    must provide ``new_cache``, ``prefill``, ``decode_step`` and ``cfg.vocab_size`` (see
    :class:`kinema.lm.model.KinemaLM`).

    ``return_scores=True`` also returns ``{"cond": (B, N), "uncond": (B, N) or None}``: the log
    probability of each drawn id under the conditional and the unconditional model (the plan's
    constraint applied, no temperature or guidance; 0 for forced tokens). Their difference summed
    over a span is the span's pointwise mutual information with the condition (see
    :mod:`kinema.decode.rerank`).
    """
    device = model.device if hasattr(model, "device") else torch.device("cpu")
    V = model.cfg.vocab_size
    ids_l = _as_list(prefix_ids, "prefix_ids")
    pos_l = ([torch.arange(v.numel()) for v in ids_l] if prefix_positions is None
             else _as_list(prefix_positions, "prefix_positions"))
    B = len(ids_l)
    if any(int(v.numel()) == 0 for v in ids_l):
        raise ValueError("an empty prompt cannot be decoded from (it needs at least <bos> and a task token)")
    bounds, out_pos = _plan_parts(plan, B, pos_l)
    bounds[:, 1] = torch.where(bounds[:, 1] < 0, V, bounds[:, 1])
    if int(bounds.min()) < 0 or int(bounds[:, 1].max()) > V or bool((bounds[:, 1] <= bounds[:, 0]).any()):
        raise ValueError(f"output plan allows ids outside the model's vocabulary of {V}")
    plens = list(prefix_len) if prefix_len is not None else [int(v.numel()) for v in ids_l]

    N = bounds.shape[0]
    scale_at = _schedule(guidance_scale, N, "guidance_scale")
    plaus_at = _schedule(guidance_plausibility, N, "guidance_plausibility")
    use_cfg = uncond_ids is not None and (any(v != 1.0 for v in scale_at) or return_scores)
    given = ([Contrast(contrast_ids, contrast_positions, contrast_plan, contrast_prefix_len, contrast_scale)]
             if contrast_ids is not None else []) + list(contrasts)
    used_contrasts = []  # (first row, scale per output index) of each contrast branch that acts somewhere
    extra = [(use_cfg, uncond_ids, uncond_positions, uncond_plan, uncond_prefix_len, "unconditional", None)]
    for k, c in enumerate(given):
        at = _schedule(c.scale, N, "contrast_scale" if k == 0 and contrast_ids is not None else f"contrasts[{k}].scale")
        extra.append((any(v != 0.0 for v in at), c.ids, c.positions, c.plan, c.prefix_len, "contrast", at))
    branches = 1  # rows come in blocks of B: conditional, [unconditional], [contrast, ...]
    for used, b_ids, b_pos, b_plan, b_plen, name, at in extra:
        if not used:
            continue
        r_ids, r_pos, r_out_pos, r_plens = _branch(b_ids, b_pos, b_plan if b_plan is not None else plan, b_plen,
                                                   B, bounds, V, name)
        ids_l, pos_l, plens = ids_l + r_ids, pos_l + r_pos, plens + r_plens
        out_pos = torch.cat([out_pos, r_out_pos])
        if at is not None:
            used_contrasts.append((branches * B, at))
        branches += 1
    use_contrast = bool(used_contrasts)

    ids, pos, valid = left_pad(ids_l, pos_l)
    R, L = ids.shape
    pad = (~valid).sum(1)  # (R,)
    pe = pad + torch.as_tensor(plens, dtype=torch.long)
    if bool((pe > L).any()):
        raise ValueError("prefix_len exceeds a prompt's length")
    ids, pos, valid, pe, out_pos = (t.to(device) for t in (ids, pos, valid, pe, out_pos))
    total = L + N - 1
    cache_len = total if max_cache_len is None else min(total, int(max_cache_len))
    if cache_len < L + 1:
        raise ResourceError(f"max_cache_len {max_cache_len} cannot hold the {L}-token prompt plus one token")
    cache = model.new_cache(R, cache_len)
    logits = model.prefill(ids, pos, cache, prefix_len=pe, attention_mask=valid)  # (R, V)

    lo, hi = bounds[:, 0].tolist(), bounds[:, 1].tolist()
    out = torch.empty(B, N, dtype=torch.long, device=device)
    scores = {"cond": torch.zeros(B, N, device=device),
              "uncond": torch.zeros(B, N, device=device) if use_cfg else None} if return_scores else None
    bar = tqdm(total=N, desc="decode", unit="tok", disable=not progress, leave=False)
    i = 0
    while i < N:
        if hi[i] == lo[i] + 1:  # forced run: write it, feed it in one call
            j = i
            while j < N and hi[j] == lo[j] + 1:
                j += 1
            out[:, i:j] = torch.tensor(lo[i:j], device=device)
        else:
            step = logits.float()  # (R, V)
            if lo[i] > 0 or hi[i] < V:
                step = constrain(step, lo[i], hi[i])
            raw = step
            if use_cfg or use_contrast:
                mixed = cfg_mix(step[:B], step[B:2 * B], scale_at[i], plaus_at[i]) if use_cfg else step[:B]
                for c0, at in used_contrasts:
                    mixed = contrast_mix(mixed, step[:B], step[c0:c0 + B], at[i])
                step = mixed  # (B, V)
            out[:, i] = sample(step, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            if scores is not None:
                lp = raw.log_softmax(-1).gather(1, out[:, i].repeat(branches).view(-1, 1)).view(-1)
                scores["cond"][:, i] = lp[:B]
                if use_cfg:
                    scores["uncond"][:, i] = lp[B:2 * B]
            j = i + 1
        bar.update(j - i)
        if j < N:  # feed tokens i..j-1 to get the logits for index j
            n = j - i
            if cache.length + n > cache.max_len:
                keep_last = cache.max_len - L - n
                if keep_last < 0:
                    raise ResourceError(f"max_cache_len {cache.max_len} cannot hold the prompt plus {n} forced tokens")
                cache.trim(L, keep_last)
            fed = out[:, i:j].repeat(branches, 1)
            logits = model.decode_step(fed, out_pos[:, i:j], cache)[:, -1]
        i = j
    bar.close()
    return (out, scores) if scores is not None else out
