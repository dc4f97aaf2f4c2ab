"""DeepSpeed start-up shared by the training scripts (LM, DiT): engine config, process group, device,
and the cross-rank agreement on whether a step's loss is finite.

A script started as plain ``python scripts/x.py`` (no launcher) becomes a world of one on a free
local port; under ``deepspeed --num_gpus N`` the launcher's environment is used. CPU runs use gloo.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch


def deepspeed_config(path: str | Path, micro_batch_size: int, grad_accum: int, grad_clip: float) -> dict:
    """The JSON at ``path`` with the batch, accumulation and clipping of the run's own config."""
    cfg = json.loads(Path(path).read_text())
    cfg.update(train_micro_batch_size_per_gpu=micro_batch_size, gradient_accumulation_steps=grad_accum,
               gradient_clipping=grad_clip, steps_per_print=10**9, zero_allow_untested_optimizer=True)
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    return cfg


def init_distributed() -> tuple[int, int, torch.device]:
    """Start the process group; returns (rank, world size, this rank's device)."""
    import deepspeed
    import torch.distributed as dist

    cpu = deepspeed.accelerator.get_accelerator().device_name() == "cpu"
    if "RANK" not in os.environ:  # no launcher: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cpu:
        _skip_shared_memory_allreduce(deepspeed)
    deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl")
    device = torch.device("cpu") if cpu else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if not cpu:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _skip_shared_memory_allreduce(deepspeed) -> None:
    """Keep DeepSpeed from building and starting its CPU shared-memory all-reduce kernel.

    Training all-reduces go through gloo; the kernel only serves tensor-parallel inference. Starting it
    costs a C++ compile on a fresh machine, spins in a busy loop until every peer's segment exists
    (with more ranks than cores that starves the ranks it waits for), and leaves a 69 MB segment per
    rank in /dev/shm that is never unlinked. DeepSpeed reads op compatibility from one cached dict
    (``deepspeed.ops.__compatible_ops__``); marking the kernel incompatible there makes it fall back.
    """
    ops = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(ops, dict):  # DeepSpeed versions without the kernel have nothing to turn off
        ops["deepspeed_shm_comm"] = False


def all_finite(loss: torch.Tensor, world: int) -> bool:
    """True when the loss is finite on every rank: all ranks skip a step together or none does, so
    their collectives stay in step."""
    finite = torch.tensor([float(torch.isfinite(loss.detach()).all())])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return finite.item() == 1.0
