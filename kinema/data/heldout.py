"""The evaluation's held-out captions: a fixed list, kept out of every training set by construction.

The synthetic world has a finite caption space (shape x colour x size x motion per object, and a
background), so any large enough training set contains some captions that an evaluation would
draw. Drawing prompts "not in the training manifest" made the prompt set move whenever the
training set grew (4500 new clips displaced 14 of 48 prompts), and evaluations of different stops
stopped being comparable.

Instead the prompts are a fixed list, ``heldout_captions.txt`` beside this file: the scenes of seeds
from :data:`HELDOUT_SEED` on, in order, each caption once. It was cut as the first 128 distinct
captions not present in the 6000-clip training manifest of kinema-tiny (seeds 0-5999), so the
48-prompt evaluation measured against that manifest before the list existed used exactly its first 48. :func:`kinema.data.synthetic.write_dataset`
skips every seed whose scene has one of these captions, so no training set written by kinema can
contain them.

    from kinema.data.heldout import heldout_captions, is_heldout
    heldout_captions()[:48]       # the evaluation's prompts, in order
    heldout_seed(caption)         # the scene that renders it (kinema.data.synthetic.sample_scene)
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["HELDOUT_SEED", "HELDOUT_FILE", "heldout_captions", "heldout_seed", "is_heldout", "draw_captions"]

HELDOUT_SEED = 5_000_000
HELDOUT_FILE = Path(__file__).with_name("heldout_captions.txt")


@lru_cache(maxsize=1)
def _table() -> dict[str, int]:
    """caption -> seed, in file order (dicts keep insertion order)."""
    table: dict[str, int] = {}
    for n, line in enumerate(HELDOUT_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        seed, sep, caption = line.partition("\t")
        if not sep or not seed.isdigit() or not caption.strip():
            raise ValueError(f"{HELDOUT_FILE}:{n}: expected 'seed<TAB>caption', got {line!r}")
        if caption in table:
            raise ValueError(f"{HELDOUT_FILE}:{n}: caption listed twice: {caption!r}")
        table[caption] = int(seed)
    return table


def heldout_captions() -> list[str]:
    """The fixed held-out captions, in evaluation order."""
    return list(_table())


def is_heldout(caption: str) -> bool:
    return caption in _table()


def heldout_seed(caption: str) -> int | None:
    """The seed whose :func:`~kinema.data.synthetic.sample_scene` has this caption (None if unlisted)."""
    return _table().get(caption)


def draw_captions(n: int, exclude: set[str] | frozenset[str] = frozenset(), seed: int = HELDOUT_SEED
                  ) -> list[tuple[int, str]]:
    """(seed, caption) of the first ``n`` distinct scene captions from ``seed`` on that are not in
    ``exclude``. This is how ``heldout_captions.txt`` was cut (``exclude``: the training captions)."""
    from kinema.data.synthetic import sample_scene

    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    s = seed
    while len(out) < n:
        cap = sample_scene(s).caption
        if cap not in exclude and cap not in seen:
            out.append((s, cap))
            seen.add(cap)
        s += 1
    return out
