"""Generation: constrained decoding follows the plan, CFG, determinism, batching, sampling filters."""
from __future__ import annotations

import pytest
import torch

from kinema.decode.generate import Contrast, generate
from kinema.decode.sampling import cfg_mix, constrain, contrast_mix, sample, top_k_filter, top_p_filter
from kinema.lm import layout
from kinema.lm.model import KinemaLM, LMConfig
from kinema.lm.vocab import Vocab


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(text_size=40, video_codebook_size=64, audio_codebook_size=16, audio_num_quantizers=2)


@pytest.fixture(scope="module")
def model(vocab) -> KinemaLM:
    torch.manual_seed(0)
    return KinemaLM(LMConfig.preset("tiny", vocab_size=vocab.size, vocab=vocab.to_dict())).eval()


def prompt(vocab, task="t2v", text=(3, 4, 5), grid=(2, 2, 3), **kw):
    seq = layout.build_prefix(task, vocab, text=torch.tensor(text) if text is not None else None, **kw)
    plan = layout.output_plan(task, vocab, video_grid=grid, audio_shape=(2, 5), start_pos=seq.next_pos)
    return seq, plan


def test_constrained_decoding_stays_in_plan_and_reverts(model, vocab):
    seq, plan = prompt(vocab, "t2va")
    g = torch.Generator().manual_seed(0)
    out = generate(model, [seq.ids], [seq.positions], plan, temperature=1.5, generator=g)  # (1, N)
    b = plan.bounds()
    assert out.shape == (1, plan.length)
    assert bool(((out[0] >= b[:, 0]) & (out[0] < b[:, 1])).all())
    codes = layout.revert(torch.cat([seq.ids, out[0]]), vocab, video_hw=(2, 3))
    assert tuple(codes["video_codes"].shape) == (2, 2, 3)
    assert tuple(codes["audio_codes"].shape) == (2, 5)


def test_same_seed_same_tokens_and_seed_matters(model, vocab):
    seq, plan = prompt(vocab)
    run = lambda s: generate(model, [seq.ids], [seq.positions], plan, temperature=1.0,
                             generator=torch.Generator().manual_seed(s))
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_greedy_matches_manual_full_forward(model, vocab):
    seq, plan = prompt(vocab, grid=(1, 2, 2))
    out = generate(model, [seq.ids], [seq.positions], plan, temperature=0)
    b = plan.bounds()
    ids, pos = seq.ids.clone(), seq.positions.clone()
    for i in range(plan.length):  # no cache: full forward each step
        logits = model(ids[None], pos[None], prefix_len=torch.tensor([seq.prefix_len])).logits[0, -1]
        tok = int(constrain(logits[None], int(b[i, 0]), int(b[i, 1])).argmax())
        assert tok == int(out[0, i]), f"step {i}"
        ids = torch.cat([ids, torch.tensor([tok])])
        pos = torch.cat([pos, plan.positions[i:i + 1]])


def test_batch_of_prompts_equals_one_by_one(model, vocab):
    s1, p1 = prompt(vocab, text=(3, 4, 5, 6, 7, 8))
    s2, p2 = prompt(vocab, text=(9,))
    both = generate(model, [s1.ids, s2.ids], [s1.positions, s2.positions], [p1, p2], temperature=0)
    one = generate(model, [s1.ids], [s1.positions], p1, temperature=0)
    two = generate(model, [s2.ids], [s2.positions], p2, temperature=0)
    assert torch.equal(both, torch.cat([one, two]))


def test_cfg_scale_one_is_conditional_and_scale_changes_output(model, vocab):
    s, p = prompt(vocab)
    u, up = prompt(vocab, text=None)
    cond = generate(model, [s.ids], [s.positions], p, temperature=0)
    kw = dict(uncond_ids=[u.ids], uncond_positions=[u.positions], uncond_plan=up, temperature=0)
    same = generate(model, [s.ids], [s.positions], p, guidance_scale=1.0, **kw)
    assert torch.equal(cond, same)
    # the mixing itself: scale 1 returns the conditional logits of a batched [cond; uncond] forward
    c, un = torch.randn(3, 11), torch.randn(3, 11)
    torch.testing.assert_close(cfg_mix(c, un, 1.0), c)
    torch.testing.assert_close(cfg_mix(c, un, 0.0), un)
    torch.testing.assert_close(cfg_mix(c, un, 3.0), un + 3 * (c - un))
    strong = generate(model, [s.ids], [s.positions], p, guidance_scale=8.0, **kw)
    b = p.bounds()
    assert bool(((strong[0] >= b[:, 0]) & (strong[0] < b[:, 1])).all())
    assert not torch.equal(strong, cond)


def test_cfg_schedule_per_output_index(model, vocab):
    """A schedule of scales: a constant one equals the scalar; scale 1 on a prefix of the outputs
    draws that prefix exactly as without guidance (same generator), and the guided rest differs."""
    s, p = prompt(vocab, grid=(2, 3, 3))
    u, up = prompt(vocab, text=None, grid=(2, 3, 3))
    kw = dict(uncond_ids=[u.ids], uncond_positions=[u.positions], uncond_plan=up, temperature=1.0)
    N = p.length

    def run(scale, guided=True):
        g = torch.Generator().manual_seed(0)
        return generate(model, [s.ids], [s.positions], p, guidance_scale=scale, generator=g,
                        **(kw if guided else dict(temperature=1.0)))

    assert torch.equal(run(torch.full((N,), 8.0)), run(8.0))
    cond = run(1.0, guided=False)
    cut = 1 + 9  # <bov> and the first latent
    mixed = run(torch.cat([torch.ones(cut), torch.full((N - cut,), 100.0)]))
    assert torch.equal(mixed[:, :cut], cond[:, :cut])
    assert not torch.equal(mixed[:, cut:], cond[:, cut:])
    with pytest.raises(ValueError, match="scales for a plan"):
        generate(model, [s.ids], [s.positions], p, guidance_scale=torch.ones(N + 1) * 2, **kw)


def test_cfg_batched_matches_separate_forwards(model, vocab):
    """Guided greedy decode == argmax of mix(cond forward, uncond forward) computed separately."""
    s, p = prompt(vocab, grid=(1, 1, 2))
    u, up = prompt(vocab, text=None, grid=(1, 1, 2))
    out = generate(model, [s.ids], [s.positions], p, uncond_ids=[u.ids], uncond_positions=[u.positions],
                   uncond_plan=up, guidance_scale=2.5, temperature=0)
    ci, cp, ui, upos = s.ids, s.positions, u.ids, u.positions
    b = p.bounds()
    for i in range(p.length):
        lc = model(ci[None], cp[None], prefix_len=torch.tensor([s.prefix_len])).logits[0, -1]
        lu = model(ui[None], upos[None], prefix_len=torch.tensor([u.prefix_len])).logits[0, -1]
        mixed = cfg_mix(constrain(lc[None], int(b[i, 0]), int(b[i, 1])), constrain(lu[None], int(b[i, 0]), int(b[i, 1])), 2.5)
        tok = int(out[0, i])
        assert int(mixed.argmax()) == tok or int(b[i, 1] - b[i, 0]) == 1
        ci, cp = torch.cat([ci, out[0, i:i + 1]]), torch.cat([cp, p.positions[i:i + 1]])
        ui, upos = torch.cat([ui, out[0, i:i + 1]]), torch.cat([upos, up.positions[i:i + 1]])


def test_contrast_branch_matches_separate_forwards(model, vocab):
    """Greedy decode with guidance and a contrast prompt == argmax of contrast_mix(cfg_mix(cond, uncond),
    cond, contrast) from three separate forwards; the contrast's scale can differ per output index."""
    s, p = prompt(vocab, grid=(1, 1, 3))
    u, up = prompt(vocab, text=None, grid=(1, 1, 3))
    c, cpl = prompt(vocab, text=(3, 9, 5, 7), grid=(1, 1, 3))
    m = torch.tensor([0.0, 0.0, 4.0, 4.0] + [4.0] * (p.length - 4))
    out = generate(model, [s.ids], [s.positions], p, uncond_ids=[u.ids], uncond_positions=[u.positions],
                   uncond_plan=up, guidance_scale=2.0, contrast_ids=[c.ids], contrast_positions=[c.positions],
                   contrast_plan=cpl, contrast_scale=m, temperature=0)
    rows = [(s.ids, s.positions, s.prefix_len, p), (u.ids, u.positions, u.prefix_len, up),
            (c.ids, c.positions, c.prefix_len, cpl)]
    b = p.bounds()
    for i in range(p.length):
        lc, lu, ln = (constrain(model(ids[None], pos[None], prefix_len=torch.tensor([pl])).logits[0, -1:],
                                int(b[i, 0]), int(b[i, 1])) for ids, pos, pl, _ in rows)
        mixed = contrast_mix(cfg_mix(lc, lu, 2.0), lc, ln, float(m[i]))
        assert int(mixed.argmax()) == int(out[0, i]) or int(b[i, 1] - b[i, 0]) == 1
        rows = [(torch.cat([ids, out[0, i:i + 1]]), torch.cat([pos, pl_.positions[i:i + 1]]), pl, pl_)
                for ids, pos, pl, pl_ in rows]


def test_two_contrast_branches_sum_their_terms(model, vocab):
    """contrasts=: each branch adds its own term with its own scale (four row blocks in one forward);
    greedy == argmax of both contrast_mix terms over cfg_mix from four separate forwards, and a branch
    whose scale is 0 everywhere is the same as leaving it out."""
    s, p = prompt(vocab, grid=(1, 1, 3))
    u, up = prompt(vocab, text=None, grid=(1, 1, 3))
    c1, cp1 = prompt(vocab, text=(3, 9, 5, 7), grid=(1, 1, 3))
    c2, cp2 = prompt(vocab, text=(6, 4), grid=(1, 1, 3))
    m1, m2 = 4.0, torch.tensor([0.0, 40.0] + [40.0] * (p.length - 2))
    base = dict(uncond_ids=[u.ids], uncond_positions=[u.positions], uncond_plan=up, guidance_scale=2.0, temperature=0)
    out = generate(model, [s.ids], [s.positions], p, contrast_ids=[c1.ids], contrast_positions=[c1.positions],
                   contrast_plan=cp1, contrast_scale=m1,
                   contrasts=[Contrast([c2.ids], [c2.positions], cp2, scale=m2)], **base)
    rows = [(s.ids, s.positions, s.prefix_len, p), (u.ids, u.positions, u.prefix_len, up),
            (c1.ids, c1.positions, c1.prefix_len, cp1), (c2.ids, c2.positions, c2.prefix_len, cp2)]
    b = p.bounds()
    for i in range(p.length):
        lc, lu, l1, l2 = (constrain(model(ids[None], pos[None], prefix_len=torch.tensor([pl])).logits[0, -1:],
                                    int(b[i, 0]), int(b[i, 1])) for ids, pos, pl, _ in rows)
        mixed = contrast_mix(contrast_mix(cfg_mix(lc, lu, 2.0), lc, l1, m1), lc, l2, float(m2[i]))
        assert int(mixed.argmax()) == int(out[0, i]) or int(b[i, 1] - b[i, 0]) == 1
        rows = [(torch.cat([ids, out[0, i:i + 1]]), torch.cat([pos, pl_.positions[i:i + 1]]), pl, pl_)
                for ids, pos, pl, pl_ in rows]
    one = generate(model, [s.ids], [s.positions], p, contrasts=[Contrast([c1.ids], [c1.positions], cp1, scale=m1)],
                   **base)
    idle = Contrast([c2.ids], [c2.positions], cp2, scale=0.0)
    assert torch.equal(generate(model, [s.ids], [s.positions], p, contrasts=[Contrast([c1.ids], [c1.positions], cp1,
                                                                                    scale=m1), idle], **base), one)
    assert not torch.equal(one, out)


def test_contrast_scale_zero_or_same_prompt_changes_nothing(model, vocab):
    s, p = prompt(vocab, grid=(2, 2, 2))
    u, up = prompt(vocab, text=None, grid=(2, 2, 2))
    c, cpl = prompt(vocab, text=(3, 9, 5, 7), grid=(2, 2, 2))
    kw = dict(uncond_ids=[u.ids], uncond_positions=[u.positions], uncond_plan=up, guidance_scale=3.0, temperature=1.0)

    def run(**extra):
        return generate(model, [s.ids], [s.positions], p, generator=torch.Generator().manual_seed(1), **kw, **extra)

    plain = run()
    assert torch.equal(run(contrast_ids=[c.ids], contrast_positions=[c.positions], contrast_plan=cpl), plain)  # scale 0
    same = dict(contrast_ids=[s.ids], contrast_positions=[s.positions], contrast_plan=p)
    assert torch.equal(run(contrast_scale=5.0, **same), plain)  # contrast == caption: the term is 0
    far = run(contrast_ids=[c.ids], contrast_positions=[c.positions], contrast_plan=cpl, contrast_scale=50.0)
    assert not torch.equal(far, plain)
    with pytest.raises(ValueError, match="scales for a plan"):
        run(contrast_scale=torch.ones(p.length + 1), **same)


def test_contrast_mix_keeps_masks_and_adds_the_term():
    cond = torch.tensor([[0.0, 1.0, float("-inf"), 2.0]])
    neg = torch.tensor([[1.0, 1.0, 0.0, float("-inf")]])
    mixed = torch.tensor([[0.5, 2.0, float("-inf"), 3.0]])
    out = contrast_mix(mixed, cond, neg, 2.0)
    assert torch.equal(out, torch.tensor([[-1.5, 2.0, float("-inf"), float("-inf")]]))
    assert contrast_mix(mixed, cond, neg, 0.0) is mixed
    assert not torch.isnan(out).any()


def test_sliding_window_cache_keeps_memory_bounded(model, vocab):
    s, p = prompt(vocab, grid=(3, 2, 3))
    full = generate(model, [s.ids], [s.positions], p, temperature=0)
    small = generate(model, [s.ids], [s.positions], p, temperature=0, max_cache_len=len(s) + 6)
    b = p.bounds()
    assert bool(((small[0] >= b[:, 0]) & (small[0] < b[:, 1])).all())
    n_free = int((b[:, 1] - b[:, 0] > 1).sum())
    assert torch.equal(small[0, :6], full[0, :6])  # identical until the window starts sliding
    assert n_free > 6


def test_free_tokens_and_bad_input(model, vocab):
    ids = torch.randint(0, vocab.size, (2, 5))
    out = generate(model, ids, None, 4, temperature=0.8, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4)
    with pytest.raises(ValueError, match="must lie in"):
        generate(model, torch.tensor([[vocab.size]]), None, 2)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, [torch.tensor([], dtype=torch.long)], None, 2)


def test_sampling_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    assert torch.isinf(top_k_filter(logits, 2)[0, :3]).all() and torch.isfinite(top_k_filter(logits, 2)[0, 3:]).all()
    kept = torch.isfinite(top_p_filter(logits, 0.5))[0]
    assert kept.tolist() == [False, False, False, False, True]  # p(4) = 0.64 already reaches 0.5
    assert torch.isfinite(top_p_filter(logits, 0.7))[0].tolist() == [False, False, False, True, True]
    draws = torch.stack([sample(logits, temperature=1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) <= {3, 4}
    assert sample(logits, temperature=0).item() == 4
    c = constrain(logits.repeat(2, 1), torch.tensor([0, 2]), torch.tensor([2, 3]))
    assert sample(c, temperature=0).tolist() == [1, 2]
    with pytest.raises(ValueError):
        constrain(logits, 3, 3)


def test_cfg_plausibility_drops_ids_the_conditional_branch_finds_unlikely(model, vocab):
    cond = torch.tensor([[0.0, -8.0, -1.0]])
    uncond = torch.tensor([[0.0, -20.0, -1.0]])
    assert int(cfg_mix(cond, uncond, 3.0).argmax()) == 1  # guidance alone picks the implausible id
    kept = cfg_mix(cond, uncond, 3.0, plausibility=0.1)
    assert torch.isneginf(kept[0, 1]) and int(kept.argmax()) == 0 and torch.isfinite(kept[0, [0, 2]]).all()
    assert torch.equal(cfg_mix(cond, uncond, 1.0, plausibility=0.1), cond)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            cfg_mix(cond, uncond, 3.0, plausibility=bad)
    # near 1 only the conditional branch's best id survives: guided greedy == conditional greedy
    s, p = prompt(vocab)
    u, up = prompt(vocab, text=None)
    kw = dict(uncond_ids=[u.ids], uncond_positions=[u.positions], uncond_plan=up, temperature=0)
    cond_ids = generate(model, [s.ids], [s.positions], p, temperature=0)
    assert torch.equal(generate(model, [s.ids], [s.positions], p, guidance_scale=8.0, guidance_plausibility=0.999, **kw),
                       cond_ids)
    # one value per output index: the same constant schedule gives the same ids; a wrong length is refused
    sched = torch.full((p.length,), 0.999)
    assert torch.equal(generate(model, [s.ids], [s.positions], p, guidance_scale=8.0, guidance_plausibility=sched, **kw),
                       cond_ids)
    with pytest.raises(ValueError, match="guidance_plausibility has"):
        generate(model, [s.ids], [s.positions], p, guidance_scale=8.0, guidance_plausibility=sched[:-1], **kw)
