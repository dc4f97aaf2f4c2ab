"""KinemaLM invariants: KV cache == full forward, prefix-LM visibility, padding, RoPE, save/load, learning."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kinema.errors import CheckpointError, ConfigError, ResourceError
from kinema.lm.model import KinemaLM, LMConfig
from kinema.lm.rope import apply_rope, axis_of_pairs, rope_frequencies, rope_tables

V = 97


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny(**kw) -> KinemaLM:
    torch.manual_seed(0)
    return KinemaLM(LMConfig.preset("tiny", vocab_size=V, **kw)).eval()


def video_positions(B: int, L: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 20, (B, L, 3), generator=g)


def test_kv_cache_decode_equals_full_forward():
    m = tiny()
    B, L, P = 2, 24, 9
    ids = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(0))
    pos = video_positions(B, L)
    full = m(ids, pos, prefix_len=torch.tensor([P, P])).logits  # (B, L, V)
    cache = m.new_cache(B, L)
    pre = m.prefill(ids[:, :P], pos[:, :P], cache, last_only=False)
    torch.testing.assert_close(pre, full[:, :P], atol=1e-4, rtol=1e-4)
    steps = [m.decode_step(ids[:, t:t + 1], pos[:, t:t + 1], cache) for t in range(P, 15)]
    steps.append(m.decode_step(ids[:, 15:], pos[:, 15:], cache))  # several tokens in one call
    torch.testing.assert_close(torch.cat(steps, 1), full[:, P:], atol=1e-4, rtol=1e-4)
    assert cache.length == L


def test_prefix_bidirectional_outputs_causal():
    m = tiny()
    L, P = 16, 6
    ids = torch.randint(0, V, (1, L), generator=torch.Generator().manual_seed(2))
    base = m(ids, prefix_len=torch.tensor([P])).logits
    # change the last prefix token: earlier prefix positions must change (bidirectional)
    a = ids.clone()
    a[0, P - 1] = (a[0, P - 1] + 1) % V
    out_a = m(a, prefix_len=torch.tensor([P])).logits
    assert (out_a[0, 0] - base[0, 0]).abs().max() > 1e-4
    # change a future output token t: nothing before t may change
    for t in (P + 2, L - 1):
        b = ids.clone()
        b[0, t] = (b[0, t] + 1) % V
        out_b = m(b, prefix_len=torch.tensor([P])).logits
        torch.testing.assert_close(out_b[0, :t], base[0, :t], atol=1e-5, rtol=0)
        assert (out_b[0, t:] - base[0, t:]).abs().max() > 1e-4


def test_padding_does_not_leak_and_per_sample_prefix():
    m = tiny()
    L = 12
    ids = torch.randint(1, V, (1, L), generator=torch.Generator().manual_seed(3))
    alone = m(ids, prefix_len=torch.tensor([4])).logits
    padded = torch.cat([ids, torch.randint(0, V, (1, 5))], 1)  # right padding with junk
    valid = torch.ones(1, L + 5, dtype=torch.bool)
    valid[0, L:] = False
    both = torch.cat([padded, torch.randint(0, V, (1, L + 5))])
    vmask = torch.cat([valid, torch.ones(1, L + 5, dtype=torch.bool)])
    out = m(both, prefix_len=torch.tensor([4, 10]), attention_mask=vmask).logits
    torch.testing.assert_close(out[0, :L], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_left_padded_prefill_matches_unpadded():
    m = tiny()
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(4))
    c1 = m.new_cache(1, 12)
    ref = m.prefill(ids, None, c1)
    ref2 = m.decode_step(torch.tensor([[5]]), torch.full((1, 1, 3), 10), c1)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    pos = torch.cat([torch.zeros(1, 3, 3, dtype=torch.long), torch.arange(10).view(1, 10, 1).expand(1, 10, 3)], 1)
    valid = torch.cat([torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 10, dtype=torch.bool)], 1)
    c2 = m.new_cache(1, 15)
    out = m.prefill(padded, pos, c2, attention_mask=valid)
    out2 = m.decode_step(torch.tensor([[5]]), torch.full((1, 1, 3), 10), c2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2, ref2, atol=1e-5, rtol=1e-5)


def test_rope_text_positions_equal_1d_rope_and_relative():
    hd = 16
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    axes = axis_of_pairs(hd)
    assert set(axes.tolist()) == {0, 1, 2}
    p = torch.arange(7).view(1, 7)
    cos3, sin3 = rope_tables(p.unsqueeze(-1).expand(1, 7, 3), inv, axes, torch.float32)
    ang = p.float().view(1, 1, 7, 1) * inv  # ordinary 1-D RoPE
    ang = torch.cat([ang, ang], -1)
    torch.testing.assert_close(cos3, ang.cos())
    torch.testing.assert_close(sin3, ang.sin())
    # dot products depend only on position differences, per axis
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(pq, pk):
        cq, sq = rope_tables(torch.tensor([[pq]]), inv, axes, torch.float32)
        ck, sk = rope_tables(torch.tensor([[pk]]), inv, axes, torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score([5, 2, 3], [1, 1, 1]), score([9, 4, 7], [5, 3, 5]), atol=1e-4, rtol=1e-4)
    assert (score([5, 2, 3], [1, 1, 1]) - score([5, 3, 3], [1, 1, 1])).abs() > 1e-4


def test_rope_grid_spectrum_singles_out_nearby_cells():
    hd = 32
    axes = axis_of_pairs(hd)
    shared, grid = rope_frequencies(hd), rope_frequencies(hd, spatial="grid")
    torch.testing.assert_close(shared, 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd)))
    torch.testing.assert_close(grid[axes == 0], shared[axes == 0])  # time (and text positions) untouched
    for axis in (1, 2):
        torch.testing.assert_close(grid[axes == axis], math.pi / 2.0 ** torch.arange(1, 5).float())
    # still relative: the score depends on position differences only
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(inv, pq, pk, qv=q, kv=k):
        cq, sq = rope_tables(torch.tensor([[pq]]), inv, axes, torch.float32)
        ck, sk = rope_tables(torch.tensor([[pk]]), inv, axes, torch.float32)
        return float((apply_rope(qv, cq, sq) * apply_rope(kv, ck, sk)).sum())

    assert abs(score(grid, [5, 2, 3], [1, 1, 1]) - score(grid, [9, 4, 7], [5, 3, 5])) < 1e-4
    # a query matching its key on the width pairs only: how much does one cell of offset cost?
    w_only = (axes == 2).repeat(2).float().view(1, 1, 1, hd)
    for inv, most in ((shared, None), (grid, 0.7)):
        at = [score(inv, [4, 3, 3], [3, 3, 3 + d], w_only, w_only) for d in range(16)]
        if most is None:
            assert max(at[1:]) > 0.95 * at[0]  # the shared table barely tells neighbouring cells apart
        else:
            assert max(at[1:]) < most * at[0]
    with pytest.raises(ValueError, match="spatial"):
        rope_frequencies(hd, spatial="radial")


def test_rope_spatial_config_is_checked_and_defaults_to_shared(tmp_path):
    with pytest.raises(ConfigError, match="rope_spatial"):
        LMConfig(vocab_size=V, rope_spatial="radial")
    m = KinemaLM(LMConfig(vocab_size=V, rope_spatial="grid"))
    m.save_pretrained(tmp_path / "lm")
    again = KinemaLM.from_pretrained(tmp_path / "lm")
    assert again.cfg.rope_spatial == "grid"
    torch.testing.assert_close(again.inv_freq, m.inv_freq)
    cfg_file = tmp_path / "lm" / "config.json"  # a checkpoint written before the option existed
    d = json.loads(cfg_file.read_text())
    del d["config"]["rope_spatial"]
    cfg_file.write_text(json.dumps(d))
    assert KinemaLM.from_pretrained(tmp_path / "lm").cfg.rope_spatial == "shared"


def test_kv_cache_trim_and_overflow():
    m = tiny()
    ids = torch.randint(0, V, (1, 8))
    cache = m.new_cache(1, 9)
    m.prefill(ids, None, cache)
    m.decode_step(torch.tensor([[1]]), None, cache)
    with pytest.raises(ResourceError, match="KV cache full"):
        m.decode_step(torch.tensor([[2]]), None, cache)
    cache.trim(4, 3)
    assert cache.length == 7
    out = m.decode_step(torch.tensor([[2]]), torch.full((1, 1, 3), 9), cache)
    assert torch.isfinite(out).all()


def test_save_load_roundtrip_and_vocab_refusal(tmp_path):
    m = tiny(vocab={"size": V, "text_size": 10})
    m.save_pretrained(tmp_path / "lm")
    back = KinemaLM.from_pretrained(tmp_path / "lm", vocab_size=V)
    ids = torch.randint(0, V, (1, 10))
    torch.testing.assert_close(back(ids).logits, m(ids).logits)
    with pytest.raises(CheckpointError, match=f"{V}.*120|120.*{V}"):
        KinemaLM.from_pretrained(tmp_path / "lm", vocab_size=120)
    with pytest.raises(CheckpointError, match="size"):
        KinemaLM.from_pretrained(tmp_path / "lm", vocab={"size": V, "text_size": 11})


def test_bad_input_and_config():
    m = tiny()
    with pytest.raises(ValueError, match="must lie in"):
        m(torch.tensor([[0, V]]))
    with pytest.raises(ConfigError):
        LMConfig(dim=60, n_heads=8)
    with pytest.raises(ConfigError, match="unknown LM preset"):
        LMConfig.preset("huge")
    assert abs(LMConfig.preset("8B", vocab_size=128256, tie_embeddings=False).num_params() - 8.03e9) < 0.05e9


def test_untied_gqa_and_checkpointing_grads_match():
    torch.manual_seed(0)
    cfg = LMConfig.preset("tiny", vocab_size=V, tie_embeddings=False)
    a = KinemaLM(cfg).train()
    b = KinemaLM(LMConfig.preset("tiny", vocab_size=V, tie_embeddings=False, activation_checkpointing=True)).train()
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, V, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, :4] = False
    for model in (a, b):
        model(ids, prefix_len=torch.tensor([4, 4]), loss_mask=mask).loss.backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_tiny_lm_overfits_few_sequences():
    torch.manual_seed(0)
    m = KinemaLM(LMConfig.preset("tiny", vocab_size=V)).train()
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, V, (4, 24), generator=g)
    prefix = torch.tensor([6, 8, 4, 10])
    loss_mask = torch.arange(24).view(1, -1) >= prefix.view(-1, 1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = m(ids, prefix_len=prefix, loss_mask=loss_mask)
        first = first if first is not None else out.loss.item()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert first > 4.0  # ~ln(97) at init
    assert out.loss.item() < 0.3, out.loss.item()


def test_fused_loss_equals_plain_cross_entropy():
    from kinema.lm.loss import fused_linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    h0, w0 = torch.randn(300, 32, generator=g), torch.randn(50, 32, generator=g)
    t = torch.randint(0, 50, (300,), generator=g)
    grads = []
    for fn in (lambda h, w: torch.nn.functional.cross_entropy(h @ w.t(), t),
               lambda h, w: fused_linear_cross_entropy(h, w, t, chunk=64)):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss = fn(h, w)
        (3.0 * loss).backward()
        grads.append((loss.detach(), h.grad, w.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    m = tiny()  # the model's loss is the mean next-token CE over the masked targets
    ids = torch.randint(0, V, (2, 10), generator=g)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 4:] = True
    logits = m(ids).logits
    ref = torch.nn.functional.cross_entropy(logits[:, 3:9].reshape(-1, V), ids[:, 4:].reshape(-1))
    torch.testing.assert_close(m(ids, loss_mask=mask).loss, ref, atol=1e-5, rtol=1e-5)


def test_fused_loss_with_row_weights_is_the_weighted_mean():
    from kinema.lm.loss import fused_linear_cross_entropy

    g = torch.Generator().manual_seed(1)
    h0, w0 = torch.randn(200, 16, generator=g), torch.randn(30, 16, generator=g)
    t = torch.randint(0, 30, (200,), generator=g)
    rw = torch.where(torch.rand(200, generator=g) < 0.2, 4.0, 1.0)
    grads = []
    for fn in (lambda h, w: (torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="none") * rw).sum() / rw.sum(),
               lambda h, w: fused_linear_cross_entropy(h, w, t, chunk=48, row_weight=rw)):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss = fn(h, w)
        loss.backward()
        grads.append((loss.detach(), h.grad, w.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # ones give the plain mean; a weighted loss differs from it
    plain = fused_linear_cross_entropy(h0, w0, t)
    torch.testing.assert_close(fused_linear_cross_entropy(h0, w0, t, row_weight=torch.ones(200)), plain)
    assert not torch.allclose(grads[1][0], plain)
    for bad in (torch.ones(199), -torch.ones(200), torch.zeros(200)):
        with pytest.raises(ValueError, match="row_weight"):
            fused_linear_cross_entropy(h0, w0, t, row_weight=bad)
    # through the model: loss_weight (B, L) picks the same rows as the loss mask
    m = tiny()
    ids = torch.randint(0, V, (2, 10), generator=g)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 4:] = True
    lw = torch.ones(2, 10)
    lw[0, 6] = 5.0
    ce = torch.nn.functional.cross_entropy(m(ids).logits[:, 3:9].reshape(-1, V), ids[:, 4:].reshape(-1), reduction="none")
    wr = lw[:, 4:].reshape(-1)
    torch.testing.assert_close(m(ids, loss_mask=mask, loss_weight=lw).loss, (ce * wr).sum() / wr.sum(), atol=1e-5, rtol=1e-5)
