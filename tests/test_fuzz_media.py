"""Bounded fuzz of the media reader: random/mutated files give a Clip or a clear MediaError,
never another exception, a crash of the interpreter, or a hang (each case runs in a child)."""
from __future__ import annotations

from conftest import load_script


def test_media_reader_fuzz():
    fuzz = load_script("fuzz_media")
    r = fuzz.run(cases=30, seed=1234)
    assert r["crashes"] == 0 and r["hangs"] == 0, r
    assert not r["findings"], "\n".join(r["findings"])
    assert r["ok"] + r["error"] == 30
