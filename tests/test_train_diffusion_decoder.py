"""Diffusion decoder training: a run killed right after a checkpoint resumes from
``<out>/checkpoints`` and ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from kinema.checkpoint import CheckpointManager
from kinema.decode.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_diffusion_decoder.py"


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--out", str(out), "--preset", "tiny", "--clips", "2", "--size", "16", "16",
            "--frames", "5", "--batch", "2", "--steps", "4", "--ckpt-every", "2", "--log-every", "1", *extra]


def test_killed_run_resumes_to_identical_weights(tmp_path, killed_and_straight_runs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    a, b = tmp_path / "a", tmp_path / "b"

    def stopped_at_2():
        assert (a / "checkpoints" / "step_00000002").is_dir() and not (a / "final").exists()

    killed_and_straight_runs(_cmd, a, b, env, ("--stop-after", "2"), timeout=300, after_kill=stopped_at_2)

    # shipped weights (EMA, bf16), then the fp32 weights, EMA and optimizer state of the last checkpoint
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0, msg=k)
    ca = CheckpointManager(a / "checkpoints").load_latest()
    cb = CheckpointManager(b / "checkpoints").load_latest()
    assert ca.step == cb.step == 4
    for what in ("model", "ema"):
        assert ca.modules[what].keys() == cb.modules[what].keys()
        for k in ca.modules[what]:
            torch.testing.assert_close(ca.modules[what][k], cb.modules[what][k], atol=0, rtol=0, msg=f"{what} {k}")
    for sa, sb in zip(ca.state["opt"]["state"].values(), cb.state["opt"]["state"].values()):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=f"optimizer {k}")

    torch.manual_seed(0)  # the script's initialisation: training changed the weights
    init = DiffusionDecoder(DiffusionDecoderConfig.preset("tiny")).state_dict()
    assert any(not torch.equal(init[k], cb.modules["model"][k]) for k in init)
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [1, 2, 3, 4] and la == lb  # the log continues cleanly
