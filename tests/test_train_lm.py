"""DeepSpeed LM training on CPU: a 2-process ZeRO run killed after a checkpoint resumes to the
same final weights as an uninterrupted run; single-process run learns and exports save_pretrained."""
from __future__ import annotations

import json
import math
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
    shm_before = _shared_memory_segments()
    # the uninterrupted run goes in parallel with the one that is killed and resumed
    # its output goes to a file: an unread pipe fills up and would stall it mid-run
    straight_log = tmp_path / "straight.log"
    with straight_log.open("w") as log:
        straight_proc = subprocess.Popen(_cmd(tmp_path / "b", *common), env=_env(), cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
    killed = _launch(tmp_path / "a", *common, "train.stop_after=3")
    assert killed.returncode != 0, "the simulated crash must end the run"
    assert (tmp_path / "a" / "ds_checkpoints" / "step_00000003").is_dir(), killed.stdout[-3000:] + killed.stderr[-3000:]
    assert not (tmp_path / "a" / "final").exists()
    resumed = _launch(tmp_path / "a", *common)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    straight_proc.wait(timeout=600)
    assert straight_proc.returncode == 0, straight_log.read_text()[-3000:]
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
    # training leaves nothing behind in /dev/shm (DeepSpeed's shared-memory all-reduce stays off on CPU)
    assert _shared_memory_segments() <= shm_before


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
    # the eval scores each task of the mix on its own as well, and every task's loss is a real number
    ev = [x for x in recs if "eval_loss" in x][-1]
    per_task = {k: v for k, v in ev.items() if k.startswith("eval_") and k != "eval_loss"}
    assert len(per_task) >= 2 and all(math.isfinite(v) and v > 0 for v in per_task.values()), ev
    assert (tmp_path / "loss_curve.png").is_file()
    model = KinemaLM.from_pretrained(tmp_path / "final")
    assert model.cfg.vocab["size"] == model.cfg.vocab_size
    # init_from: a fine-tune starts where the exported weights are, not from scratch (here with the
    # train loss weighted toward the codes that change between latent frames)
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path / 'ft'}",
                        f"init_from={tmp_path / 'final'}", "data.change_weight=3", "train.steps=2", "train.eval_every=2",
                        "train.ckpt_every=2", "train.log_every=1",
                        "--deepspeed_config", str(REPO / "configs/deepspeed/zero0.json")],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ft = [json.loads(x)["train_loss"] for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
          if "train_loss" in x]
    assert ft[0] < losses[0] - 0.5, (ft, losses)
    # init_deepen: one more layer, inserted as the identity, so the first step's loss is the fine-tune's
    n = KinemaLM.from_pretrained(tmp_path / "final").cfg.n_layers
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path / 'deep'}",
                        f"init_from={tmp_path / 'final'}", "init_deepen=true", f"model.n_layers={n + 1}",
                        "data.change_weight=3",
                        "train.steps=2", "train.eval_every=2", "train.ckpt_every=2", "train.log_every=1",
                        "--deepspeed_config", str(REPO / "configs/deepspeed/zero0.json")],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "deepened" in r.stdout + r.stderr
    deep = [json.loads(x)["train_loss"] for x in (tmp_path / "deep" / "metrics.jsonl").read_text().splitlines()
            if "train_loss" in x]
    assert abs(deep[0] - ft[0]) < 0.02, (deep, ft)
    assert KinemaLM.from_pretrained(tmp_path / "deep" / "final").cfg.n_layers == n + 1
    # without init_deepen the shallower weights are refused with a hint, not loaded half-way
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path / 'refused'}",
                        f"init_from={tmp_path / 'final'}", f"model.n_layers={n + 1}", "train.steps=1",
                        "--deepspeed_config", str(REPO / "configs/deepspeed/zero0.json")],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "init_deepen=true" in r.stderr, r.stderr[-2000:]


def test_bad_config_is_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path}", "model.bogus=1"],
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "train_lm: error:" in r.stderr and "Traceback" not in r.stderr
    # a hand-off period with nowhere to write it is refused before any training, not silently ignored
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY), f"run_dir={tmp_path}",
                        "train.handoff_every=5"], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "train.handoff_every=5" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "ds_checkpoints").exists()


def _shared_memory_segments() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("deepspeed_*")} if shm.is_dir() else set()


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _single(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(TINY), "--deepspeed_config",
            str(REPO / "configs/deepspeed/zero0.json"), f"run_dir={run_dir}", "train.log_every=1",
            "train.eval_every=1000", *overrides]


def _module(run_dir: Path, step: int) -> dict:
    path = run_dir / "ds_checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["module"]  # written by this test's run


def test_injected_nan_step_is_skipped_and_logged(tmp_path):
    """train.inject_nonfinite_at makes step 3's loss NaN: no update at that step, the run finishes."""
    r = subprocess.run(_single(tmp_path, "train.steps=5", "train.ckpt_every=1", "train.inject_nonfinite_at=[3]"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "step 3: non-finite loss or gradient, step skipped" in r.stdout
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["nonfinite_skipped"]) for x in recs if "nonfinite_skipped" in x] == [(3, 1)]
    losses = {x["step"]: x["train_loss"] for x in recs if "train_loss" in x}
    assert sorted(losses) == [1, 2, 4, 5] and all(map(math.isfinite, losses.values()))
    w2, w3, w4 = _module(tmp_path, 2), _module(tmp_path, 3), _module(tmp_path, 4)
    assert all(torch.equal(w2[k], w3[k]) for k in w2)  # the skipped step changed nothing
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)  # the next one trained again
    final = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in final.values())
    assert any(not torch.equal(w2[k], final[k]) for k in final)


def test_nan_steps_in_a_row_stop_with_one_line(tmp_path):
    """Five non-finite steps in a row (the guard's limit) end the run: one error line, exit 2, no export."""
    r = subprocess.run(_single(tmp_path, "train.steps=10", "train.ckpt_every=10",
                               "train.inject_nonfinite_at=[2,3,4,5,6,7]"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if "train_lm: error:" in line]
    assert errors == ["train_lm: error: 5 non-finite steps in a row at step 6; stopping. "
                      "Resume from the last checkpoint with a lower learning rate."], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "final").exists()


def test_handoff_carries_a_run_to_a_machine_without_its_checkpoints(tmp_path):
    """train.handoff_dir: the stop writes bf16 weights + step + metrics; a run with no DeepSpeed
    checkpoint (a new machine) goes on from there at that step, with the carried weights."""
    from kinema.handoff import read_handoff

    hand = tmp_path / "handoff"
    r = subprocess.run(_single(tmp_path / "a", "train.steps=12", "train.ckpt_every=6", "train.max_minutes=1e-9",
                               f"train.handoff_dir={hand}"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert read_handoff(hand)["step"] == 1  # max_minutes stopped it after the first step
    carried = load_file(str(hand / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in carried.values())
    # the new machine: same config, an empty run directory; the run ends at step 12
    r = subprocess.run(_single(tmp_path / "b", "train.steps=12", "train.ckpt_every=6", f"train.handoff_dir={hand}",
                               "train.stop_after=6"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 17, r.stdout[-3000:] + r.stderr[-3000:]  # killed right after step 6's checkpoint
    assert "continuing from the hand-off" in r.stdout and "at step 1" in r.stdout, r.stdout[-2000:]
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps[1:6] == [2, 3, 4, 5, 6], steps  # step 1 came with the hand-off
    # the carried weights were the starting point: step 2's module differs from them by one update only
    w6 = _module(tmp_path / "b", 6)
    assert any(not torch.equal(w6[k].bfloat16(), carried[k]) for k in carried)
    # a rerun on the same machine resumes from its DeepSpeed checkpoint (full state), not the hand-off
    r = subprocess.run(_single(tmp_path / "b", "train.steps=12", "train.ckpt_every=6", f"train.handoff_dir={hand}"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed from" in r.stdout and "continuing from the hand-off" not in r.stdout
    assert read_handoff(hand)["step"] == 12
    recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if "train_loss" in x] == list(range(1, 13))
    # Adam starts afresh at the hand-off, so the learning rate warms up again from there
    lr = {x["step"]: x["lr"] for x in recs if "lr" in x}
    assert lr[2] < lr[1] and lr[2] < lr[3] < lr[4], lr  # the schedule alone would be at its peak by step 4
    final = KinemaLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    assert all(torch.equal(final[k].bfloat16(), v) for k, v in load_file(str(hand / "model.safetensors")).items())


def test_handoff_every_survives_a_kill(tmp_path):
    """train.handoff_every: a run killed with no clean stop (a session cut off) still leaves a hand-off
    at its last multiple-of-N checkpoint, holding that step's weights in bf16."""
    from kinema.handoff import read_handoff

    hand = tmp_path / "handoff"
    r = subprocess.run(_single(tmp_path / "a", "train.steps=12", "train.ckpt_every=3", "train.handoff_every=6",
                               "train.stop_after=9", f"train.handoff_dir={hand}"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 17, r.stdout[-3000:] + r.stderr[-3000:]  # killed after step 9's checkpoint
    assert read_handoff(hand)["step"] == 6  # 9 is not a multiple of 6: the step-6 hand-off stands
    carried = load_file(str(hand / "model.safetensors"))
    w6 = _module(tmp_path / "a", 6)
    assert set(carried) == set(w6) and all(torch.equal(w6[k].bfloat16(), v) for k, v in carried.items())
    steps = [json.loads(x)["step"] for x in (hand / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6


def test_every_lm_config_in_the_repo_parses():
    """Each configs/lm/*.yaml loads into the trainer's config and gives a valid LMConfig (a typo in a
    key, e.g. model.rope_spatial, fails here rather than after DeepSpeed starts)."""
    from conftest import REPO, load_script
    from kinema.config import load_config
    from kinema.lm.model import LMConfig

    mod = load_script("train_lm")
    paths = sorted((REPO / "configs" / "lm").glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        cfg = load_config(mod.LMTrainConfig, str(path), [])
        LMConfig.preset(cfg.preset, **{**cfg.model, "vocab_size": 1024})
