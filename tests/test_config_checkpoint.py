"""Configs (strict YAML round trip, overrides) and checkpoints (pretrained + training, atomic, verified)."""
from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field

import pytest
import torch

from kinema.checkpoint import (
    CheckpointManager, load_pretrained, rng_state, save_pretrained, set_rng_state,
)
from kinema.config import from_dict, load_config, save_config
from kinema.errors import CheckpointError, ConfigError


@dataclass
class Inner:
    dim: int = 8
    dropout: float = 0.0


@dataclass
class Outer:
    name: str = "tiny"
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    flag: bool = False


def test_config_yaml_round_trip(tmp_path):
    cfg = Outer(name="x", inner=Inner(dim=16, dropout=0.1), sizes=(3, 4, 5), flag=True)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    save_config(cfg, tmp_path / "c.json")
    assert load_config(Outer, tmp_path / "c.json") == cfg


def test_config_rejects_unknown_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="inner.dimm"):
        from_dict(Outer, {"inner": {"dimm": 3}})
    with pytest.raises(ConfigError, match="integer"):
        from_dict(Outer, {"inner": {"dim": "big"}})
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_config_dotted_overrides():
    cfg = load_config(Outer, None, ["inner.dim=32", "flag=true", "inner.dropout=1e-1", "sizes=[7]"])
    assert cfg.inner.dim == 32 and cfg.flag is True and cfg.inner.dropout == 0.1 and cfg.sizes == (7,)
    with pytest.raises(ConfigError):
        load_config(Outer, None, ["inner.nope=1"])


def test_pretrained_round_trip_and_kind_check(tmp_path):
    lin = torch.nn.Linear(4, 3)
    save_pretrained(tmp_path / "m", "toy", Inner(dim=4), lin.state_dict())
    cfg, state = load_pretrained(tmp_path / "m", Inner, "toy")
    assert cfg == Inner(dim=4)
    assert torch.equal(state["weight"], lin.weight.detach())
    with pytest.raises(CheckpointError, match="expected 'lm'"):
        load_pretrained(tmp_path / "m", Inner, "lm")
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nothing", Inner, "toy")


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}}


def test_training_checkpoints_rotate_and_skip_corrupt(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        mgr.save(step, _state(step), {"rng": rng_state(), "pos": step * 2})
    assert [p.name for p in sorted(tmp_path.glob("step_*"))] == ["step_00000020", "step_00000030"]
    latest = mgr.load_latest()
    assert latest.step == 30 and latest.state["pos"] == 60 and latest.modules["model"]["w"][0] == 30
    # corrupt the newest: flip bytes without changing the size
    f = tmp_path / "step_00000030" / "weights.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latest = mgr.load_latest()
    assert latest.step == 20
    assert any("corrupt" in str(w.message) for w in caught)


def test_incomplete_checkpoint_is_ignored(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _state(1), {})
    broken = tmp_path / "step_00000002"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes(b"\0" * 10)  # no manifest: a kill mid-write
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mgr.load_latest().step == 1


def test_malicious_pickle_is_not_executed(tmp_path):
    """A pickle with a payload placed as trainer state must not run code on load."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    mgr = CheckpointManager(tmp_path)
    path = mgr.save(5, _state(5), {})
    (path / "trainer_state.pt").write_bytes(pickle.dumps(Evil()))
    # refresh the manifest so only the weights_only loader stands between the file and execution
    import hashlib, json
    manifest = json.loads((path / "manifest.json").read_text())
    blob = (path / "trainer_state.pt").read_bytes()
    manifest["files"]["trainer_state.pt"] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception):
        mgr.load(path)
    assert not marker.exists()


def test_rng_state_round_trip():
    import random

    import numpy as np

    s = rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(s)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
