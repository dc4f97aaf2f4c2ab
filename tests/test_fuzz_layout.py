"""Bounded fuzz of layout.revert: mutated and random id sequences give a result or a ValueError."""
from __future__ import annotations

from conftest import load_script


def test_layout_revert_fuzz():
    mod = load_script("bench_faults")
    from kinema.lm import layout
    from kinema.lm.vocab import Vocab

    assert layout.revert  # the function under test
    result = mod.fuzz_layout(300, seed=7, vocab=Vocab(64, 256, 32, 2))
    assert result["findings"] == [], result["findings"][:3]
    assert result["errors"] > 50  # the fuzz really produces malformed sequences
