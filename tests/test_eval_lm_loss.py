"""scripts/eval_lm_loss.py: per-task held-out loss of saved LMs on token shards."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import load_script

ev = load_script("eval_lm_loss")


def _untrained_lm_and_shards(tmp_path, clips: int):
    """An untrained tiny LM saved to tmp_path/lm and ``clips`` synthetic samples (3 latent frames of
    4x4) in tmp_path/shards, with their vocabulary."""
    from kinema.lm.model import KinemaLM, LMConfig
    from kinema.lm.vocab import Vocab

    vocab = Vocab(64, 256, 32, 2)
    load_script("train_lm").write_synthetic_shards(tmp_path / "shards", vocab, clips, (3, 4, 4), seed=0)
    torch.manual_seed(0)
    lm = KinemaLM(LMConfig.preset("tiny", vocab_size=vocab.size, vocab=vocab.to_dict())).eval()
    lm.save_pretrained(tmp_path / "lm")
    return lm, vocab


def test_per_task_loss_of_saved_lms(tmp_path, capsys):
    _, vocab = _untrained_lm_and_shards(tmp_path, 6)
    assert ev.main([str(tmp_path / "lm"), "--shards", str(tmp_path / "shards"), "--clips", "4",
                    "--tasks", "t2v", "v2a", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = res["loss"][str(tmp_path / "lm")]
    assert res["clips"] == 4
    for task in ("t2v", "v2a"):  # an untrained LM: about uniform over the vocabulary
        assert 0 < row[task] < math.log(vocab.size) + 1


def test_by_frame_losses_add_up_to_the_video_loss(tmp_path):
    """The t2v loss of each latent frame, averaged, is the t2v loss of the clip's video tokens."""
    from kinema.lm.shards import TokenShards

    lm, vocab = _untrained_lm_and_shards(tmp_path, 4)
    shards = TokenShards(tmp_path / "shards")
    frames = ev.t2v_frame_losses(lm, shards, vocab, clips=4)
    assert len(frames) == 3 and all(0 < f < math.log(vocab.size) + 1 for f in frames)
    # every frame has h * w codes, so the plain mean is the loss of all video tokens; the fused-loss
    # path of task_loss (which also scores the few end-of-segment tokens) must agree with it
    whole = ev.task_loss(lm, shards, vocab, "t2v", 4)
    assert abs(sum(frames) / len(frames) - whole) < 0.1, (frames, whole)


def test_caption_gain_is_uncaptioned_minus_captioned_loss_per_frame(tmp_path, capsys):
    from kinema.lm.model import KinemaLM
    from kinema.lm.shards import TokenShards

    _, vocab = _untrained_lm_and_shards(tmp_path, 4)
    assert ev.main([str(tmp_path / "lm"), "--shards", str(tmp_path / "shards"), "--clips", "4",
                    "--tasks", "t2v", "--threads", "1", "--caption-gain"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"][str(tmp_path / "lm")]
    lm = KinemaLM.from_pretrained(tmp_path / "lm").float().eval()  # as the script loads it
    shards = TokenShards(tmp_path / "shards")
    cond = ev.t2v_frame_losses(lm, shards, vocab, clips=4)
    uncond = ev.t2v_frame_losses(lm, shards, vocab, clips=4, drop_text=True)
    assert row["t2v_by_frame"] == pytest.approx(cond, abs=1e-4) and len(row["caption_gain_by_frame"]) == 3
    assert row["caption_gain_by_frame"] == pytest.approx([u - c for u, c in zip(uncond, cond)], abs=1e-4)
    assert uncond != cond  # the uncaptioned layout really leaves the caption out (an untrained LM still reads it)
    assert set(row["caption_gain_changed"]) == {"changed", "unchanged"}
    assert 0 < row["t2v_changed"]["changed_share"] <= 1


def test_changed_losses_split_frames_after_the_first_by_whether_the_code_moved():
    ids = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 4], [1, 9, 8, 7]])  # frame 1: 1 change; frame 2: 2 changes
    ce = torch.tensor([[9.0, 9, 9, 9], [1, 5, 1, 1], [2, 2, 6, 4]])  # frame 0 never counts
    got = ev.changed_losses([(ce, ids)])
    assert got["changed"] == pytest.approx((5 + 6 + 4) / 3)
    assert got["unchanged"] == pytest.approx((1 + 1 + 1 + 2 + 2) / 5)
    assert got["changed_share"] == pytest.approx(3 / 8)
    assert ev.frame_losses([(ce, ids)]) == pytest.approx([9.0, 2.0, 3.5])


def test_copy_rate_compares_the_lms_stay_put_probability_with_the_clips(tmp_path):
    """``data`` counts repeats of the previous latent frame's id; ``model`` is the LM's probability of
    that repeat, read from its own softmax (checked against a direct computation for one clip)."""
    from kinema.lm.shards import TokenShards

    ids = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 4], [1, 9, 8, 7]])
    p = torch.tensor([[0.5, 0.1, 0.5, 0.5], [0.9, 0.8, 0.2, 0.2]])
    got = ev.copy_rates([(torch.zeros(3, 4), ids, p)])
    assert got["data"] == pytest.approx(5 / 8) and got["model"] == pytest.approx(3.7 / 8)

    lm, vocab = _untrained_lm_and_shards(tmp_path, 2)
    shards = TokenShards(tmp_path / "shards")
    (ce, tok, p_copy), _ = ev.t2v_token_losses(lm, shards, vocab, clips=2)
    assert p_copy.shape == (tok.shape[0] - 1, tok.shape[1]) and bool(((p_copy > 0) & (p_copy < 1)).all())
    # p_copy[f - 1, j] is the LM's softmax, at the position predicting token j of frame f, read at
    # the id token j of frame f - 1 had: checked directly on the first clip's text-to-video layout
    from kinema.lm.token_data import TokenShardDataset

    seq = TokenShardDataset(shards, vocab, tasks={"t2v": 1.0}, drop_text_prob=0.0, max_text_tokens=48)[0]
    with torch.no_grad():
        logits = lm.float()(seq.ids[None], seq.positions[None], prefix_len=torch.tensor([seq.prefix_len])).logits[0, :-1]
    lo, hi = vocab.video_range
    rows = torch.nonzero(seq.loss_mask[1:] & (seq.ids[1:] >= lo) & (seq.ids[1:] < hi)).squeeze(1)
    per_frame = tok.shape[1]
    for f, j in [(1, 0), (2, per_frame - 1)]:
        want = torch.softmax(logits[rows[f * per_frame + j]].float(), -1)[tok[f - 1, j]]
        assert float(p_copy[f - 1, j]) == pytest.approx(float(want), rel=2e-2)
    rates = ev.copy_rates([(ce, tok, p_copy)])
    assert 0 < rates["model"] < 1 and 0 <= rates["data"] <= 1


def test_motion_gain_is_the_still_captions_loss_minus_the_captions(tmp_path, monkeypatch):
    """``text_map`` rescoring with the caption's own ids reproduces the plain scores; motion_gain is
    the loss with the still caption minus the loss with the caption, over the clips that move."""
    from kinema.lm.shards import TokenShards
    import kinema.tokenizers.text as text_mod

    lm, vocab = _untrained_lm_and_shards(tmp_path, 3)
    shards = TokenShards(tmp_path / "shards")
    plain = ev.t2v_token_losses(lm, shards, vocab, clips=3)
    same = ev.t2v_token_losses(lm, shards, vocab, clips=[0, 1, 2], text_map=lambda ids: list(ids))
    assert all(torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, same))

    words = ["a", "red", "circle", "sliding", "left", "standing", "still"]

    class WordTokenizer:  # a word-level stand-in for the sentencepiece model, in the LM's text range
        vocab_size = vocab.text_size

        @staticmethod
        def from_pretrained(_):
            return WordTokenizer()

        def decode(self, ids):  # clip 1's caption names no motion, the others slide
            return "a red circle standing still" if list(ids) == list(shards.text(1)) else "a red circle sliding left"

        def encode(self, text):
            return [words.index(w) for w in text.split()]

    monkeypatch.setattr(text_mod, "TextTokenizer", WordTokenizer)
    got = ev.motion_gain(lm, shards, vocab, 3, plain)
    assert got["clips"] == 2
    still = ev.t2v_token_losses(lm, shards, vocab, clips=[0, 2], text_map=lambda ids: [0, 1, 2, 5, 6])
    want = [a - b for a, b in zip(ev.frame_losses(still), ev.frame_losses([plain[0], plain[2]]))]
    assert got["by_frame"] == pytest.approx(want)
    s, c = ev.changed_losses(still), ev.changed_losses([plain[0], plain[2]])
    assert got["changed"] == pytest.approx(s["changed"] - c["changed"])
    assert any(abs(v) > 1e-4 for v in got["by_frame"])  # the LM reads its text: another caption scores otherwise
