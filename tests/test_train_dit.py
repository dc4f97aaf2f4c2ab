"""DeepSpeed DiT training on CPU: a single-process run killed right after a checkpoint resumes from
``<run_dir>/ds_checkpoints`` and ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.decode.dit_generator import DiTGenerator

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_dit.py"
TINY = REPO / "configs" / "diffusion" / "dit_tiny.yaml"
COMMON = ("data.clips=4", "data.size=[32,32]", "data.frames=9", "train.steps=4", "train.ckpt_every=2",
          "train.log_every=1", "train.micro_batch_size=2")


def _env() -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(TINY), "--deepspeed_config",
            str(REPO / "configs/deepspeed/zero0.json"), f"run_dir={run_dir}", *COMMON, *overrides]


def _ds_state(run_dir: Path, step: int) -> dict:
    path = run_dir / "ds_checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt"
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this test


def test_killed_run_resumes_to_identical_weights(tmp_path, killed_and_straight_runs):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    a, b = tmp_path / "a", tmp_path / "b"

    def stopped_at_2():
        assert (a / "ds_checkpoints" / "step_00000002").is_dir()
        assert not (a / "ds_checkpoints" / "step_00000004").exists() and not (a / "final").exists()

    killed_and_straight_runs(_cmd, a, b, _env(), ("train.stop_after=2",), after_kill=stopped_at_2)

    # shipped weights (EMA, bf16), then the fp32 training weights and EMA in the last checkpoint
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0, msg=k)
    sa, sb = _ds_state(a, 4), _ds_state(b, 4)
    for what in ("module", "ema"):
        assert sa[what].keys() == sb[what].keys()
        for k in sa[what]:
            torch.testing.assert_close(sa[what][k], sb[what][k], atol=0, rtol=0, msg=f"{what} {k}")

    # training changed the weights: compare with the initialisation the script makes (seed 0)
    torch.manual_seed(0)
    init = DiTGenerator(DiTGenerator.from_pretrained(b / "final").cfg).state_dict()
    assert any(not torch.equal(init[k], sb["module"][k]) for k in init)
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [1, 2, 3, 4]  # the log continues cleanly after the restart
    assert [r.get("train_loss") for r in la] == [r.get("train_loss") for r in lb]


def test_injected_nan_step_is_skipped(tmp_path):
    """A NaN loss at step 2 (train.inject_nonfinite_at) changes nothing and is logged; the run finishes
    with finite weights, and the next step trains again."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    r = subprocess.run(_cmd(tmp_path, "train.ckpt_every=1", "train.inject_nonfinite_at=[2]"), env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if "nonfinite_skipped" in x] == [2]
    s1, s2, s3 = (_ds_state(tmp_path, k) for k in (1, 2, 3))
    assert all(torch.equal(s1["module"][k], s2["module"][k]) for k in s1["module"])  # skipped: no update
    assert any(not torch.equal(s2["module"][k], s3["module"][k]) for k in s2["module"])  # trains again
    final = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in final.values())


def test_training_clips_never_carry_a_held_out_caption(tmp_path, monkeypatch):
    """The DiT's clips skip every scene whose caption is one of the evaluation's prompts, as the dataset
    writer does: starting at a held-out scene's seed, the cache holds only later, non-held-out seeds."""
    from kinema.data.heldout import heldout_captions, heldout_seed, is_heldout
    from kinema.data.synthetic import sample_scene

    spec = importlib.util.spec_from_file_location("train_dit_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    first = heldout_seed(heldout_captions()[0])
    cfg = mod.DiTDataConfig(clips=2, first_seed=first, size=(32, 32), frames=1)
    data = mod.build_latents(cfg, tmp_path / "latents.safetensors")
    seeds = data["seeds"].tolist()
    assert len(seeds) == 2 and data["latents"].shape[0] == 2 and first < seeds[0] < seeds[1]
    assert not any(is_heldout(sample_scene(s).caption) for s in seeds)
    assert all(is_heldout(sample_scene(s).caption) for s in range(first, seeds[0]))


def test_held_out_clips_log_a_comparable_eval_loss(tmp_path):
    """train.eval_clips keeps the cache's last clips out of training and logs their flow loss under fixed
    noise at every eval step; an impossible count is refused with a clear message."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    bad = subprocess.run(_cmd(tmp_path / "bad", "train.eval_clips=4"), env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "train.eval_clips must be in [0, 4)" in bad.stderr
    r = subprocess.run(_cmd(tmp_path / "run", "train.eval_clips=2", "train.eval_every=2", "train.lr=0.0"),
                       env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [(x["step"], x["eval_loss"]) for x in recs if "eval_loss" in x]
    assert [s for s, _ in evals] == [2, 4]
    # learning rate 0: the weights never change, so the fixed-noise loss is the same number every time
    assert evals[0][1] == evals[1][1] and evals[0][1] > 0


def test_eval_every_below_one_is_refused_before_any_work(tmp_path):
    r = subprocess.run(_cmd(tmp_path / "run", "train.eval_every=0"), env=_env(), cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "train.eval_every must be >= 1" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory or the latent cache


def test_init_from_grows_a_trained_dit_without_changing_its_loss(tmp_path):
    """train.init_from starts a run from a trained DiT; a deeper config grows it first, and at learning rate 0
    the grown model's held-out loss is the trained model's. A directory that does not fit is refused."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    first = subprocess.run(_cmd(tmp_path / "a", "train.steps=2"), env=_env(), cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    trained = tmp_path / "a" / "final"
    grown = subprocess.run(_cmd(tmp_path / "b", f"train.init_from={trained}", "model.depth=3", "train.lr=0.0",
                                "train.bf16=false", "train.eval_clips=2", "train.eval_every=2", "train.steps=2"),
                           env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    logged = [x["eval_loss"] for x in recs if "eval_loss" in x]
    cache = load_file(str(tmp_path / "b" / "latents.safetensors"))
    base = DiTGenerator.from_pretrained(trained).float()
    expected = base.fixed_noise_loss(cache["latents"][2:], cache["text"][2:], 2)
    assert len(logged) == 1 and logged[0] == pytest.approx(expected, abs=1e-5)
    out = DiTGenerator.from_pretrained(tmp_path / "b" / "final")
    assert out.cfg.depth == 3 and base.cfg.depth == 2 and out.cfg.latent_std == base.cfg.latent_std

    for bad, message in ((("model.dim=64",), "does not match the config (dim: 32 vs 64"),
                         (("model.depth=1",), "a model can be grown, not cut"),
                         ((), "is not a DiT model directory")):
        src = trained if bad else tmp_path / "nowhere"
        r = subprocess.run(_cmd(tmp_path / "c", f"train.init_from={src}", *bad), env=_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and not (tmp_path / "c").exists()  # refused before any clip


def test_object_weight_renders_masks_once_and_is_refused_below_zero(tmp_path):
    """train.object_weight weights the flow loss on the clips' object positions: the masks are rendered
    again from the cache's seeds into <run_dir>/object_masks.safetensors (latent grid, a few objects each)."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    bad = subprocess.run(_cmd(tmp_path / "bad", "train.object_weight=-1"), env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "train.object_weight must be >= 0" in bad.stderr
    r = subprocess.run(_cmd(tmp_path / "run", "train.object_weight=4", "train.steps=2"), env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    masks = load_file(str(tmp_path / "run" / "object_masks.safetensors"))["masks"]
    latents = load_file(str(tmp_path / "run" / "latents.safetensors"))["latents"]
    assert masks.shape == (latents.shape[0], *latents.shape[2:])
    assert 0 < masks.float().mean() < 0.6
