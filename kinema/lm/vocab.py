"""The unified vocabulary: one id space for special/task tokens, text, video codes and audio codes.

Follows VideoPoet (Kondratyuk et al., 2023, "VideoPoet: A Large Language Model for Zero-Shot Video
Generation"): special tokens ``<bos> <task> <bot>/<eot> <bov>/<eov> <boa>/<eoa> <res> <eos>``, then
the text tokenizer's ids, then video codes, then audio codes with one range per residual level.

Id space, in order (all offsets derived from the tokenizers' sizes, so nothing is hand-numbered)::

    [0, num_special)                          pad bos eos bot eot bov eov boa eoa res + one per task
    text_range   = [t0, t0 + text_size)
    video_range  = [v0, v0 + video_codebook_size)          (or two sub-token ranges, see below)
    audio_range  = [a0, a0 + Q * audio_codebook_size)      level q lives in [a0 + q*K, a0 + (q+1)*K)

Token factorisation (``video_factorize=True``), as in VideoPoet / Open-MAGVIT2 (Luo et al., 2024)
for 2^18 LFQ codebooks: a code ``c`` becomes two sub-tokens ``hi = c // lo_size`` and
``lo = c % lo_size`` with ``lo_size = 2 ** ceil(log2(K) / 2)``, each with its own id range, so the
embedding and the softmax hold ``hi_size + lo_size`` rows (2 * 512 for 2^18) instead of K.

The vocabulary is plain integers (no tokenizer import) and serialises with ``to_dict``/``from_dict``
so the LM checkpoint can store it and refuse tokenizers of another size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

# Every task the layouts know. Task tokens are allocated in this order; append only (ids are stable).
TASKS: tuple[str, ...] = (
    "t2v", "t2i", "i2v", "continue", "v2a", "a2v", "t2va", "uncond", "extend_back", "bridge",
)
SPECIALS: tuple[str, ...] = ("pad", "bos", "eos", "bot", "eot", "bov", "eov", "boa", "eoa", "res")


@dataclass(frozen=True)
class Vocab:
    """One id space for everything the LM reads and writes. See the module docstring."""

    text_size: int
    video_codebook_size: int
    audio_codebook_size: int
    audio_num_quantizers: int
    video_factorize: bool = False
    tasks: tuple[str, ...] = field(default=TASKS)

    def __post_init__(self) -> None:
        for name in ("text_size", "video_codebook_size", "audio_codebook_size", "audio_num_quantizers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Vocab.{name} must be a positive int, got {value!r}")
        if self.video_factorize and self.video_codebook_size < 4:
            raise ValueError("video_factorize needs a video codebook of at least 4 codes")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"duplicate task names in {self.tasks}")

    # ------------------------------------------------------------------ special tokens
    @property
    def pad(self) -> int:
        return 0

    @property
    def bos(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def bot(self) -> int:
        return 3

    @property
    def eot(self) -> int:
        return 4

    @property
    def bov(self) -> int:
        return 5

    @property
    def eov(self) -> int:
        return 6

    @property
    def boa(self) -> int:
        return 7

    @property
    def eoa(self) -> int:
        return 8

    @property
    def res(self) -> int:
        return 9

    def task_id(self, name: str) -> int:
        """Id of the task token ``name`` (one of ``vocab.tasks``)."""
        try:
            return len(SPECIALS) + self.tasks.index(name)
        except ValueError:
            raise ValueError(f"unknown task {name!r}; known: {', '.join(self.tasks)}") from None

    def task_name(self, token: int) -> str:
        """Inverse of :meth:`task_id`."""
        i = int(token) - len(SPECIALS)
        if not 0 <= i < len(self.tasks):
            raise ValueError(f"id {int(token)} is not a task token")
        return self.tasks[i]

    @property
    def num_special(self) -> int:
        return len(SPECIALS) + len(self.tasks)

    # ------------------------------------------------------------------ ranges
    @property
    def text_range(self) -> tuple[int, int]:
        lo = self.num_special
        return lo, lo + self.text_size

    @property
    def video_lo_size(self) -> int:
        """Size of the low sub-token range when factorised (a power of two), else the codebook."""
        if not self.video_factorize:
            return self.video_codebook_size
        return 2 ** math.ceil(math.log2(self.video_codebook_size) / 2)

    @property
    def video_hi_size(self) -> int:
        if not self.video_factorize:
            return 1
        return -(-self.video_codebook_size // self.video_lo_size)

    @property
    def video_tokens_per_code(self) -> int:
        return 2 if self.video_factorize else 1

    @property
    def video_sub_ranges(self) -> tuple[tuple[int, int], ...]:
        """The id range of each sub-token of one video code, in sequence order: (hi, lo) or (all,)."""
        v0 = self.text_range[1]
        if not self.video_factorize:
            return ((v0, v0 + self.video_codebook_size),)
        hi = (v0, v0 + self.video_hi_size)
        return (hi, (hi[1], hi[1] + self.video_lo_size))

    @property
    def video_range(self) -> tuple[int, int]:
        sub = self.video_sub_ranges
        return sub[0][0], sub[-1][1]

    @property
    def audio_range(self) -> tuple[int, int]:
        a0 = self.video_range[1]
        return a0, a0 + self.audio_num_quantizers * self.audio_codebook_size

    def audio_level_range(self, level: int) -> tuple[int, int]:
        """Id range of residual level ``level`` (0 = coarsest)."""
        if not 0 <= level < self.audio_num_quantizers:
            raise ValueError(f"audio level {level} outside 0..{self.audio_num_quantizers - 1}")
        lo = self.audio_range[0] + level * self.audio_codebook_size
        return lo, lo + self.audio_codebook_size

    @property
    def size(self) -> int:
        return self.audio_range[1]

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ checks
    def check(self, ids: Any) -> None:
        """Raise ValueError if any id lies outside ``[0, size)``."""
        t = torch.as_tensor(ids)
        if t.numel() == 0:
            return
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"token ids must be integers, got dtype {t.dtype}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= self.size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.size})")

    # ------------------------------------------------------------------ code <-> ids
    def text_to_ids(self, text: Any) -> torch.Tensor:
        t = torch.as_tensor(text, dtype=torch.long).reshape(-1)
        _check_codes(t, self.text_size, "text token")
        return t + self.text_range[0]

    def ids_to_text(self, ids: torch.Tensor) -> list[int]:
        return _in_range(ids, self.text_range, "text").sub(self.text_range[0]).tolist()

    def video_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Video codes (any shape) -> flat ids in raster order, 1 or 2 tokens per code."""
        c = torch.as_tensor(codes).reshape(-1).long()
        _check_codes(c, self.video_codebook_size, "video code")
        sub = self.video_sub_ranges
        if not self.video_factorize:
            return c + sub[0][0]
        hi, lo = c // self.video_lo_size, c % self.video_lo_size
        return torch.stack([hi + sub[0][0], lo + sub[1][0]], dim=1).reshape(-1)  # (N*2,)

    def ids_to_video(self, ids: torch.Tensor) -> torch.Tensor:
        """Flat video ids -> flat codes (exact inverse of :meth:`video_to_ids`)."""
        ids = torch.as_tensor(ids).reshape(-1).long()
        sub = self.video_sub_ranges
        if not self.video_factorize:
            return _in_range(ids, sub[0], "video") - sub[0][0]
        if ids.numel() % 2:
            raise ValueError(f"factorised video needs an even number of sub-tokens, got {ids.numel()}")
        pair = ids.reshape(-1, 2)
        hi = _in_range(pair[:, 0], sub[0], "video hi sub-token") - sub[0][0]
        lo = _in_range(pair[:, 1], sub[1], "video lo sub-token") - sub[1][0]
        codes = hi * self.video_lo_size + lo
        _check_codes(codes, self.video_codebook_size, "video code")
        return codes

    def audio_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio codes (Q, n) -> flat ids, level by level (all of level 0 first, coarse to fine)."""
        c = torch.as_tensor(codes).long()
        if c.dim() != 2 or c.shape[0] < 1 or c.shape[0] > self.audio_num_quantizers:
            raise ValueError(
                f"audio codes must be (Q, n) with 1 <= Q <= {self.audio_num_quantizers}, got {tuple(c.shape)}")
        _check_codes(c, self.audio_codebook_size, "audio code")
        level = torch.arange(c.shape[0]).unsqueeze(1) * self.audio_codebook_size  # (Q, 1)
        return (c + level + self.audio_range[0]).reshape(-1)

    def ids_to_audio(self, ids: torch.Tensor) -> torch.Tensor:
        """Flat audio ids (level by level) -> codes (Q, n); Q and n are read from the ids' levels."""
        ids = _in_range(torch.as_tensor(ids).reshape(-1).long(), self.audio_range, "audio")
        if ids.numel() == 0:
            return torch.zeros(0, 0, dtype=torch.long)
        rel = ids - self.audio_range[0]
        level, code = rel // self.audio_codebook_size, rel % self.audio_codebook_size
        q = int(level.max()) + 1
        n = ids.numel() // q
        expected = torch.arange(q).repeat_interleave(n)
        if ids.numel() != q * n or not torch.equal(level, expected):
            raise ValueError("audio ids are not ordered level by level with equal length per level")
        return code.reshape(q, n)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "text_size": self.text_size,
            "video_codebook_size": self.video_codebook_size,
            "audio_codebook_size": self.audio_codebook_size,
            "audio_num_quantizers": self.audio_num_quantizers,
            "video_factorize": self.video_factorize,
            "tasks": list(self.tasks),
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vocab":
        d = dict(d)
        size = d.pop("size", None)
        known = {"text_size", "video_codebook_size", "audio_codebook_size", "audio_num_quantizers",
                 "video_factorize", "tasks"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Vocab keys: {sorted(unknown)}")
        if "tasks" in d:
            d["tasks"] = tuple(d["tasks"])
        v = cls(**d)
        if size is not None and size != v.size:
            raise ValueError(f"stored vocabulary size {size} does not match the one derived ({v.size})")
        return v

    def check_tokenizers(self, text_size: int, video_codebook_size: int, audio_codebook_size: int,
                         audio_num_quantizers: int) -> None:
        """Refuse tokenizers whose sizes differ from this vocabulary's, naming both sizes."""
        pairs = {"text_size": text_size, "video_codebook_size": video_codebook_size,
                 "audio_codebook_size": audio_codebook_size, "audio_num_quantizers": audio_num_quantizers}
        bad = [f"{k}: vocabulary has {getattr(self, k)}, tokenizer has {v}"
               for k, v in pairs.items() if getattr(self, k) != v]
        if bad:
            raise ValueError("LM vocabulary does not match the tokenizers (" + "; ".join(bad) + ")")


def _check_codes(c: torch.Tensor, size: int, what: str) -> None:
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise ValueError(f"{what}s must be integers, got dtype {c.dtype}")
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= size):
        bad = int(c.min()) if int(c.min()) < 0 else int(c.max())
        raise ValueError(f"{what} {bad} outside [0, {size})")


def _in_range(ids: torch.Tensor, rng: tuple[int, int], what: str) -> torch.Tensor:
    ids = torch.as_tensor(ids).reshape(-1).long()
    if ids.numel() and (int(ids.min()) < rng[0] or int(ids.max()) >= rng[1]):
        raise ValueError(f"ids outside the {what} range [{rng[0]}, {rng[1]})")
    return ids
