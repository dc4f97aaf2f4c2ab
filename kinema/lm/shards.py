"""Memory-mapped token shards: the frozen tokenizers run once, LM training only reads integers.

A shard directory holds ``meta.json`` (what made the codes: tokenizer sizes, fps, ...) and pairs
``shard_00000.bin`` (raw little-endian int32 codes, appended sample after sample) +
``shard_00000.jsonl`` (one line per sample: ``index``, ``key``, ``caption``, ``text`` ids and, per
code array, its ``offset`` (in int32 elements) and ``shape``). Reading memory-maps the ``.bin``
files, so a dataset far larger than RAM costs only the index.

Crash safety / resume: a sample's codes are appended and flushed *before* its index line, so an
index line always points at complete data. On reopening, a torn last index line is dropped and the
``.bin`` is cut back to the end of the last indexed sample; samples whose ``index`` is already
present are skipped, so a killed extraction continues where it stopped.

The dataset side (layouts on the fly, length-grouped batching, collate) is in
:mod:`kinema.lm.token_data`.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from tqdm import tqdm

from kinema.checkpoint import atomic_write_text

FORMAT = "kinema-token-shards"
DTYPE = np.dtype("<i4")


@dataclass
class Record:
    """One tokenised sample. ``arrays`` maps a name ("video" (t,h,w), "audio" (Q,n)) to codes."""

    index: int
    key: str = ""
    caption: str = ""
    text: list[int] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}"


def _read_index(path: Path) -> tuple[list[dict], int]:
    """Complete index lines of ``path`` and the byte length they occupy (a torn tail is dropped)."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    entries, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            entries.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        good += len(line)
    return entries, good


def _entry_end(e: dict) -> int:
    return max((a["offset"] + int(np.prod(a["shape"])) for a in e["arrays"].values()), default=0)


class ShardWriter:
    """Appends :class:`Record` s to a shard directory; reopening resumes (see the module docstring)."""

    def __init__(self, root: str | Path, meta: dict[str, Any] | None = None, shard_bytes: int = 1 << 30):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = int(shard_bytes)
        meta_path = self.root / "meta.json"
        old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        new = {"format": FORMAT, "version": 1, "dtype": DTYPE.str, **(meta or {})}
        if old is not None and meta is not None and old != new:
            raise ValueError(f"{self.root} holds shards made with other settings: {old} vs {new}")
        if old is None:
            atomic_write_text(meta_path, json.dumps(new, indent=2))
        self.done: set[int] = set()
        shards = sorted(p.stem for p in self.root.glob("shard_*.jsonl"))
        for name in shards:
            entries, _ = _read_index(self.root / f"{name}.jsonl")
            self.done.update(int(e["index"]) for e in entries)
        self.shard = len(shards) - 1 if shards else 0
        self._open(self.shard)

    def _open(self, shard: int) -> None:
        """Open shard ``shard`` for appending, repairing a torn tail left by a kill."""
        self.shard = shard
        idx, bin_ = self.root / f"{_shard_name(shard)}.jsonl", self.root / f"{_shard_name(shard)}.bin"
        entries, good = _read_index(idx)
        size = bin_.stat().st_size if bin_.is_file() else 0
        keep = 0  # index lines whose data is wholly on disk (after a power loss it may not be)
        while keep < len(entries) and _entry_end(entries[keep]) * DTYPE.itemsize <= size:
            keep += 1
        if keep < len(entries):
            dropped = {int(e["index"]) for e in entries[keep:]}
            self.done -= dropped
            entries = entries[:keep]
            atomic_write_text(idx, "".join(json.dumps(e) + "\n" for e in entries))
        elif idx.is_file() and idx.stat().st_size != good:
            with open(idx, "r+b") as f:
                f.truncate(good)
        end = max((_entry_end(e) for e in entries), default=0) * DTYPE.itemsize
        if bin_.is_file() and bin_.stat().st_size != end:
            with open(bin_, "r+b") as f:
                f.truncate(end)
        self._bin = open(bin_, "ab")
        self._idx = open(idx, "ab")
        self._offset = end // DTYPE.itemsize

    def write(self, rec: Record) -> None:
        if rec.index in self.done:
            return
        if self._offset * DTYPE.itemsize >= self.shard_bytes:
            self.close()
            self._open(self.shard + 1)
        arrays, chunks, off = {}, [], self._offset
        for name, a in rec.arrays.items():
            a = np.asarray(a)
            if a.dtype.kind not in "iu":
                raise ValueError(f"sample {rec.index}: {name} codes must be integers, got {a.dtype}")
            if a.size and (a.min() < np.iinfo(DTYPE).min or a.max() > np.iinfo(DTYPE).max):
                raise ValueError(f"sample {rec.index}: {name} codes do not fit in int32")
            chunks.append(np.ascontiguousarray(a, dtype=DTYPE).tobytes())
            arrays[name] = {"offset": off, "shape": list(a.shape)}
            off += a.size
        self._bin.write(b"".join(chunks))
        self._bin.flush()  # codes reach the OS before their index line (a kill cannot reorder them)
        line = {"index": int(rec.index), "key": rec.key, "caption": rec.caption,
                "text": [int(t) for t in rec.text], "arrays": arrays, **({"meta": rec.meta} if rec.meta else {})}
        self._idx.write((json.dumps(line) + "\n").encode())
        self._idx.flush()
        self._offset = off
        self.done.add(int(rec.index))

    def close(self) -> None:
        for f in (self._bin, self._idx):
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TokenShards:
    """Read-only view of a shard directory: ``len``, ``shards[i] -> Record`` (sorted by index)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise ValueError(f"{self.root} is not a token shard directory (no meta.json)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path} is not a {FORMAT} index")
        self._bins: list[tuple[Path, int]] = []
        self._maps: dict[int, np.ndarray] = {}  # opened lazily, per process (see __getstate__)
        items: list[tuple[int, int, dict]] = []
        for s, idx in enumerate(sorted(self.root.glob("shard_*.jsonl"))):
            entries, _ = _read_index(idx)
            bin_ = idx.with_suffix(".bin")
            need = max((_entry_end(e) for e in entries), default=0)
            if need and (not bin_.is_file() or bin_.stat().st_size < need * DTYPE.itemsize):
                raise ValueError(f"{bin_} is shorter than its index says; re-run the extraction to repair it")
            self._bins.append((bin_, need))
            items += [(int(e["index"]), s, e) for e in entries]
        items.sort(key=lambda x: x[0])
        self._items = items
        self._indices = [i for i, _, _ in items]

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the memory maps instead of receiving a pickled copy of the data
        return {**self.__dict__, "_maps": {}}

    def _map(self, s: int) -> np.ndarray:
        if s not in self._maps:
            path, need = self._bins[s]
            self._maps[s] = np.memmap(path, dtype=DTYPE, mode="r", shape=(need,)) if need else np.zeros(0, DTYPE)
        return self._maps[s]

    @property
    def indices(self) -> list[int]:
        """The stored samples' extraction indices, in order (``shards[k].index == indices[k]``)."""
        return self._indices

    def shapes(self, i: int) -> dict[str, tuple[int, ...]]:
        """Code array shapes of sample ``i`` without touching the data."""
        return {k: tuple(a["shape"]) for k, a in self._items[i][2]["arrays"].items()}

    def text(self, i: int) -> list[int]:
        return list(self._items[i][2]["text"])

    def __getitem__(self, i: int) -> Record:
        index, s, e = self._items[i]
        arrays = {}
        for name, a in e["arrays"].items():
            n = int(np.prod(a["shape"]))
            flat = self._map(s)[a["offset"]:a["offset"] + n]
            arrays[name] = np.array(flat, dtype=np.int64).reshape(a["shape"])  # copy out of the map
        return Record(index, e.get("key", ""), e.get("caption", ""), list(e["text"]), arrays, e.get("meta", {}))


# ----------------------------------------------------------------------------- extraction
_WORKER: Callable[[int], Record | None] | None = None


def _init_worker(factory: Callable[[], Callable[[int], Record | None]]) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = factory()


def _run_worker(i: int) -> Record | None:
    assert _WORKER is not None
    return _WORKER(i)


def extract(root: str | Path, num_items: int, make_encoder: Callable[[], Callable[[int], Record | None]],
            meta: dict[str, Any] | None = None, num_workers: int = 1, shard_bytes: int = 1 << 30,
            limit: int | None = None, progress: bool = True) -> dict[str, int]:
    """Tokenise items ``0..num_items-1`` into shards under ``root``, skipping those already done.

    ``make_encoder()`` runs once per worker process (load the frozen tokenizers there) and returns
    ``encode(i) -> Record | None`` (None skips an unusable item). ``limit`` stops after that many
    new samples (used by tests to simulate a kill). Returns counts: done before, written, skipped.
    """
    with ShardWriter(root, meta, shard_bytes) as writer:
        todo = [i for i in range(num_items) if i not in writer.done]
        if limit is not None:
            todo = todo[:limit]
        before, written, skipped = len(writer.done), 0, 0
        bar = tqdm(total=len(todo), desc="extract tokens", disable=not progress, unit="sample")
        if num_workers <= 1:
            encode = make_encoder()
            results: Iterable[Record | None] = (encode(i) for i in todo)
            pool = None
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(make_encoder,))
            results = pool.imap(_run_worker, todo, chunksize=1)  # ordered: shards stay sorted
        try:
            for rec in results:
                if rec is None:
                    skipped += 1
                else:
                    writer.write(rec)
                    written += 1
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    return {"done_before": before, "written": written, "skipped": skipped}
