"""Make a trained KinemaLM deeper without changing what it computes.

Follows Net2DeeperNet (Chen, Goodfellow & Shlens, 2016, "Net2Net: Accelerating Learning via
Knowledge Transfer", arXiv:1511.05641): a new layer starts as the identity, so the deeper model
begins at the trained model's loss and training only adds to it. In a pre-norm residual block
``x + attn(norm(x))`` then ``x + mlp(norm(x))``, the block is the identity exactly when the two
projections that write into the residual stream (``attn.out`` and ``mlp.down``) are zero.

Each new block copies the norms, attention projections and MLP input weights of the trained block
just below it, so its first gradients see features the model already uses, and zeroes its two
output projections. New blocks are spread evenly through the stack (3 -> 6 layers puts one after
each trained block).

    from kinema.lm.grow import deepen
    deep = deepen(KinemaLM.from_pretrained(dir), n_layers=6)   # same logits as before, twice the depth
"""
from __future__ import annotations

import copy

import torch

from kinema.errors import ConfigError
from kinema.lm.model import KinemaLM, replace

__all__ = ["deepen", "growth_plan"]


def growth_plan(old_layers: int, new_layers: int) -> list[int | None]:
    """Which trained block each slot of the deeper stack holds: its index, or None for a new block.

    New blocks are spread evenly: the j-th new one goes after trained block ``j * old // added``.
    """
    if old_layers <= 0 or new_layers < old_layers:
        raise ConfigError(f"can only deepen a model: {old_layers} -> {new_layers} layers")
    added = new_layers - old_layers
    after = [0] * old_layers
    for j in range(added):
        after[j * old_layers // added] += 1
    plan: list[int | None] = []
    for i in range(old_layers):
        plan.append(i)
        plan.extend([None] * after[i])
    return plan


@torch.no_grad()
def deepen(model: KinemaLM, n_layers: int) -> KinemaLM:
    """A new KinemaLM with ``n_layers`` blocks that computes exactly what ``model`` computes.

    The input model is left as it is. Every configuration entry other than ``n_layers`` is kept.
    """
    plan = growth_plan(model.cfg.n_layers, n_layers)
    deep = KinemaLM(replace(model.cfg, n_layers=n_layers)).to(device=model.device, dtype=next(model.parameters()).dtype)
    deep.embed.load_state_dict(model.embed.state_dict())
    deep.norm.load_state_dict(model.norm.state_dict())
    if model.head is not None:
        deep.head.load_state_dict(model.head.state_dict())
    last = 0
    for slot, src in enumerate(plan):
        if src is not None:
            last = src
            deep.blocks[slot].load_state_dict(model.blocks[src].state_dict())
        else:
            new = copy.deepcopy(model.blocks[last])
            new.attn.out.weight.zero_()
            new.mlp.down.weight.zero_()
            deep.blocks[slot].load_state_dict(new.state_dict())
    return deep
