"""Make a trained DiT generator deeper without changing what it computes.

The DiT counterpart of :mod:`kinema.lm.grow`, after Net2DeeperNet (Chen, Goodfellow & Shlens, 2016,
"Net2Net", arXiv:1511.05641). An adaLN-zero block (Peebles & Xie, DiT, arXiv 2212.09748) writes into
the residual stream through two projections, the attention output ``proj`` and the MLP's last
linear, each scaled by a gate; it is the identity exactly when both projections (weights and
biases) are zero. Each new block copies the trained block just below it (norm modulation, gates,
attention and MLP input weights), so its first gradients see features the model already uses, and
zeroes those two projections. New blocks are spread evenly through the stack
(:func:`kinema.lm.grow.growth_plan`). The text encoder, patch embedding, timestep MLP, final layer and
latent statistics are kept.

    deep = deepen_dit(DiTGenerator.from_pretrained(dir), depth=8)   # same velocities, twice the depth
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from kinema.decode.dit_generator import DiTGenerator
from kinema.lm.grow import growth_plan

__all__ = ["deepen_dit"]


@torch.no_grad()
def deepen_dit(model: DiTGenerator, depth: int) -> DiTGenerator:
    """A new DiTGenerator with ``depth`` blocks that predicts exactly what ``model`` predicts.

    The input model is left as it is; every configuration entry other than ``depth`` is kept.
    """
    plan = growth_plan(model.cfg.depth, depth)
    ref = next(model.parameters())
    deep = DiTGenerator(replace(model.cfg, depth=depth)).to(device=ref.device, dtype=ref.dtype)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("net.blocks.")}
    missing, unexpected = deep.load_state_dict(own, strict=False)
    if unexpected or any(not k.startswith("net.blocks.") for k in missing):
        raise RuntimeError(f"deepen_dit: state mismatch (missing {missing}, unexpected {unexpected})")
    last = 0
    for slot, src in enumerate(plan):
        if src is not None:
            last = src
            deep.net.blocks[slot].load_state_dict(model.net.blocks[src].state_dict())
        else:
            new = copy.deepcopy(model.net.blocks[last])
            for layer in (new.proj, new.mlp[2]):
                layer.weight.zero_()
                layer.bias.zero_()
            deep.net.blocks[slot].load_state_dict(new.state_dict())
    return deep.train(model.training)
