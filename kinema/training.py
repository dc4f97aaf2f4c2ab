"""Pieces every training loop shares: metrics log + loss-curve image, EMA weights, LR schedule,
bf16 autocast, and a guard that skips non-finite steps.

Model files never import this; training scripts and trainers do.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path
from typing import Iterable

import torch

from kinema.precision import bf16_is_fast


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CPU and GPU where bf16 is native (kinema.precision: AVX-512 bf16 is ~2x fp32;
    emulated bf16 on an AVX2-only CPU is many times slower, so there it runs fp32). Never fp16 on CPU."""
    device_type = torch.device(device).type
    if not enabled or device_type not in ("cpu", "cuda") or not bf16_is_fast(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``min_ratio * base_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a module's parameters (and buffers copied as they are)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach().to(s.dtype), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), module.buffers()):
            s.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)


class NonFiniteGuard:
    """Skip steps whose loss or gradients are NaN/inf; stop after ``max_in_row`` in a row.

    >>> guard = NonFiniteGuard(max_in_row=5)
    >>> if guard.check(loss, model.parameters(), step): optimizer.step()
    """

    def __init__(self, max_in_row: int = 5, log=print):
        self.max_in_row = max_in_row
        self.in_row = 0
        self.skipped = 0
        self.log = log

    def check(self, loss: torch.Tensor, params: Iterable[torch.nn.Parameter] | None = None, step: int = -1) -> bool:
        finite = bool(torch.isfinite(loss.detach()).all())
        if finite and params is not None:
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                finite = bool(torch.isfinite(norm))
        if finite:
            self.in_row = 0
            return True
        self.in_row += 1
        self.skipped += 1
        self.log(f"step {step}: non-finite loss or gradient, step skipped ({self.in_row} in a row)")
        if self.in_row >= self.max_in_row:
            raise FloatingPointError(
                f"{self.in_row} non-finite steps in a row at step {step}; stopping. "
                "Resume from the last checkpoint with a lower learning rate."
            )
        return False


class MetricsLogger:
    """Append-only JSONL metrics plus a loss-curve PNG, and a warning on loss spikes."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, spike_factor: float = 3.0):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "metrics.jsonl"
        self.spike_factor = spike_factor
        self._avg: dict[str, float] = {}
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint so the curve continues cleanly."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", -1) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        for k, v in record.items():
            if k.endswith("loss") and math.isfinite(v):
                avg = self._avg.get(k)
                if avg is not None and v > self.spike_factor * avg and v - avg > 1e-3:
                    print(f"step {step}: loss spike in {k}: {v:.4g} vs running mean {avg:.4g}")
                self._avg[k] = v if avg is None else 0.95 * avg + 0.05 * v
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self, out: str | Path | None = None, keys: list[str] | None = None) -> Path | None:
        """Loss curves (every key ending in 'loss', or ``keys``) to a PNG; returns its path."""
        if not self.enabled:
            return None
        records = self.read()
        if not records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = keys or sorted({k for r in records for k in r if k.endswith("loss")})
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            pts = [(r["step"], r[k]) for r in records if k in r and math.isfinite(r[k])]
            if pts:  # per-task eval curves (eval_<task>_loss) dashed, the overall ones solid
                per_task = k.startswith("eval_") and k != "eval_loss"
                ax.plot(*zip(*pts), label=k, linestyle="--" if per_task else "-", marker="." if per_task else None)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out = Path(out or self.run_dir / "loss_curve.png")
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
