"""Unified vocabulary and task layouts: exact inverses, masks, plans, positions, bad input."""
from __future__ import annotations

import pytest
import torch

from kinema.lm import layout
from kinema.lm.layout import SPEC, TASKS, build, build_prefix, output_plan, revert
from kinema.lm.vocab import Vocab

HW = (3, 4)


def _vocabs() -> list[Vocab]:
    return [Vocab(50, 64, 16, 4), Vocab(37, 2**18, 32, 3, video_factorize=True), Vocab(20, 1000, 8, 2, video_factorize=True)]


def _example(task: str, v: Vocab, g: torch.Generator) -> dict:
    """Random inputs for every argument ``task`` takes."""
    prefix, output = SPEC[task]
    t = 1 if task == "t2i" else 3
    kw: dict = {}
    for seg in prefix + output:
        arg = layout.ARG[seg]
        kind = layout.KIND[seg]
        if kind == "text":
            kw[arg] = torch.randint(0, v.text_size, (7,), generator=g).tolist()
        elif kind == "video":
            frames = 1 if seg == "image" else (2 if seg.startswith("cond") else t)
            kw[arg] = torch.randint(0, v.video_codebook_size, (frames, *HW), generator=g)
        else:
            q = v.audio_num_quantizers if seg == "audio" else max(1, v.audio_num_quantizers - 1)
            kw[arg] = torch.randint(0, v.audio_codebook_size, (q, 5), generator=g)
    return kw


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.long(), b.long())
    return a == b


@pytest.mark.parametrize("task", TASKS)
def test_build_revert_exact_inverse(task: str) -> None:
    g = torch.Generator().manual_seed(hash(task) % 1000)
    for v in _vocabs():
        kw = _example(task, v, g)
        seq = build(task, v, **kw)
        v.check(seq.ids)
        back = revert(seq.ids, v, video_hw=HW)
        assert back.pop("task") == task
        assert set(back) == set(kw)
        for k in kw:
            assert _same(back[k], kw[k]), (task, k)
        # trailing padding is ignored
        padded = torch.cat([seq.ids, torch.full((5,), v.pad)])
        assert _same(revert(padded, v, video_hw=HW).get("video_codes"), kw.get("video_codes"))


@pytest.mark.parametrize("task", TASKS)
def test_loss_mask_and_prefix(task: str) -> None:
    v = _vocabs()[1]
    kw = _example(task, v, torch.Generator().manual_seed(1))
    seq = build(task, v, **kw)
    L = len(seq)
    assert seq.ids.shape == (L,) and seq.loss_mask.shape == (L,) and seq.positions.shape == (L, 3)
    assert not seq.loss_mask[: seq.prefix_len].any()
    assert seq.loss_mask[seq.prefix_len:].all()
    assert int(seq.ids[0]) == v.bos and int(seq.ids[1]) == v.task_id(task)
    assert int(seq.ids[-1]) == v.eos
    # the output starts with the opening bracket of the first output segment
    first = layout.KIND[SPEC[task][1][0]]
    assert int(seq.ids[seq.prefix_len]) == (v.bov if first == "video" else v.boa)
    # prefix built alone is identical to the prefix of the full sequence
    pre_kw = {k: x for k, x in kw.items() if k not in ("video_codes", "audio_codes")}
    pre = build_prefix(task, v, **pre_kw)
    assert torch.equal(pre.ids, seq.ids[: seq.prefix_len])
    assert torch.equal(pre.positions, seq.positions[: seq.prefix_len])


@pytest.mark.parametrize("task", TASKS)
def test_output_plan_matches_build(task: str) -> None:
    for v in _vocabs():
        kw = _example(task, v, torch.Generator().manual_seed(2))
        seq = build(task, v, **kw)
        pre_kw = {k: x for k, x in kw.items() if k not in ("video_codes", "audio_codes")}
        pre = build_prefix(task, v, **pre_kw)
        grid = tuple(kw["video_codes"].shape) if "video_codes" in kw else None
        ashape = tuple(kw["audio_codes"].shape) if "audio_codes" in kw else None
        plan = output_plan(task, v, video_grid=grid, audio_shape=ashape, start_pos=pre.next_pos)
        out = seq.ids[seq.prefix_len:]
        assert plan.length == out.numel()
        b = plan.bounds()
        assert ((out >= b[:, 0]) & (out < b[:, 1])).all()
        assert torch.equal(plan.positions, seq.positions[seq.prefix_len:])
        # forced positions are exactly the special tokens; code positions admit only their modality
        specials = out < v.num_special
        forced = torch.tensor([plan.forced(i) is not None for i in range(plan.length)])
        assert torch.equal(forced, specials)
        assert len(plan.segments) <= 6 + v.audio_num_quantizers  # compact: segments, not per-id
        vid = (b[:, 0] >= v.video_range[0]) & (b[:, 1] <= v.video_range[1])
        assert torch.equal(vid, (out >= v.video_range[0]) & (out < v.video_range[1]))


def test_positions_mrope() -> None:
    v = Vocab(30, 64, 16, 2)
    text = [1, 2, 3]
    video = torch.randint(0, 64, (2, 3, 4))
    seq = build("t2v", v, text=text, video_codes=video)
    pos = seq.positions
    # <bos> <t2v> <bot> 3 text <eot> <bov>: running index 0..7, all three axes equal
    assert torch.equal(pos[:8], torch.arange(8).unsqueeze(1).expand(8, 3))
    p0 = 8
    vid = pos[8:8 + 24].reshape(2, 3, 4, 3)
    for t in range(2):
        for h in range(3):
            for w in range(4):
                assert vid[t, h, w].tolist() == [p0 + t, h, w]
    assert pos[8 + 24].tolist() == [p0 + 2] * 3  # <eov> resumes at p0 + T
    assert pos[-1].tolist() == [p0 + 3] * 3      # <eos>
    # factorised sub-tokens share their code's position
    vf = Vocab(30, 2**18, 16, 2, video_factorize=True)
    sf = build("t2v", vf, text=text, video_codes=torch.randint(0, 2**18, (2, 3, 4)))
    sub = sf.positions[8:8 + 48].reshape(24, 2, 3)
    assert torch.equal(sub[:, 0], sub[:, 1]) and torch.equal(sub[:, 0], vid.reshape(24, 3))


def test_audio_level_by_level_order() -> None:
    v = Vocab(10, 16, 8, 3)
    a = torch.randint(0, 8, (3, 6))
    seq = build("v2a", v, video_codes=None, cond_video_codes=torch.zeros(1, 2, 2, dtype=torch.long), audio_codes=a)
    body = seq.ids[seq.prefix_len + 1: seq.prefix_len + 1 + 18]
    levels = (body - v.audio_range[0]) // v.audio_codebook_size
    assert levels.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_factorisation_round_trip_and_size() -> None:
    v = Vocab(100, 2**18, 1024, 4, video_factorize=True)
    assert v.video_lo_size == 512 and v.video_hi_size == 512
    assert v.video_range[1] - v.video_range[0] == 1024  # embedding rows for video: 2 * 2^9
    codes = torch.cat([torch.tensor([0, 2**18 - 1, 511, 512]), torch.randint(0, 2**18, (1000,))])
    ids = v.video_to_ids(codes)
    assert ids.numel() == 2 * codes.numel()
    assert torch.equal(v.ids_to_video(ids), codes)
    # odd sizes: every code still round-trips
    w = Vocab(5, 1000, 4, 1, video_factorize=True)
    c = torch.arange(1000)
    assert torch.equal(w.ids_to_video(w.video_to_ids(c)), c)
    with pytest.raises(ValueError):  # hi/lo order swapped
        v.ids_to_video(ids.reshape(-1, 2).flip(1).reshape(-1))


def test_vocab_dict_round_trip_and_ranges_disjoint() -> None:
    for v in _vocabs():
        assert Vocab.from_dict(v.to_dict()) == v
        ranges = [(0, v.num_special), v.text_range, v.video_range, v.audio_range]
        for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
            assert a1 == b0 and a0 < a1
        assert v.size == v.audio_range[1]
        ids = {v.pad, v.bos, v.eos, v.bot, v.eot, v.bov, v.eov, v.boa, v.eoa, v.res} | {v.task_id(t) for t in TASKS}
        assert len(ids) == v.num_special and max(ids) < v.num_special
    d = _vocabs()[0].to_dict()
    d["size"] += 1
    with pytest.raises(ValueError, match="does not match"):
        Vocab.from_dict(d)


def test_vocab_bounds_errors() -> None:
    v = Vocab(10, 16, 8, 2)
    v.check(torch.tensor([0, v.size - 1]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.check(torch.tensor([0, v.size]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.check([-1])
    with pytest.raises(ValueError):
        build("t2v", v, text=[10], video_codes=torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="video code 16"):
        build("t2v", v, text=[1], video_codes=torch.full((1, 2, 2), 16))
    with pytest.raises(ValueError):
        revert(torch.tensor([1, v.task_id("t2v"), v.size]), v, video_hw=(2, 2))
    with pytest.raises(ValueError, match="check_tokenizers|does not match"):
        v.check_tokenizers(11, 16, 8, 2)


def test_bad_shapes_and_arguments() -> None:
    v = Vocab(10, 16, 8, 2)
    with pytest.raises(ValueError, match=r"\(t, h, w\)"):
        build("t2v", v, video_codes=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="one frame"):
        build("t2i", v, video_codes=torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(Q, n\)"):
        build("v2a", v, cond_video_codes=torch.zeros(1, 2, 2, dtype=torch.long), audio_codes=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"1 <= Q <= 2"):
        build("v2a", v, cond_video_codes=torch.zeros(1, 2, 2, dtype=torch.long), audio_codes=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs video_codes"):
        build("t2v", v, text=[1])
    with pytest.raises(ValueError, match="does not take audio_codes"):
        build("t2v", v, video_codes=torch.zeros(1, 2, 2, dtype=torch.long), audio_codes=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown task"):
        build("nope", v)
    with pytest.raises(ValueError, match="not a string"):
        build("t2v", v, text="hello", video_codes=torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="video_hw"):
        revert(build("t2v", v, video_codes=torch.zeros(1, 2, 2, dtype=torch.long)).ids, v)
    with pytest.raises(ValueError, match="video_grid"):
        output_plan("t2v", v, start_pos=0)
    with pytest.raises(ValueError, match="eos"):
        seq = build("t2v", v, video_codes=torch.zeros(1, 2, 2, dtype=torch.long))
        revert(seq.ids[:-1], v, video_hw=(2, 2))


def test_text_truncation_and_drop() -> None:
    v = Vocab(10, 16, 8, 2)
    video = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.warns(UserWarning, match="truncated"):
        seq = build("t2v", v, text=list(range(10)) * 3, video_codes=video, max_text_tokens=8)
    assert revert(seq.ids, v, video_hw=(2, 2))["text"] == list(range(8))
    dropped = build("t2v", v, text=[1, 2, 3], video_codes=video, drop_text=True)
    empty = build("t2v", v, text=[], video_codes=video)
    none = build("t2v", v, text=None, video_codes=video)
    assert torch.equal(dropped.ids, empty.ids) and torch.equal(dropped.ids, none.ids)
    assert dropped.ids[2:4].tolist() == [v.bot, v.eot]
    assert revert(dropped.ids, v, video_hw=(2, 2))["text"] == []


def test_build_revert_property() -> None:
    """Random vocabularies, shapes and tasks: revert(build(x)) == x and the plan bounds every output."""
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(TASKS), st.integers(1, 300), st.integers(2, 5000), st.integers(1, 64), st.integers(1, 5),
           st.booleans(), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31 - 1))
    def check(task, text_size, vcb, acb, q, fact, t, h, w, seed):
        if fact and vcb < 4:
            return
        v = Vocab(text_size, vcb, acb, q, video_factorize=fact)
        g = torch.Generator().manual_seed(seed)
        kw = {}
        for seg in SPEC[task][0] + SPEC[task][1]:
            arg, kind = layout.ARG[seg], layout.KIND[seg]
            if kind == "text":
                kw[arg] = torch.randint(0, text_size, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g).tolist()
            elif kind == "video":
                frames = 1 if seg == "image" or task == "t2i" else t
                kw[arg] = torch.randint(0, vcb, (frames, h, w), generator=g)
            else:
                kw[arg] = torch.randint(0, acb, (int(torch.randint(1, q + 1, (1,), generator=g)), t + 1), generator=g)
        seq = build(task, v, **kw)
        back = revert(seq.ids, v, video_hw=(h, w))
        assert back.pop("task") == task
        assert all(_same(back[k], kw[k]) for k in kw)
        pre = build_prefix(task, v, **{k: x for k, x in kw.items() if k not in ("video_codes", "audio_codes")})
        plan = output_plan(task, v, tuple(kw["video_codes"].shape) if "video_codes" in kw else None,
                           tuple(kw["audio_codes"].shape) if "audio_codes" in kw else None, start_pos=pre.next_pos)
        out, b = seq.ids[seq.prefix_len:], plan.bounds()
        assert ((out >= b[:, 0]) & (out < b[:, 1])).all()
        assert torch.equal(plan.positions, seq.positions[seq.prefix_len:])

    check()
