"""Bounded fuzz of the media reader: random/mutated files give a Clip or a clear MediaError,
never another exception, a crash of the interpreter, or a hang (each case runs in a child)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_media.py"


def test_media_reader_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_media", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    r = fuzz.run(cases=30, seed=1234)
    assert r["crashes"] == 0 and r["hangs"] == 0, r
    assert not r["findings"], "\n".join(r["findings"])
    assert r["ok"] + r["error"] == 30
