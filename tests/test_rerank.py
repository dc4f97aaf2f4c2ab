"""Best-of-K first frames: plan splitting, per-token scores, reranked decoding, the caption scorer."""
from __future__ import annotations

import pytest
import torch

from kinema.decode.caption_scorer import CaptionScorer, ScorerConfig
from kinema.decode.generate import Contrast, generate
from kinema.decode.rerank import decode_reranked_head, pmi
from kinema.errors import CheckpointError
from kinema.lm import layout
from kinema.pipeline import random_pipeline
from test_generate import _threads, model, vocab  # noqa: F401  (the same tiny LM and vocabulary fixtures)


def prompts(vocab, grid=(2, 2, 3)):
    seq = layout.build_prefix("t2v", vocab, text=torch.tensor([3, 4, 5]))
    useq = layout.build_prefix("t2v", vocab, text=None, drop_text=True)
    return (seq, layout.output_plan("t2v", vocab, video_grid=grid, start_pos=seq.next_pos),
            useq, layout.output_plan("t2v", vocab, video_grid=grid, start_pos=useq.next_pos))


def test_plan_split_keeps_bounds_and_positions(vocab):
    plan = layout.output_plan("t2va", vocab, video_grid=(2, 2, 3), audio_shape=(2, 5), start_pos=7)
    for n in (1, 5, 13, plan.length - 1):
        head, tail = plan.split(n)
        assert head.length == n and tail.length == plan.length - n
        assert torch.equal(torch.cat([head.bounds(), tail.bounds()]), plan.bounds())
        assert torch.equal(torch.cat([head.positions, tail.positions]), plan.positions)
    with pytest.raises(ValueError, match="split point"):
        plan.split(plan.length)


def test_returned_scores_are_the_log_probabilities_of_the_drawn_ids(model, vocab):
    seq, plan, useq, uplan = prompts(vocab, grid=(1, 2, 2))
    g = torch.Generator().manual_seed(3)
    out, sc = generate(model, [seq.ids], [seq.positions], plan, uncond_ids=[useq.ids],
                       uncond_positions=[useq.positions], uncond_plan=uplan, guidance_scale=3.0, generator=g,
                       return_scores=True)
    b = plan.bounds()
    for ids, pos, sp, key in ((seq.ids, seq.positions, plan, "cond"), (useq.ids, useq.positions, uplan, "uncond")):
        full = torch.cat([ids, out[0]])
        fpos = torch.cat([pos, sp.positions])
        with torch.no_grad():
            logits = model(full[None], fpos[None], prefix_len=torch.tensor([len(ids)])).logits[0]  # (L, V)
        for i in range(plan.length):
            lo, hi = int(b[i, 0]), int(b[i, 1])
            if hi == lo + 1:
                assert float(sc[key][0, i]) == 0.0  # forced tokens score nothing
                continue
            lp = logits[len(ids) + i - 1, lo:hi].float().log_softmax(-1)[int(out[0, i]) - lo]
            assert float(sc[key][0, i]) == pytest.approx(float(lp), abs=1e-4)


def test_one_candidate_reproduces_plain_decoding(model, vocab):
    seq, plan, useq, uplan = prompts(vocab)
    kw = dict(guidance_scale=2.0, temperature=1.0)
    plain = generate(model, [seq.ids], [seq.positions], plan, uncond_ids=[useq.ids], uncond_positions=[useq.positions],
                     uncond_plan=uplan, generator=torch.Generator().manual_seed(5), **kw)
    out, info = decode_reranked_head(model, seq.ids, seq.positions, plan, head_len=7, candidates=1,
                                     uncond_ids=useq.ids, uncond_positions=useq.positions, uncond_plan=uplan,
                                     generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(out, plain[0])
    assert info["chosen"] == 0


def test_one_candidate_with_a_contrast_branch_reproduces_plain_decoding(model, vocab):
    """The contrast branch is split at the head like the unconditional one: one candidate decodes the
    same ids as one plain guided call with both branches (contrast scale 0 on the head, 50 after it)."""
    seq, plan, useq, uplan = prompts(vocab)
    cseq = layout.build_prefix("t2v", vocab, text=torch.tensor([3, 8, 5]))
    cplan = layout.output_plan("t2v", vocab, video_grid=(2, 2, 3), start_pos=cseq.next_pos)
    m = torch.cat([torch.zeros(7), torch.full((plan.length - 7,), 50.0)])
    kw = dict(guidance_scale=2.0, temperature=1.0, contrast_scale=m)
    plain = generate(model, [seq.ids], [seq.positions], plan, uncond_ids=[useq.ids], uncond_positions=[useq.positions],
                     uncond_plan=uplan, contrast_ids=[cseq.ids], contrast_positions=[cseq.positions],
                     contrast_plan=cplan, generator=torch.Generator().manual_seed(5), **kw)
    out, _ = decode_reranked_head(model, seq.ids, seq.positions, plan, head_len=7, candidates=1,
                                  uncond_ids=useq.ids, uncond_positions=useq.positions, uncond_plan=uplan,
                                  contrast_ids=cseq.ids, contrast_positions=cseq.positions, contrast_plan=cplan,
                                  generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(out, plain[0])
    no_contrast = generate(model, [seq.ids], [seq.positions], plan, uncond_ids=[useq.ids],
                           uncond_positions=[useq.positions], uncond_plan=uplan,
                           generator=torch.Generator().manual_seed(5), guidance_scale=2.0, temperature=1.0)
    assert torch.equal(out[:7], no_contrast[0, :7]) and not torch.equal(out, no_contrast[0])
    # a second branch through contrasts= is split the same way
    dseq = layout.build_prefix("t2v", vocab, text=torch.tensor([6, 4]))
    dplan = layout.output_plan("t2v", vocab, video_grid=(2, 2, 3), start_pos=dseq.next_pos)
    both = dict(uncond_ids=[useq.ids], uncond_positions=[useq.positions], uncond_plan=uplan,
                contrast_ids=[cseq.ids], contrast_positions=[cseq.positions], contrast_plan=cplan)
    two = generate(model, [seq.ids], [seq.positions], plan, **both, generator=torch.Generator().manual_seed(5),
                   contrasts=[Contrast([dseq.ids], [dseq.positions], dplan, scale=m)], **kw)
    out2, _ = decode_reranked_head(model, seq.ids, seq.positions, plan, head_len=7, candidates=1,
                                   **{k: v[0] if isinstance(v, list) else v for k, v in both.items()},
                                   contrasts=[Contrast(dseq.ids, dseq.positions, dplan, scale=m)],
                                   generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(out2, two[0]) and not torch.equal(out2, out)


def test_the_best_ranked_head_is_kept_and_the_rest_follows_the_plan(model, vocab):
    seq, plan, useq, uplan = prompts(vocab)
    target = vocab.video_sub_ranges[0][0] + 9
    seen = {}

    def rank(heads, scores):  # prefer the head holding the code 9 most often
        seen["heads"], seen["pmi"] = heads.clone(), pmi(heads, scores)
        return (heads == target).sum(1).float() + torch.arange(len(heads)) * 1e-3

    out, info = decode_reranked_head(model, seq.ids, seq.positions, plan, head_len=7, candidates=6, rank=rank,
                                     uncond_ids=useq.ids, uncond_positions=useq.positions, uncond_plan=uplan,
                                     guidance_scale=3.0, temperature=1.5, generator=torch.Generator().manual_seed(0))
    heads = seen["heads"]
    assert heads.shape == (6, 7) and len(info["rank"]) == 6
    k = info["chosen"]
    assert k == int(((heads == target).sum(1).float() + torch.arange(6) * 1e-3).argmax())
    assert torch.equal(out[:7], heads[k])
    b = plan.bounds()
    assert out.shape == (plan.length,) and bool(((out >= b[:, 0]) & (out < b[:, 1])).all())
    assert seen["pmi"].shape == (6,) and bool(torch.isfinite(seen["pmi"]).all())
    with pytest.raises(ValueError, match="unconditional"):
        decode_reranked_head(model, seq.ids, seq.positions, plan, head_len=7, candidates=2)


def test_caption_scorer_round_trip_and_bad_input(tmp_path):
    torch.manual_seed(0)
    m = CaptionScorer(ScorerConfig(code_bits=6, text_vocab=40, width=32, dim=16)).eval()
    codes = torch.randint(0, 64, (3, 4, 4))
    s = m.score(codes, [1, 2, 3])
    assert s.shape == (3,) and bool((s.abs() <= 1.0 + 1e-5).all())
    m.save_pretrained(tmp_path / "sc")
    again = CaptionScorer.from_pretrained(tmp_path / "sc")
    assert torch.allclose(again.score(codes, [1, 2, 3]), s, atol=1e-6)
    with pytest.raises(ValueError, match="at least one text id"):
        m.score(codes, [])
    with pytest.raises(ValueError, match="text ids"):
        m.score(codes, [45])
    with pytest.raises(CheckpointError):
        CaptionScorer.from_pretrained(tmp_path / "missing")


def test_caption_scorer_learns_to_match_codes_to_text():
    """A few hundred steps on a toy task: the code grid holds the caption's 'colour' code somewhere."""
    torch.manual_seed(0)
    m = CaptionScorer(ScorerConfig(code_bits=4, text_vocab=8, width=32, dim=16, image_blocks=1, text_layers=1))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(150):
        word = torch.randint(0, 8, (32,))
        codes = torch.zeros(32, 6, 6, dtype=torch.long)
        codes[torch.arange(32), torch.randint(0, 6, (32,)), torch.randint(0, 6, (32,))] = word + 8
        logits = m(codes, [[int(w)] for w in word])
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    codes = torch.zeros(8, 6, 6, dtype=torch.long)
    codes[torch.arange(8), 2, 3] = torch.arange(8) + 8
    hits = sum(int(m.score(codes, [w]).argmax()) == w for w in range(8))
    assert hits >= 7


def test_pipeline_candidates_need_a_scorer_and_are_recorded():
    pipe = random_pipeline(seed=0)
    with pytest.raises(ValueError, match="caption_scorer"):
        pipe("a red circle", seconds=0.5, seed=0, candidates=3, with_audio=False)
    pipe.caption_scorer = CaptionScorer(ScorerConfig(code_bits=8, text_vocab=pipe.tt.vocab_size, width=32,
                                                     dim=16)).eval()
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        pipe("a red circle", seconds=0.5, seed=0, candidates=0, with_audio=False)
    out = pipe("a red circle", seconds=0.5, seed=0, candidates=3, with_audio=False)
    assert out.video.shape[0] == 4
    first = out.stats[0]
    assert first["candidates"] == 3 and len(first["candidate_scores"]) == 3
    assert first["chosen"] == max(range(3), key=lambda i: first["candidate_scores"][i])
    plain = pipe("a red circle", seconds=0.5, seed=0, candidates=1, with_audio=False)
    assert "candidates" not in plain.stats[0]
    pipe.config.rerank_latents = 99  # the whole first window is drawn K times (only <eov><eos> follow)
    out = pipe("a red circle", seconds=2.0, seed=0, candidates=2, with_audio=False)
    assert out.video.shape[0] == 16 and out.stats[0]["candidates"] == 2 and out.stats[1]["task"] == "continue"
