"""kinema.precision: bf16 autocast only where the hardware has it, and the KINEMA_BF16 override."""
from __future__ import annotations

import torch

from kinema.precision import _cpu_has_bf16, bf16_is_fast
from kinema.training import autocast


def _matmul_dtype() -> torch.dtype:
    with autocast("cpu"):
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_override_switches_training_autocast(monkeypatch):
    monkeypatch.setenv("KINEMA_BF16", "1")
    assert bf16_is_fast("cpu") and _matmul_dtype() == torch.bfloat16
    monkeypatch.setenv("KINEMA_BF16", "0")
    assert not bf16_is_fast("cpu") and _matmul_dtype() == torch.float32


def test_default_follows_the_cpu(monkeypatch):
    monkeypatch.delenv("KINEMA_BF16", raising=False)
    assert bf16_is_fast("cpu") == _cpu_has_bf16()
    assert _matmul_dtype() == (torch.bfloat16 if _cpu_has_bf16() else torch.float32)
    assert not bf16_is_fast("meta")
    with autocast("cpu", enabled=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_audio_codec_follows_it(monkeypatch):
    from kinema.tokenizers.audio import autocast_if

    for flag, dtype in (("1", torch.bfloat16), ("0", torch.float32)):
        monkeypatch.setenv("KINEMA_BF16", flag)
        with autocast_if(True, torch.device("cpu")):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
