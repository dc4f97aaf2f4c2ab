"""DeepSpeed LM training on CPU: a 2-process ZeRO run killed after a checkpoint resumes to the
same final weights as an uninterrupted run; single-process run learns and exports save_pretrained."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.lm.model import KinemaLM

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_lm.py"
TINY = REPO / "configs" / "lm" / "tiny.yaml"


def _env() -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(run_dir: Path, *overrides: str, procs: int = 2, zero: int = 2) -> list[str]:
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(_port()), "--num_gpus", str(procs),
           str(SCRIPT), "--config", str(TINY), "--deepspeed_config", str(REPO / f"configs/deepspeed/zero{zero}.json"),
           f"run_dir={run_dir}", *overrides]


def _launch(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(run_dir, *overrides), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_process_kill_resume_matches_uninterrupted(tmp_path):
    if shutil.which("deepspeed") is None and not _has_module("deepspeed"):
        pytest.skip("deepspeed not installed")
    common = ("train.steps=6", "train.ckpt_every=3", "train.log_every=1", "train.eval_every=6")
    # the uninterrupted run goes in parallel with the one that is killed and resumed
    straight_proc = subprocess.Popen(_cmd(tmp_path / "b", *common), env=_env(), cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = _launch(tmp_path / "a", *common, "train.stop_after=3")
    assert killed.returncode != 0, "the simulated crash must end the run"
    assert (tmp_path / "a" / "ds_checkpoints" / "step_00000003").is_dir(), killed.stdout[-3000:] + killed.stderr[-3000:]
    assert not (tmp_path / "a" / "final").exists()
    resumed = _launch(tmp_path / "a", *common)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    out, _ = straight_proc.communicate(timeout=600)
    assert straight_proc.returncode == 0, out[-3000:]
    wa = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0, msg=k)
    init = KinemaLM(KinemaLM.from_pretrained(tmp_path / "b" / "final").cfg).state_dict()
    assert any(not torch.equal(init[k], wb[k]) for k in wb)  # training changed the weights
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("train_loss") for r in la] == [r.get("train_loss") for r in lb]  # log continues cleanly


def test_single_process_learns_and_exports(tmp_path):
    env = _env()
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path}",
                        "train.steps=30", "train.eval_every=30", "train.ckpt_every=30", "train.log_every=5",
                        "--deepspeed_config", str(REPO / "configs/deepspeed/zero0.json")],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train_loss"] for x in recs if "train_loss" in x]
    assert losses[-1] < losses[0] - 0.5, losses
    assert (tmp_path / "loss_curve.png").is_file()
    model = KinemaLM.from_pretrained(tmp_path / "final")
    assert model.cfg.vocab["size"] == model.cfg.vocab_size


def test_bad_config_is_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path}", "model.bogus=1"],
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "train_lm: error:" in r.stderr and "Traceback" not in r.stderr


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
