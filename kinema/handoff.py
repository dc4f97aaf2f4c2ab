"""Hand-offs: a long training run carried from one machine to the next through git.

A run that outlives its machine's disk (here: a session of a few hours on a 2-core CPU, whose
``runs/`` is gone on the next machine) cannot resume from its DeepSpeed checkpoints. Those hold the
fp32 weights and both Adam moments, 47 MB for kinema-tiny's 3M-parameter LM: too much to commit after
every stop. A hand-off keeps what the next machine needs to go on at the same point of the schedule:

* the weights in save_pretrained format, bf16 (6 MB for that LM);
* ``handoff.json``: the step reached and the run directory it came from, written last;
* the run's ``metrics.jsonl``, so the next run's loss curve continues this one's.

The optimizer state is not kept. The next run (``train.handoff_dir`` in scripts/train_lm.py) starts
Adam afresh and warms the learning rate up again, so a hand-off costs a few hundred steps of warm-up,
not the run.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from kinema.checkpoint import atomic_write_text
from kinema.errors import CheckpointError

HANDOFF_FILE = "handoff.json"


def write_handoff(directory: str | Path, model, step: int, run_dir: str | Path) -> Path:
    """Write ``model`` (anything with ``save_pretrained(dir, dtype=)``), the step and the run's metrics.

    ``handoff.json`` is removed first and written last, so a kill in between leaves a directory that
    :func:`read_handoff` does not take for a hand-off, never new weights under an old step.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / HANDOFF_FILE).unlink(missing_ok=True)
    model.save_pretrained(out, dtype=torch.bfloat16)
    metrics = Path(run_dir) / "metrics.jsonl"
    if metrics.is_file():
        shutil.copyfile(metrics, out / "metrics.jsonl")
    info = {"step": int(step), "run_dir": str(run_dir), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(out / HANDOFF_FILE, json.dumps(info, indent=1) + "\n")
    return out


def read_handoff(directory: str | Path) -> dict | None:
    """``handoff.json`` of ``directory`` ({"step", "run_dir", "written"}), or None when there is none."""
    path = Path(directory) / HANDOFF_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        step = info["step"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a hand-off ({e}); delete it to start the run afresh") from None
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: step must be a non-negative integer, got {step!r}")
    return info
