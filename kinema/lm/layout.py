"""Task layouts: how one training example / one generation request becomes a token sequence.

Follows VideoPoet (Kondratyuk et al., 2023): ``<bos> <task> [condition segments] [output segments]
<eos>``, each segment wrapped in its modality's brackets (``<bot>..<eot>``, ``<bov>..<eov>``,
``<boa>..<eoa>``). The condition is the *prefix* (``<bos>`` up to the last condition segment),
attended bidirectionally by the prefix-LM; the loss covers only the output segments and ``<eos>``.
Audio codes are laid out level by level (all coarse codes first), which VideoPoet found best.

Positions follow the M-RoPE idea of Qwen2-VL (Wang et al., 2024): every token gets (time, height,
width) ids. Text, special and audio tokens get ``(p, p, p)`` with ``p`` a running index; a video
segment starting at ``p0`` gives its token at grid cell (t, h, w) the ids ``(p0 + t, h, w)``, and the
running index resumes at ``p0 + T``. The sub-tokens of a factorised video code share the position
of their code.

Every task (``TASKS``) has a fixed order of segments (``SPEC``); :func:`revert` parses a sequence
back into codes per modality and is the exact inverse of :func:`build`. :func:`output_plan` tells
a constrained decoder what each output position may hold, in compact segments.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from kinema.lm.vocab import TASKS, Vocab

# task -> (prefix segments, output segments). "text" is optional in content (may be empty).
SPEC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "t2v": (("text",), ("video",)),
    "t2i": (("text",), ("video",)),
    "i2v": (("text", "image"), ("video",)),
    "continue": (("text", "cond_video"), ("video",)),
    "v2a": (("text", "cond_video"), ("audio",)),
    "a2v": (("text", "cond_audio"), ("video",)),
    "t2va": (("text",), ("video", "audio")),
    "uncond": ((), ("video",)),
    "extend_back": (("text", "cond_video"), ("video",)),
    "bridge": (("text", "cond_video", "cond_video_after"), ("video",)),
}
assert set(SPEC) == set(TASKS)

KIND = {"text": "text", "image": "video", "cond_video": "video", "cond_video_after": "video",
        "video": "video", "cond_audio": "audio", "audio": "audio"}
# segment -> keyword argument of build() and key of revert()'s result
ARG = {"text": "text", "image": "image_codes", "cond_video": "cond_video_codes",
       "cond_video_after": "cond_video_after_codes", "video": "video_codes",
       "cond_audio": "cond_audio_codes", "audio": "audio_codes"}


@dataclass
class Sequence:
    """One laid-out sequence. ``loss_mask[i]`` says token ``i`` is an output (predicted) token."""

    ids: torch.Tensor        # (L,) long
    loss_mask: torch.Tensor  # (L,) bool
    prefix_len: int          # tokens [0, prefix_len) form the bidirectional condition
    positions: torch.Tensor  # (L, 3) long (time, height, width)
    task: str
    next_pos: int            # running position index after the last token
    loss_weight: torch.Tensor | None = None  # (L,) float weight of each target; None: all 1

    def __len__(self) -> int:
        return int(self.ids.numel())


@dataclass(frozen=True)
class Segment:
    """``length`` output positions starting at output index ``start``; position ``start + i`` may
    hold ids in ``ranges[i % len(ranges)]`` (half-open). A forced token is a range of width one."""

    start: int
    length: int
    ranges: tuple[tuple[int, int], ...]


@dataclass
class OutputPlan:
    """What the output part of a sequence must look like, for constrained decoding."""

    segments: list[Segment]
    positions: torch.Tensor  # (L_out, 3) long, the M-RoPE ids of every output token

    @property
    def length(self) -> int:
        return int(self.positions.shape[0])

    def allowed(self, i: int) -> tuple[int, int]:
        """Half-open id range allowed at output index ``i``."""
        for s in self.segments:
            if s.start <= i < s.start + s.length:
                return s.ranges[(i - s.start) % len(s.ranges)]
        raise IndexError(f"output index {i} outside the plan's {self.length} tokens")

    def forced(self, i: int) -> int | None:
        lo, hi = self.allowed(i)
        return lo if hi == lo + 1 else None

    def bounds(self) -> torch.Tensor:
        """(L_out, 2) long: the allowed [lo, hi) of every output position."""
        out = torch.empty(self.length, 2, dtype=torch.long)
        for s in self.segments:
            r = torch.tensor(s.ranges, dtype=torch.long)  # (k, 2)
            idx = torch.arange(s.length) % len(s.ranges)
            out[s.start:s.start + s.length] = r[idx]
        return out

    def split(self, n: int) -> tuple["OutputPlan", "OutputPlan"]:
        """The plan's first ``n`` output positions and the rest, each a plan of its own (the rest's
        indices start at 0 again; positions are kept). Decoding the head, appending it to the prompt
        and decoding the tail yields the same sequence as decoding the whole plan."""
        if not 0 < n < self.length:
            raise ValueError(f"split point {n} must be inside the plan's {self.length} positions")
        head: list[Segment] = []
        tail: list[Segment] = []
        for s in self.segments:
            end = s.start + s.length
            if end <= n:
                head.append(s)
            elif s.start >= n:
                tail.append(Segment(s.start - n, s.length, s.ranges))
            else:  # cut inside: the tail's ranges continue the cycle where the head left it
                k, r = n - s.start, len(s.ranges)
                head.append(Segment(s.start, k, s.ranges))
                tail.append(Segment(0, end - n, s.ranges[k % r:] + s.ranges[:k % r]))
        return OutputPlan(head, self.positions[:n]), OutputPlan(tail, self.positions[n:])


# ----------------------------------------------------------------------------- positions
def _video_positions(p0: int, t: int, h: int, w: int, k: int) -> torch.Tensor:
    """(t*h*w*k, 3) positions of a video segment in raster order, k sub-tokens per code."""
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([tt + p0, hh, ww], dim=-1).reshape(-1, 3)  # (t*h*w, 3)
    return pos.repeat_interleave(k, dim=0)


def _flat_positions(p0: int, n: int) -> torch.Tensor:
    return (torch.arange(n) + p0).unsqueeze(1).expand(n, 3)


class _Builder:
    def __init__(self) -> None:
        self.ids: list[torch.Tensor] = []
        self.pos: list[torch.Tensor] = []
        self.p = 0

    def flat(self, ids: torch.Tensor) -> None:
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        self.ids.append(ids)
        self.pos.append(_flat_positions(self.p, ids.numel()))
        self.p += ids.numel()

    def video(self, ids: torch.Tensor, grid: tuple[int, int, int], k: int) -> None:
        self.ids.append(ids)
        self.pos.append(_video_positions(self.p, *grid, k))
        self.p += grid[0]

    def length(self) -> int:
        return sum(int(i.numel()) for i in self.ids)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.ids:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)
        return torch.cat(self.ids), torch.cat(self.pos)


# ----------------------------------------------------------------------------- validation
def _check_task(task: str) -> None:
    if task not in SPEC:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def _video_grid(codes: Any, name: str, single_frame: bool = False) -> torch.Tensor:
    c = torch.as_tensor(codes)
    if single_frame and c.dim() == 2:
        c = c.unsqueeze(0)
    if c.dim() != 3 or 0 in c.shape:
        raise ValueError(f"{name} must be a non-empty (t, h, w) integer tensor, got shape {tuple(c.shape)}")
    if single_frame and c.shape[0] != 1:
        raise ValueError(f"{name} must hold one frame (1, h, w), got shape {tuple(c.shape)}")
    return c.long()


def _prepare_text(text: Any, vocab: Vocab, drop_text: bool, max_text_tokens: int) -> list[int]:
    if text is None or drop_text:
        return []
    if isinstance(text, (str, bytes)):
        raise ValueError("text must be the text tokenizer's ids (list[int]), not a string; "
                         "encode it with TextTokenizer.encode first")
    t = [int(x) for x in torch.as_tensor(text, dtype=torch.long).reshape(-1).tolist()]
    if len(t) > max_text_tokens:
        warnings.warn(f"prompt has {len(t)} text tokens; truncated to the budget of {max_text_tokens}",
                      stacklevel=3)
        t = t[:max_text_tokens]
    return t


def _add_segment(b: _Builder, seg: str, value: Any, vocab: Vocab) -> None:
    kind = KIND[seg]
    if kind == "text":
        b.flat(torch.tensor([vocab.bot]))
        b.flat(vocab.text_to_ids(torch.tensor(value, dtype=torch.long)))
        b.flat(torch.tensor([vocab.eot]))
    elif kind == "video":
        b.flat(torch.tensor([vocab.bov]))
        b.video(vocab.video_to_ids(value), tuple(value.shape), vocab.video_tokens_per_code)
        b.flat(torch.tensor([vocab.eov]))
    else:
        b.flat(torch.tensor([vocab.boa]))
        b.flat(vocab.audio_to_ids(value))
        b.flat(torch.tensor([vocab.eoa]))


def _gather(task: str, segs: tuple[str, ...], given: dict[str, Any], vocab: Vocab, drop_text: bool,
            max_text_tokens: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for seg in segs:
        arg = ARG[seg]
        v = given.get(arg)
        if seg == "text":
            values[seg] = _prepare_text(v, vocab, drop_text, max_text_tokens)
        elif v is None:
            raise ValueError(f"task {task!r} needs {arg}")
        elif KIND[seg] == "video":
            values[seg] = _video_grid(v, arg, single_frame=(seg == "image"))
        else:
            a = torch.as_tensor(v)
            if a.dim() != 2 or 0 in a.shape:
                raise ValueError(f"{arg} must be a non-empty (Q, n) integer tensor, got shape {tuple(a.shape)}")
            values[seg] = a.long()
    if task == "t2i" and "video" in values and values["video"].shape[0] != 1:
        raise ValueError(f"t2i outputs one frame; video_codes has {values['video'].shape[0]}")
    return values


def _check_unused(task: str, used: set[str], given: dict[str, Any]) -> None:
    extra = [k for k, v in given.items() if v is not None and k not in used]
    if "text" in extra and task == "uncond" and len(torch.as_tensor(given["text"]).reshape(-1)) == 0:
        extra.remove("text")
    if extra:
        raise ValueError(f"task {task!r} does not take {', '.join(sorted(extra))}")


# ----------------------------------------------------------------------------- build
def build_prefix(task: str, vocab: Vocab, text: Any = None, image_codes: Any = None,
                 cond_video_codes: Any = None, cond_video_after_codes: Any = None,
                 cond_audio_codes: Any = None, drop_text: bool = False,
                 max_text_tokens: int = 64) -> Sequence:
    """Only the condition prefix of ``task`` (what generation prefills); ``next_pos`` feeds
    :func:`output_plan`."""
    _check_task(task)
    given = dict(text=text, image_codes=image_codes, cond_video_codes=cond_video_codes,
                 cond_video_after_codes=cond_video_after_codes, cond_audio_codes=cond_audio_codes)
    prefix, _ = SPEC[task]
    _check_unused(task, {ARG[s] for s in prefix}, given)
    values = _gather(task, prefix, given, vocab, drop_text, max_text_tokens)
    b = _Builder()
    b.flat(torch.tensor([vocab.bos, vocab.task_id(task)]))
    for seg in prefix:
        _add_segment(b, seg, values[seg], vocab)
    ids, pos = b.result()
    return Sequence(ids, torch.zeros(ids.numel(), dtype=torch.bool), int(ids.numel()), pos, task, b.p)


def build(task: str, vocab: Vocab, text: Any = None, video_codes: Any = None, audio_codes: Any = None,
          cond_video_codes: Any = None, cond_audio_codes: Any = None, image_codes: Any = None,
          cond_video_after_codes: Any = None, drop_text: bool = False,
          max_text_tokens: int = 64) -> Sequence:
    """Lay out one example of ``task``. Codes are raw tokenizer outputs: video ``(t, h, w)``,
    image ``(1, h, w)`` or ``(h, w)``, audio ``(Q, n)``; text is the text tokenizer's ids.
    ``drop_text`` (or an empty/None text) gives the unconditional layout used for CFG."""
    _check_task(task)
    _, output = SPEC[task]
    given_out = dict(video_codes=video_codes, audio_codes=audio_codes)
    _check_unused(task, {ARG[s] for s in output}, given_out)
    pre = build_prefix(task, vocab, text=text, image_codes=image_codes, cond_video_codes=cond_video_codes,
                       cond_video_after_codes=cond_video_after_codes, cond_audio_codes=cond_audio_codes,
                       drop_text=drop_text, max_text_tokens=max_text_tokens)
    values = _gather(task, output, given_out, vocab, drop_text, max_text_tokens)
    b = _Builder()
    b.p = pre.next_pos
    for seg in output:
        _add_segment(b, seg, values[seg], vocab)
    b.flat(torch.tensor([vocab.eos]))
    out_ids, out_pos = b.result()
    ids = torch.cat([pre.ids, out_ids])
    mask = torch.cat([pre.loss_mask, torch.ones(out_ids.numel(), dtype=torch.bool)])
    return Sequence(ids, mask, pre.prefix_len, torch.cat([pre.positions, out_pos]), task, b.p)


# ----------------------------------------------------------------------------- output plan
def output_plan(task: str, vocab: Vocab, video_grid: tuple[int, int, int] | None = None,
                audio_shape: tuple[int, int] | None = None, *, start_pos: int) -> OutputPlan:
    """The output part of ``task`` for a video of ``video_grid`` codes and/or audio of
    ``audio_shape``; ``start_pos`` is the prefix's ``next_pos`` (see :func:`build_prefix`)."""
    _check_task(task)
    _, output = SPEC[task]
    segments: list[Segment] = []
    positions: list[torch.Tensor] = []
    n, p = 0, int(start_pos)

    def forced(tok: int) -> None:
        nonlocal n, p
        segments.append(Segment(n, 1, ((tok, tok + 1),)))
        positions.append(_flat_positions(p, 1))
        n, p = n + 1, p + 1

    for seg in output:
        if KIND[seg] == "video":
            if video_grid is None or len(video_grid) != 3 or min(video_grid) < 1:
                raise ValueError(f"task {task!r} needs video_grid=(t, h, w), got {video_grid}")
            if task == "t2i" and video_grid[0] != 1:
                raise ValueError(f"t2i outputs one frame; video_grid has t={video_grid[0]}")
            t, h, w = (int(x) for x in video_grid)
            k = vocab.video_tokens_per_code
            forced(vocab.bov)
            segments.append(Segment(n, t * h * w * k, vocab.video_sub_ranges))
            positions.append(_video_positions(p, t, h, w, k))
            n, p = n + t * h * w * k, p + t
            forced(vocab.eov)
        else:
            if audio_shape is None or len(audio_shape) != 2 or min(audio_shape) < 1 \
                    or audio_shape[0] > vocab.audio_num_quantizers:
                raise ValueError(f"task {task!r} needs audio_shape=(Q, n) with 1 <= Q <= "
                                 f"{vocab.audio_num_quantizers}, got {audio_shape}")
            q, m = (int(x) for x in audio_shape)
            forced(vocab.boa)
            for level in range(q):
                segments.append(Segment(n, m, (vocab.audio_level_range(level),)))
                positions.append(_flat_positions(p, m))
                n, p = n + m, p + m
            forced(vocab.eoa)
    forced(vocab.eos)
    return OutputPlan(segments, torch.cat(positions))


# ----------------------------------------------------------------------------- revert
_OPEN = {"text": "bot", "video": "bov", "audio": "boa"}
_CLOSE = {"text": "eot", "video": "eov", "audio": "eoa"}


def revert(ids: Any, vocab: Vocab, video_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """Parse a full sequence (``<bos> <task> ... <eos>``, trailing ``<pad>`` allowed) back into
    ``{"task", "text", "video_codes", "audio_codes", "cond_video_codes", ...}`` (the keys are
    :func:`build`'s argument names). ``video_hw`` is the (h, w) of the video code grid, needed
    whenever the task has a video segment. Raises ValueError on anything malformed."""
    seq = torch.as_tensor(ids).reshape(-1).long()
    vocab.check(seq)
    n = seq.numel()
    while n and int(seq[n - 1]) == vocab.pad:
        n -= 1
    seq = seq[:n]
    if n < 3 or int(seq[0]) != vocab.bos:
        raise ValueError("sequence must start with <bos> <task>")
    task = vocab.task_name(int(seq[1]))
    prefix, output = SPEC[task]
    out: dict[str, Any] = {"task": task}
    i = 2
    for seg in prefix + output:
        kind = KIND[seg]
        open_id, close_id = getattr(vocab, _OPEN[kind]), getattr(vocab, _CLOSE[kind])
        if i >= n or int(seq[i]) != open_id:
            raise ValueError(f"task {task!r}: expected <{_OPEN[kind]}> for segment {seg!r} at index {i}")
        hits = (seq[i + 1:] == close_id).nonzero()
        if hits.numel() == 0:
            raise ValueError(f"task {task!r}: segment {seg!r} is not closed by <{_CLOSE[kind]}>")
        j = i + 1 + int(hits[0])
        body = seq[i + 1:j]
        if kind == "text":
            out[ARG[seg]] = vocab.ids_to_text(body)
        elif kind == "audio":
            out[ARG[seg]] = vocab.ids_to_audio(body)
        else:
            if video_hw is None:
                raise ValueError(f"task {task!r} has a video segment: pass video_hw=(h, w)")
            h, w = int(video_hw[0]), int(video_hw[1])
            codes = vocab.ids_to_video(body)
            if codes.numel() == 0 or codes.numel() % (h * w):
                raise ValueError(f"segment {seg!r} holds {codes.numel()} video codes, not a whole "
                                 f"number of {h}x{w} frames")
            out[ARG[seg]] = codes.reshape(-1, h, w)
        i = j + 1
    if i != n - 1 or int(seq[i]) != vocab.eos:
        raise ValueError(f"task {task!r}: expected <eos> as the last token at index {i}, sequence has {n}")
    return out
