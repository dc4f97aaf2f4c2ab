"""LM training data from token shards: task layouts built on the fly, length-grouped batches, collate.

* :class:`TokenShardDataset` turns each stored sample into one :class:`~kinema.lm.layout.Sequence`,
  choosing its task from a weighted mix every epoch (deterministic in ``(seed, epoch, index)``,
  so a resumed run sees the same data) and dropping the text ~10% of the time for classifier-free
  guidance (Ho & Salimans, 2022). With ``change_weight`` > 1, the output video tokens whose code
  differs from the code at the same place one latent frame earlier weigh that much more in the loss
  (:func:`change_weights`): on the synthetic world most codes are static background, and the few that
  change carry the motion the caption asks for. The weight depends on the target, so it tilts the
  loss's optimum toward change (the LM learns p(y) w(y), renormalised, not p(y)): on kinema-tiny it
  made the LM under-predict repeats and the sampled clips move less, so it is off by default.
* :class:`LengthGroupedBatchSampler` groups samples of similar length (shuffle, cut into
  mega-batches, sort each by length, split into batches, shuffle the batches), the scheme of
  Hugging Face's ``LengthGroupedSampler``, so a batch wastes little compute on padding.
* :func:`collate` right-pads with ``vocab.pad`` and returns what ``KinemaLM.forward`` takes;
  :func:`lm_loss` runs the model on such a batch (training, its eval and ``scripts/eval_lm_loss.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence as Seq

import numpy as np
import torch

from kinema.lm import layout
from kinema.lm.layout import Sequence
from kinema.lm.shards import TokenShards
from kinema.lm.vocab import Vocab

DEFAULT_TASKS = {"t2v": 0.4, "t2i": 0.1, "i2v": 0.1, "continue": 0.1, "extend_back": 0.05, "bridge": 0.05,
                 "v2a": 0.05, "a2v": 0.05, "t2va": 0.1}
NEEDS_AUDIO = {"v2a", "a2v", "t2va"}
MIN_FRAMES = {"i2v": 2, "continue": 2, "extend_back": 2, "bridge": 3}


@dataclass(frozen=True)
class Plan:
    """How sample ``i`` is laid out this epoch."""

    task: str
    drop_text: bool
    frames: int          # latent video frames kept (cropped from the start)
    cut: tuple[int, ...]  # frame split points for i2v/continue/extend_back/bridge


def vocab_from_meta(meta: dict[str, Any], video_factorize: bool = False) -> Vocab:
    """The unified vocabulary matching the tokenizers recorded in a shard directory's meta.json
    (its ``vocab`` entry when present, else the flat tokenizer sizes)."""
    if isinstance(meta.get("vocab"), dict):
        v = Vocab.from_dict(meta["vocab"])
        return v if v.video_factorize == video_factorize else Vocab.from_dict(
            {**v.to_dict(), "video_factorize": video_factorize, "size": None})
    need = ("text_size", "video_codebook_size", "audio_codebook_size", "audio_num_quantizers")
    missing = [k for k in need[:2] if not meta.get(k)]
    if missing:
        raise ValueError(f"shard meta lacks {missing}; cannot derive the vocabulary")
    return Vocab(int(meta["text_size"]), int(meta["video_codebook_size"]), int(meta.get("audio_codebook_size") or 1),
                 int(meta.get("audio_num_quantizers") or 1), video_factorize=video_factorize)


class TokenShardDataset(torch.utils.data.Dataset):
    """Samples of a shard directory as task layouts. Shards must hold a ``video`` array (t, h, w)
    and may hold ``audio`` (Q, n); text ids come from the index."""

    def __init__(self, shards: TokenShards | str, vocab: Vocab, tasks: dict[str, float] | Seq[str] | None = None,
                 drop_text_prob: float = 0.1, max_text_tokens: int = 64, max_video_frames: int | None = None,
                 max_tokens: int | None = None, seed: int = 0, change_weight: float = 1.0):
        if not change_weight >= 1.0:
            raise ValueError(f"change_weight must be >= 1 (1 = plain loss), got {change_weight}")
        self.change_weight = float(change_weight)
        self.shards = shards if isinstance(shards, TokenShards) else TokenShards(shards)
        self.vocab = vocab
        stored_vocab = self.shards.meta.get("vocab") if isinstance(self.shards.meta.get("vocab"), dict) else {}
        for k in ("text_size", "video_codebook_size", "audio_codebook_size", "audio_num_quantizers"):
            stored = self.shards.meta.get(k, stored_vocab.get(k))
            if stored is not None and stored != getattr(vocab, k):
                raise ValueError(f"shards were made with {k}={stored} but the vocabulary has {getattr(vocab, k)}")
        tasks = DEFAULT_TASKS if tasks is None else tasks
        weights = dict(tasks) if isinstance(tasks, dict) else {t: 1.0 for t in tasks}
        for t, w in weights.items():
            if t not in layout.SPEC:
                raise ValueError(f"unknown task {t!r}; known: {', '.join(layout.TASKS)}")
            if w < 0:
                raise ValueError(f"task weight of {t!r} is negative")
        self.tasks = {t: float(w) for t, w in weights.items() if w > 0}
        if not self.tasks:
            raise ValueError("no task has a positive weight")
        if not 0.0 <= drop_text_prob <= 1.0:
            raise ValueError(f"drop_text_prob must be in [0, 1], got {drop_text_prob}")
        self.drop_text_prob = drop_text_prob
        self.max_text_tokens = max_text_tokens
        self.max_video_frames = max_video_frames
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self._plans: dict[int, Plan] = {}  # this epoch's plans, filled lazily
        self._shapes = [self.shards.shapes(i) for i in range(len(self.shards))]
        self._text_len = [len(self.shards.text(i)) for i in range(len(self.shards))]
        for i, sh in enumerate(self._shapes):
            if not self._eligible(i):
                raise ValueError(f"sample {self.shards.indices[i]} (shapes {sh}) fits none of the tasks "
                                 f"{sorted(self.tasks)}")

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self._plans.clear()
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ planning
    def _frames(self, i: int) -> int:
        t = self._shapes[i]["video"][0] if "video" in self._shapes[i] else 0
        return min(t, self.max_video_frames) if self.max_video_frames else t

    def _eligible(self, i: int) -> list[str]:
        sh, t = self._shapes[i], self._frames(i)
        if "video" not in sh or t < 1:
            return []
        return [k for k in self.tasks if t >= MIN_FRAMES.get(k, 1) and ("audio" in sh or k not in NEEDS_AUDIO)]

    def plan(self, i: int) -> Plan:
        """Task, text drop and frame split of sample ``i`` this epoch (deterministic in
        ``(seed, epoch, index)``). With ``max_tokens``, frames are dropped from the end of the clip
        until the sequence fits (or the task's minimum number of frames is reached)."""
        if i not in self._plans:
            self._plans[i] = self._new_plan(i)
        return self._plans[i]

    def _new_plan(self, i: int) -> Plan:
        rng = np.random.default_rng([self.seed, self.epoch, int(self.shards.indices[i])])
        names = self._eligible(i)
        w = np.array([self.tasks[n] for n in names])
        task = names[int(rng.choice(len(names), p=w / w.sum()))]
        drop = bool(rng.random() < self.drop_text_prob) and "text" in layout.SPEC[task][0]
        u = rng.random(2)
        t = 1 if task == "t2i" else self._frames(i)
        while True:
            p = self._make_plan(task, drop, t, u)
            if self.max_tokens is None or t <= MIN_FRAMES.get(task, 1) or self._length(i, p) <= self.max_tokens:
                return p
            t -= 1

    @staticmethod
    def _make_plan(task: str, drop: bool, t: int, u: np.ndarray) -> Plan:
        cut: tuple[int, ...] = ()
        if task in ("continue", "extend_back"):
            cut = (1 + int(u[0] * (t - 1)),)  # in [1, t-1]
        elif task == "i2v":
            cut = (1,)
        elif task == "bridge":
            a = 1 + int(u[0] * (t - 2))  # in [1, t-2]
            cut = (a, a + 1 + int(u[1] * (t - 1 - a)))  # second in [a+1, t-1]
        return Plan(task, drop, t, cut)

    def _audio_len(self, i: int, frames: int) -> int:
        """Audio frames kept when the video is cropped to ``frames`` latent frames (proportional)."""
        q, n = self._shapes[i]["audio"]
        t = self._shapes[i]["video"][0]
        return n if frames >= t else max(1, -(-n * frames // t))

    def seq_len(self, i: int) -> int:
        """Length of ``self[i]`` this epoch, computed from shapes only (no data read)."""
        return self._length(i, self.plan(i))

    def _length(self, i: int, p: Plan) -> int:
        v = self.vocab
        prefix, output = layout.SPEC[p.task]
        _, h, w = self._shapes[i]["video"]
        per_frame = h * w * v.video_tokens_per_code
        n = 3  # <bos> <task> ... <eos>
        for seg in prefix + output:
            kind = layout.KIND[seg]
            if kind == "text":
                n += 2 + (0 if p.drop_text else min(self._text_len[i], self.max_text_tokens))
            elif kind == "audio":
                n += 2 + self._shapes[i]["audio"][0] * self._audio_len(i, p.frames)
            else:
                n += 2 + per_frame * self._segment_frames(seg, p)
        return n

    @staticmethod
    def _segment_frames(seg: str, p: Plan) -> int:
        bounds = (0, *p.cut, p.frames)
        if p.task in ("i2v", "continue"):
            return {"image": 1, "cond_video": p.cut[0], "video": p.frames - p.cut[0]}[seg]
        if p.task == "extend_back":
            return {"cond_video": p.frames - p.cut[0], "video": p.cut[0]}[seg]
        if p.task == "bridge":
            return {"cond_video": bounds[1], "video": bounds[2] - bounds[1], "cond_video_after": p.frames - bounds[2]}[seg]
        return p.frames

    def lengths(self) -> np.ndarray:
        return np.array([self.seq_len(i) for i in range(len(self))], dtype=np.int64)

    # ------------------------------------------------------------------ building
    def __getitem__(self, i: int) -> Sequence:
        rec = self.shards[i]
        p = self.plan(i)
        video = torch.from_numpy(rec.arrays["video"])[: p.frames]  # (t, h, w)
        audio = None
        if "audio" in rec.arrays and p.task in NEEDS_AUDIO:
            audio = torch.from_numpy(rec.arrays["audio"])[:, : self._audio_len(i, p.frames)]  # (Q, n)
        kw: dict[str, Any] = {}
        if p.task in ("t2v", "t2i", "uncond"):
            kw["video_codes"] = video
        elif p.task == "i2v":
            kw.update(image_codes=video[:1], video_codes=video[1:])
        elif p.task == "continue":
            kw.update(cond_video_codes=video[: p.cut[0]], video_codes=video[p.cut[0]:])
        elif p.task == "extend_back":
            kw.update(cond_video_codes=video[p.cut[0]:], video_codes=video[: p.cut[0]])
        elif p.task == "bridge":
            a, b = p.cut
            kw.update(cond_video_codes=video[:a], video_codes=video[a:b], cond_video_after_codes=video[b:])
        elif p.task == "v2a":
            kw.update(cond_video_codes=video, audio_codes=audio)
        elif p.task == "a2v":
            kw.update(cond_audio_codes=audio, video_codes=video)
        elif p.task == "t2va":
            kw.update(video_codes=video, audio_codes=audio)
        # Truncation to the text budget is expected in training, so it is done here, without the
        # warning layout.build gives a user. (A catch_warnings per sample would also reset Python's
        # warning registry each step, and every once-only library warning would then print each step.)
        text = rec.text[: self.max_text_tokens] if "text" in layout.SPEC[p.task][0] else None
        seq = layout.build(p.task, self.vocab, text=text, drop_text=p.drop_text,
                           max_text_tokens=self.max_text_tokens, **kw)
        if self.change_weight != 1.0:
            span = self._output_frames(p)
            if span is not None:
                seq.loss_weight = change_weights(seq, self.vocab, video, span, self.change_weight)
        return seq

    @staticmethod
    def _output_frames(p: Plan) -> tuple[int, int] | None:
        """The clip's latent frames [start, end) that the task outputs (None: it outputs no video)."""
        if p.task == "v2a":
            return None
        if p.task == "i2v":
            return 1, p.frames
        if p.task == "continue":
            return p.cut[0], p.frames
        if p.task == "extend_back":
            return 0, p.cut[0]
        if p.task == "bridge":
            return p.cut
        return 0, p.frames


def change_weights(seq: Sequence, vocab: Vocab, video: torch.Tensor, span: tuple[int, int],
                   weight: float) -> torch.Tensor:
    """(L,) loss weights of ``seq``: ``weight`` on each output video token whose code differs from
    the code at the same (row, column) one latent frame earlier in the clip ``video`` (t, h, w), 1
    elsewhere. ``span`` is the clip's frames [start, end) that the sequence outputs, in raster order
    after any conditioning; the clip's first frame has nothing before it, so it keeps weight 1."""
    a, b = span
    changed = torch.zeros_like(video[a:b], dtype=torch.bool)  # (b-a, h, w)
    lo = max(a, 1)
    changed[lo - a:] = video[lo:b] != video[lo - 1:b - 1]
    per_token = changed.reshape(-1).repeat_interleave(vocab.video_tokens_per_code)
    v0, v1 = vocab.video_range
    out_video = seq.loss_mask & (seq.ids >= v0) & (seq.ids < v1)
    if int(out_video.sum()) != per_token.numel():
        raise ValueError(f"{seq.task}: {int(out_video.sum())} output video tokens, but frames {a}..{b} "
                         f"of the clip hold {per_token.numel()}")
    w = torch.ones(len(seq), dtype=torch.float32)
    w[out_video] = 1.0 + (weight - 1.0) * per_token.float()
    return w


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of indices with similar lengths. ``lengths``: an array, or an object with
    ``lengths()`` (re-read every epoch, since task choice changes lengths). Deterministic per
    ``(seed, epoch)``; ``start_batch`` skips batches already consumed when resuming."""

    def __init__(self, lengths: Any, batch_size: int, seed: int = 0, mega_batch_mult: int = 50,
                 shuffle: bool = True, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.mega = max(1, mega_batch_mult) * batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def _lengths(self) -> np.ndarray:
        return np.asarray(self.source.lengths() if hasattr(self.source, "lengths") else self.source)

    def batches(self) -> list[list[int]]:
        lengths = self._lengths()
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(lengths)) if self.shuffle else np.arange(len(lengths))
        out: list[list[int]] = []
        for s in range(0, len(order), self.mega):
            chunk = order[s:s + self.mega]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            out += [chunk[j:j + self.batch_size].tolist() for j in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            out = [b for b in out if len(b) == self.batch_size]
        if self.shuffle:
            out = [out[k] for k in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch:]

    def __len__(self) -> int:
        n = len(self._lengths())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def padding_fraction(batches: list[list[int]], lengths: Seq[int]) -> float:
    """Share of padded positions when each batch is padded to its longest sequence."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / max(total, 1)


def collate(seqs: list[Sequence], pad_id: int = 0, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """Right-pad a list of sequences: ids (B,L), positions (B,L,3), loss_mask (B,L),
    attention_mask (B,L) True on real tokens, prefix_len (B,), lengths (B,), tasks, and loss_weight
    (B,L) float when any sequence carries weights (else None)."""
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    L = max(len(s) for s in seqs)
    if pad_to_multiple_of:
        L = -(-L // pad_to_multiple_of) * pad_to_multiple_of
    B = len(seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    pos = torch.zeros(B, L, 3, dtype=torch.long)
    loss = torch.zeros(B, L, dtype=torch.bool)
    att = torch.zeros(B, L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        n = len(s)
        ids[b, :n], pos[b, :n], loss[b, :n], att[b, :n] = s.ids, s.positions, s.loss_mask, True
    weight = None
    if any(s.loss_weight is not None for s in seqs):  # (B, L); 1 where a sequence has no weights
        weight = torch.ones(B, L, dtype=torch.float32)
        for b, s in enumerate(seqs):
            if s.loss_weight is not None:
                weight[b, :len(s)] = s.loss_weight
    return {"ids": ids, "positions": pos, "loss_mask": loss, "attention_mask": att,
            "prefix_len": torch.tensor([s.prefix_len for s in seqs], dtype=torch.long),
            "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.long),
            "tasks": [s.task for s in seqs], "loss_weight": weight}


def lm_loss(model, batch: dict, bf16: bool, device) -> tuple[torch.Tensor, int]:
    """Mean next-token loss of ``model`` (KinemaLM or its DeepSpeed engine) on a :func:`collate` batch
    (weighted by its ``loss_weight`` when it has one), and the number of tokens it was averaged over."""
    from kinema.training import autocast

    with autocast(device, enabled=bf16):
        out = model(batch["ids"].to(device), batch["positions"].to(device), prefix_len=batch["prefix_len"].to(device),
                    attention_mask=batch["attention_mask"].to(device), loss_mask=batch["loss_mask"].to(device),
                    **({} if batch.get("loss_weight") is None else {"loss_weight": batch["loss_weight"].to(device)}))
    return out.loss, out.n_tokens
