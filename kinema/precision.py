"""Whether bf16 autocast pays on a device, so every module asks one place.

bf16 autocast roughly doubles matmul/conv throughput on CPUs with AVX-512 bf16 (or AMX) and on GPUs
with bf16 tensor cores. Elsewhere it is emulated: on an AVX2-only CPU (e.g. some AMD EPYC machines)
the audio codec's bf16 encode measured 2.2-2.5 s per 2 s clip against 0.14 s in fp32. So bf16 is used
only where the hardware has it; ``KINEMA_BF16=1`` / ``=0`` overrides the check (tests, benchmarks).
fp16 is never used on CPU.
"""
from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_is_fast(device: torch.device | str) -> bool:
    """True when bf16 autocast on ``device`` runs on native bf16 hardware (or KINEMA_BF16=1)."""
    forced = os.environ.get("KINEMA_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return _cpu_has_bf16()
    return False
