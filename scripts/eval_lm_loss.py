"""Held-out loss of one or more LMs, per task, on a token shard directory (JSON line last).

    python scripts/eval_lm_loss.py --shards runs/tokens/eval --clips 16 \\
        kinema/assets/kinema-tiny/lm runs/lm_kinema_tiny/final

Each clip is scored once per task (t2v, continue, v2a by default) with that task's fixed layout and
no caption dropout, one sample at a time, so the numbers do not depend on batching, ranks or the
training mix. A task the shards cannot lay out (e.g. v2a on shards without audio) is reported as
null. Token-weighted mean cross-entropy in nats/token; lower is better. Comparing the same LM on
held-out and on training clips shows whether it memorises. An LM whose vocabulary is not the one
the shards were extracted with is refused.

``--by-frame`` adds the text-to-video loss of each latent video frame on its own (frame 0 is the
first frame, coded alone by the causal tokenizer: there the caption's objects must be drawn from
the text; later frames can copy and move what is already there).

``--caption-gain`` also scores each frame with the caption dropped (the layout classifier-free
guidance's unconditional branch sees) and reports the difference, uncaptioned minus captioned loss,
per latent frame: how many nats per token the caption is worth to the LM. Classifier-free guidance
can only amplify this gap, so an LM whose loss falls while the gap does not has learned the world
better but not the caption.

Both also split the text-to-video loss of frames 1.. between the tokens whose code changed since the
same place one latent frame earlier (where things move; ``t2v_changed``) and the rest, and
``--caption-gain`` gives the caption's worth on each (``caption_gain_changed``): how much the caption
tells the LM about the motion, the part of the clip that guidance on the later latents amplifies.
``--motion-gain`` scores the clips whose caption names a motion once more with every motion phrase
made "standing still" (the contrast prompt of ``motion_guidance``, kinema.decode.motion_contrast) and
reports that loss minus the captioned one (``motion_gain``): what the caption's verbs are worth to
the LM, per latent frame and on the changed / unchanged tokens, the gap motion guidance amplifies.
It also reports ``direction_gain``, the same with every slide reversed (left <-> right, up <-> down)
instead: whether the LM knows which way things go, not only that they move.
``t2v_copy`` compares how often a token repeats the previous latent frame's id in the clips (``data``)
with the probability the LM gives that repeat (``model``): a calibration check of "stay put".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.decode.motion_contrast import reversed_caption, still_caption  # noqa: E402
from kinema.errors import KinemaError  # noqa: E402
from kinema.lm import layout  # noqa: E402
from kinema.lm.model import KinemaLM  # noqa: E402
from kinema.lm.shards import TokenShards  # noqa: E402
from kinema.lm.token_data import TokenShardDataset, collate, lm_loss, vocab_from_meta  # noqa: E402
from kinema.lm.vocab import Vocab  # noqa: E402


@torch.no_grad()
def task_loss(lm: KinemaLM, shards: TokenShards, vocab: Vocab, task: str, clips: int,
              max_text_tokens: int = 48) -> float | None:
    """Mean loss per predicted token of ``task`` over the first ``clips`` samples (None: no sample fits)."""
    try:
        ds = TokenShardDataset(shards, vocab, tasks={task: 1.0}, drop_text_prob=0.0, max_text_tokens=max_text_tokens)
    except ValueError:
        return None
    tot = n = 0.0
    for i in tqdm(range(min(clips, len(ds))), desc=task, unit="clip", leave=False):
        loss, k = lm_loss(lm, collate([ds[i]], pad_id=vocab.pad), True, "cpu")
        tot += float(loss) * k
        n += k
    return tot / n if n else None


@torch.no_grad()
def t2v_token_losses(lm: KinemaLM, shards: TokenShards, vocab: Vocab, clips: int | list[int], max_text_tokens: int = 48,
                     drop_text: bool = False, text_map: Callable[[list[int]], list[int]] | None = None
                     ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per clip, the text-to-video loss of every video token as (frames, tokens per frame), the
    token ids in the same shape, and for frames 1.. the probability the LM gives the id at the same
    place one latent frame earlier (frames - 1, tokens per frame); same clips and layout as
    :func:`task_loss`; ``drop_text`` scores them with the caption left out, ``text_map`` with the
    caption's ids replaced by ``text_map(ids)``. ``clips``: the first N samples, or a list of indices."""
    from kinema.training import autocast

    ds = TokenShardDataset(shards, vocab, tasks={"t2v": 1.0}, drop_text_prob=1.0 if drop_text else 0.0,
                           max_text_tokens=max_text_tokens)
    lo, hi = vocab.video_range
    out = []
    idx = list(range(min(clips, len(ds)))) if isinstance(clips, int) else clips
    for i in tqdm(idx, desc="t2v by frame", unit="clip", leave=False):
        if text_map is None:
            s = ds[i]
        else:  # the same sample with the caption edited
            video = torch.from_numpy(shards[i].arrays["video"])[: ds.plan(i).frames]
            s = layout.build("t2v", vocab, text=text_map(shards.text(i))[:max_text_tokens], video_codes=video,
                             max_text_tokens=max_text_tokens)
        with autocast("cpu", enabled=True):
            logits = lm(s.ids[None], s.positions[None], prefix_len=torch.tensor([s.prefix_len])).logits[0, :-1]
        target = s.ids[1:]
        keep = s.loss_mask[1:] & (target >= lo) & (target < hi)
        logp = torch.log_softmax(logits[keep].float(), -1)  # (N, V)
        ids = target[keep]
        ce = -logp.gather(1, ids[:, None]).squeeze(1)
        frames = int(s.positions[1:][keep][:, 0].unique().numel())  # raster order: frame by frame
        ids, logp = ids.view(frames, -1), logp.view(frames, ids.numel() // frames, -1)
        p_copy = logp[1:].gather(2, ids[:-1, :, None]).squeeze(2).exp()  # P(the id one frame earlier)
        out.append((ce.view(frames, -1), ids, p_copy))
    return out


def frame_losses(per_clip: list[tuple[torch.Tensor, ...]]) -> list[float]:
    """Mean loss of each latent frame (index = frame) over the clips of :func:`t2v_token_losses`."""
    n = max(c[0].shape[0] for c in per_clip)
    tot, cnt = [0.0] * n, [0] * n
    for ce, *_ in per_clip:
        for f in range(ce.shape[0]):
            tot[f] += float(ce[f].sum())
            cnt[f] += ce.shape[1]
    return [t / c for t, c in zip(tot, cnt)]


def changed_losses(per_clip: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Mean loss, over frames 1.., of the tokens whose id differs from the id at the same place one
    latent frame earlier (``changed``: where things move) and of the rest (``unchanged``), and the
    share of tokens that changed."""
    tot = {True: 0.0, False: 0.0}
    cnt = {True: 0, False: 0}
    for ce, ids, *_ in per_clip:
        moved = ids[1:] != ids[:-1]
        for k in (True, False):
            sel = moved if k else ~moved
            tot[k] += float(ce[1:][sel].sum())
            cnt[k] += int(sel.sum())
    return {"changed": tot[True] / max(cnt[True], 1), "unchanged": tot[False] / max(cnt[False], 1),
            "changed_share": cnt[True] / max(cnt[True] + cnt[False], 1)}


def copy_rates(per_clip: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Over frames 1.., how often a token repeats the id at the same place one latent frame earlier
    (``data``) and the mean probability the LM gives that repeat (``model``). An LM trained with
    plain cross-entropy is calibrated when the two agree; a loss weight that depends on whether the
    target changed (``data.change_weight``) moves the LM's optimum away from the data (it learns
    p(y) * w(y), renormalised), so it under-predicts repeats and sampling changes codes too often."""
    rep, prob, n = 0.0, 0.0, 0
    for _, ids, p_copy in per_clip:
        rep += float((ids[1:] == ids[:-1]).sum())
        prob += float(p_copy.sum())
        n += p_copy.numel()
    return {"data": rep / max(n, 1), "model": prob / max(n, 1)}


def t2v_frame_losses(lm: KinemaLM, shards: TokenShards, vocab: Vocab, clips: int,
                     max_text_tokens: int = 48, drop_text: bool = False) -> list[float]:
    """Mean text-to-video loss of the video tokens of each latent frame (index = frame)."""
    return frame_losses(t2v_token_losses(lm, shards, vocab, clips, max_text_tokens, drop_text))


def motion_gain(lm: KinemaLM, shards: TokenShards, vocab: Vocab, clips: int, cond: list,
                text_dir: str | None = None, transform: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """What the caption's motion phrases are worth to the LM: the text-to-video loss with the caption
    made still (every motion phrase -> "standing still", :func:`kinema.decode.motion_contrast.still_caption`,
    the contrast prompt of motion guidance) minus the loss with the caption itself, per latent frame
    and on frames 1..'s changed / unchanged tokens, over the clips whose caption names a motion
    (``cond``: :func:`t2v_token_losses` of the first ``clips`` clips). Motion guidance can only
    amplify this gap. ``text_dir``: the text tokenizer (default: the embedded one). ``transform``:
    another caption edit in place of ``still_caption`` (e.g. ``reversed_caption``, whose gap
    says whether the LM knows which way a slide goes, not only that something moves)."""
    from kinema.tokenizers.text import TextTokenizer

    edit = transform or still_caption

    tt = TextTokenizer.from_pretrained(text_dir)
    if tt.vocab_size != vocab.text_size:
        raise ValueError(f"text tokenizer has {tt.vocab_size} ids but the LM's vocabulary has {vocab.text_size}")
    moving = [i for i in range(len(cond)) if edit(tt.decode(shards.text(i))) is not None]
    if not moving:
        return {"clips": 0}
    still = t2v_token_losses(lm, shards, vocab, moving, text_map=lambda ids: tt.encode(edit(tt.decode(ids))))
    mine = [cond[i] for i in moving]
    s, c = changed_losses(still), changed_losses(mine)
    return {"clips": len(moving), "by_frame": [a - b for a, b in zip(frame_losses(still), frame_losses(mine))],
            "changed": s["changed"] - c["changed"], "unchanged": s["unchanged"] - c["unchanged"]}


def _rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="LM directories (save_pretrained format)")
    ap.add_argument("--shards", required=True, help="token shard directory (scripts/extract_tokens.py)")
    ap.add_argument("--clips", type=int, default=16, help="first N samples of the shards")
    ap.add_argument("--tasks", nargs="+", default=["t2v", "continue", "v2a"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--by-frame", action="store_true", help="also the t2v loss of each latent video frame")
    ap.add_argument("--motion-gain", action="store_true",
                    help="also the loss with the caption's motion phrases made 'standing still' minus the loss with "
                         "the caption (what motion guidance amplifies)")
    ap.add_argument("--text-tokenizer", default=None, help="with --motion-gain: text tokenizer directory "
                    "(default: the embedded one)")
    ap.add_argument("--caption-gain", action="store_true",
                    help="also, per latent frame, the t2v loss without the caption minus the loss with it")
    args = ap.parse_args(argv)
    if args.clips <= 0:
        ap.error("--clips must be positive")
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except (KinemaError, ValueError, FileNotFoundError) as e:
        print(f"eval_lm_loss: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    shards = TokenShards(args.shards)
    result = {"shards": args.shards, "clips": min(args.clips, len(shards)), "loss": {}}
    for m in args.models:
        lm = KinemaLM.from_pretrained(m).float().eval()
        vocab = Vocab.from_dict(lm.cfg.vocab)
        if vocab_from_meta(shards.meta, vocab.video_factorize).to_dict() != vocab.to_dict():
            raise ValueError(f"{m}: its vocabulary ({vocab.to_dict()}) is not the one {args.shards} was "
                             f"extracted with ({vocab_from_meta(shards.meta).to_dict()})")
        row = {t: task_loss(lm, shards, vocab, t, args.clips) for t in args.tasks}
        if args.by_frame or args.caption_gain or args.motion_gain:
            cond = t2v_token_losses(lm, shards, vocab, args.clips)
            row["t2v_by_frame"] = frame_losses(cond)
            row["t2v_changed"] = changed_losses(cond)
            row["t2v_copy"] = copy_rates(cond)
        if args.caption_gain:
            uncond = t2v_token_losses(lm, shards, vocab, args.clips, drop_text=True)
            row["caption_gain_by_frame"] = [u - c for u, c in zip(frame_losses(uncond), row["t2v_by_frame"])]
            u, c = changed_losses(uncond), row["t2v_changed"]
            row["caption_gain_changed"] = {k: u[k] - c[k] for k in ("changed", "unchanged")}
        if args.motion_gain:
            row["motion_gain"] = motion_gain(lm, shards, vocab, args.clips, cond, args.text_tokenizer)
            row["direction_gain"] = motion_gain(lm, shards, vocab, args.clips, cond, args.text_tokenizer,
                                                transform=reversed_caption)
        result["loss"][m] = row
        print(m, {t: _rounded(v) for t, v in row.items()}, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
