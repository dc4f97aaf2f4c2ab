"""Shared training pieces: non-finite steps skipped then stopped, metrics + loss curve, EMA, LR schedule."""
from __future__ import annotations

import math

import pytest
import torch

from kinema.training import EMA, MetricsLogger, NonFiniteGuard, cosine_lr


def test_non_finite_steps_are_skipped_then_stop():
    model = torch.nn.Linear(2, 1)
    logs = []
    guard = NonFiniteGuard(max_in_row=3, log=logs.append)
    model.weight.grad = torch.ones_like(model.weight)
    assert guard.check(torch.tensor(1.0), model.parameters(), 0)
    assert not guard.check(torch.tensor(float("nan")), model.parameters(), 1)
    model.weight.grad = torch.full_like(model.weight, float("inf"))
    assert not guard.check(torch.tensor(1.0), model.parameters(), 2)  # finite loss, inf gradient
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row"):
        guard.check(torch.tensor(float("inf")), None, 3)
    assert guard.skipped == 3 and len(logs) == 3


def test_metrics_log_truncate_and_plot(tmp_path, capsys):
    log = MetricsLogger(tmp_path)
    for step in range(20):
        log.log(step, loss=1.0 / (step + 1))
    log.log(20, loss=50.0)
    assert "loss spike" in capsys.readouterr().out
    log.truncate_after(9)
    assert [r["step"] for r in log.read()] == list(range(10))
    png = log.plot()
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_ema_and_cosine():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert math.isclose(float(ema.shadow.weight), 0.5)
    assert cosine_lr(0, 1.0, 10, 100) == 0.1
    assert math.isclose(cosine_lr(100, 1.0, 10, 100, min_ratio=0.1), 0.1)
    assert cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
