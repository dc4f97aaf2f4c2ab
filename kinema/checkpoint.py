"""The one checkpoint format, and crash-safe files.

Two kinds of checkpoint, both pickle-free for weights:

* **pretrained** (what users load): a directory with ``config.json`` (``{"kind", "config",
  "kinema_version"}``) and ``model.safetensors``. Written by :func:`save_pretrained`, read by
  :func:`load_pretrained`. Every trainable component's ``save_pretrained``/``from_pretrained`` goes
  through these two functions.
* **training** (what a killed run resumes from): :class:`CheckpointManager` writes
  ``root/step_00000100/`` holding ``weights.safetensors`` (every module's tensors, prefixed),
  ``trainer_state.pt`` (optimizer state, RNG, step, data position; loaded with
  ``weights_only=True``) and ``manifest.json`` (size + sha256 of each file, written last). The
  directory is built under a temporary name and renamed when complete, so a kill at any moment
  leaves either the previous checkpoint or the new one, never half of one. On load, a checkpoint
  whose files do not match its manifest is skipped, with a warning, for the one before it.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kinema.config import from_dict, to_dict
from kinema.errors import CheckpointError

T = TypeVar("T")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# ----------------------------------------------------------------------------- atomic files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or strided storage)."""
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state entry {k!r} is not a tensor")
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(_state_to_cpu(tensors), tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from None


# ----------------------------------------------------------------------------- pretrained
def save_pretrained(
    directory: str | Path,
    kind: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for one component.

    ``kind`` names the component ("video_tokenizer", "audio_codec", "lm", ...) so loading the wrong
    directory fails with a clear message. ``dtype`` (e.g. torch.bfloat16) casts floating tensors
    to keep shipped files small.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    save_tensors(directory / WEIGHTS_NAME, state_dict, metadata={"kind": kind})
    from kinema import __version__

    meta = {"kind": kind, "kinema_version": __version__, "config": to_dict(config)}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2))
    return directory


def weights_fingerprint(module: torch.nn.Module, prefixes: tuple[str, ...], skip_suffixes: tuple[str, ...] = ()) -> str:
    """Short hash of the weights under ``prefixes`` (names, shapes, values cast to bf16, the shipped
    format, so a model and its bf16 export agree). A tokenizer's encoder side decides its codes, so
    its fingerprint says which codes an LM was trained on, unchanged by a decoder-only fine-tune."""
    h = hashlib.sha256()
    state = module.state_dict()
    names = sorted(k for k in state if k.startswith(prefixes) and not k.endswith(skip_suffixes))
    if not names:
        raise ValueError(f"no weights under {prefixes} to fingerprint")
    for k in names:
        v = state[k].detach().to("cpu")
        v = v.to(torch.bfloat16).view(torch.int16) if v.is_floating_point() else v
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_config_json(directory: str | Path, kind: str | None = None) -> dict:
    """The ``config`` mapping of a pretrained directory, checking its ``kind``."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}; not a kinema checkpoint")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{path} lacks a 'config' entry")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{directory} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    return meta["config"]


def load_pretrained(directory: str | Path, config_cls: type[T], kind: str) -> tuple[T, dict[str, torch.Tensor]]:
    """(config, state_dict) from a directory written by :func:`save_pretrained`.

    Floating tensors are returned as float32 (shipped weights may be bf16).
    """
    cfg = from_dict(config_cls, read_config_json(directory, kind))
    state = load_tensors(Path(directory) / WEIGHTS_NAME)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return cfg, state


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str = "") -> None:
    """load_state_dict that reports mismatches as CheckpointError instead of a RuntimeError wall."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise CheckpointError(f"weights in {where or 'checkpoint'} do not match the model: {' '.join(first)}") from None


# ----------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """Every RNG a training loop touches, in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- training checkpoints
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flatten_states(modules: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"model": sd, "ema": sd} -> {"model/w": t, "ema/w": t} for one safetensors file."""
    return {f"{name}/{k}": v for name, sd in modules.items() for k, v in sd.items()}


def unflatten_states(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        name, _, k = key.partition("/")
        out.setdefault(name, {})[k] = v
    return out


@dataclass
class TrainingCheckpoint:
    step: int
    path: Path
    modules: dict[str, dict[str, torch.Tensor]]  # e.g. {"model": ..., "ema": ..., "disc": ...}
    state: dict  # optimizer states, RNG, data position, anything weights_only can load


class CheckpointManager:
    """Atomic, verified, rotating training checkpoints under ``root``.

    >>> mgr = CheckpointManager("runs/x/checkpoints", keep=3)
    >>> mgr.save(step, {"model": model.state_dict()}, {"optim": opt.state_dict(), "rng": rng_state()})
    >>> ckpt = mgr.load_latest()   # None when there is nothing (valid) to resume
    """

    def __init__(self, root: str | Path, keep: int = 3):
        self.root = Path(root)
        self.keep = max(1, int(keep))

    def _dirs(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
        return sorted(found)

    def save(self, step: int, modules: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=self.root))
        try:
            save_file(_state_to_cpu(flatten_states(modules)), str(tmp / "weights.safetensors"))
            torch.save({"step": int(step), **state}, tmp / "trainer_state.pt")
            files = {}
            for name in ("weights.safetensors", "trainer_state.pt"):
                with open(tmp / name, "rb+") as f:
                    os.fsync(f.fileno())
                files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
            atomic_write_text(tmp / "manifest.json", json.dumps({"step": int(step), "files": files}, indent=2))
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in self._dirs()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob(".step_*"):  # leftovers of a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
        return final

    @staticmethod
    def verify(path: Path) -> str | None:
        """None when ``path`` is a complete checkpoint, else what is wrong with it."""
        manifest = path / "manifest.json"
        if not manifest.is_file():
            return "no manifest.json (incomplete write)"
        try:
            files = json.loads(manifest.read_text())["files"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            return "manifest.json is unreadable"
        for name, info in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != info["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, manifest says {info['bytes']}"
            if _sha256(f) != info["sha256"]:
                return f"{name} does not match its sha256"
        return None

    def load(self, path: str | Path) -> TrainingCheckpoint:
        path = Path(path)
        problem = self.verify(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} is corrupt: {problem}")
        tensors = load_tensors(path / "weights.safetensors")
        state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        return TrainingCheckpoint(int(state["step"]), path, unflatten_states(tensors), state)

    def load_latest(self) -> TrainingCheckpoint | None:
        """The newest checkpoint that verifies; corrupt ones are skipped with a warning."""
        for step, path in reversed(self._dirs()):
            problem = self.verify(path)
            if problem:
                warnings.warn(f"skipping corrupt checkpoint {path}: {problem}", stacklevel=2)
                continue
            try:
                return self.load(path)
            except (CheckpointError, RuntimeError, EOFError) as e:
                warnings.warn(f"skipping unreadable checkpoint {path}: {e}", stacklevel=2)
        return None
