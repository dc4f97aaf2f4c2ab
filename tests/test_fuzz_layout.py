"""Bounded fuzz of layout.revert: mutated and random id sequences give a result or a ValueError."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_faults.py"


def test_layout_revert_fuzz():
    spec = importlib.util.spec_from_file_location("bench_faults", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from kinema.lm import layout
    from kinema.lm.vocab import Vocab

    assert layout.revert  # the function under test
    result = mod.fuzz_layout(300, seed=7, vocab=Vocab(64, 256, 32, 2))
    assert result["findings"] == [], result["findings"][:3]
    assert result["errors"] > 50  # the fuzz really produces malformed sequences
