"""kinema.lm.grow: a deepened LM computes what the trained LM computed, then its new blocks learn."""
import pytest
import torch

from kinema.errors import ConfigError
from kinema.lm.grow import deepen, growth_plan
from kinema.lm.model import KinemaLM, LMConfig


def _trained_like(n_layers=2, seed=0):
    torch.manual_seed(seed)
    m = KinemaLM(LMConfig.preset("tiny", vocab_size=97, n_layers=n_layers))
    with torch.no_grad():  # move off the init so every block does something distinct
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_growth_plan_spreads_new_blocks():
    assert growth_plan(3, 6) == [0, None, 1, None, 2, None]
    assert growth_plan(2, 5) == [0, None, None, 1, None]
    assert growth_plan(3, 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="deepen"):
        growth_plan(3, 2)


def test_deepened_lm_gives_the_same_logits_and_samples():
    m = _trained_like()
    d = deepen(m, 4).eval()
    assert d.cfg.n_layers == 4 and len(d.blocks) == 4
    assert sum(p.numel() for p in d.parameters()) > sum(p.numel() for p in m.parameters())
    ids = torch.randint(0, 97, (2, 12))
    pos = None
    with torch.no_grad():
        a = m(ids, pos, prefix_len=torch.tensor([4, 6])).logits
        b = d(ids, pos, prefix_len=torch.tensor([4, 6])).logits
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        # the KV-cache path (generation) too
        ca, cb = m.new_cache(2, 16), d.new_cache(2, 16)
        la, lb = m.prefill(ids[:, :8], None, ca), d.prefill(ids[:, :8], None, cb)
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-5)
        sa, sb = m.decode_step(ids[:, 8:10], None, ca), d.decode_step(ids[:, 8:10], None, cb)
        torch.testing.assert_close(sb, sa, rtol=0, atol=1e-5)
    # the input model is untouched
    assert m.cfg.n_layers == 2 and len(m.blocks) == 2


def test_new_blocks_learn():
    d = deepen(_trained_like(), 3).train()
    new = d.blocks[1]  # growth_plan(2, 3) == [0, None, 1]
    assert new.attn.out.weight.abs().max() == 0 and new.mlp.down.weight.abs().max() == 0
    opt = torch.optim.AdamW(d.parameters(), lr=1e-2)
    ids = torch.randint(0, 97, (4, 16))
    before = {k: v.clone() for k, v in new.state_dict().items()}
    losses = []
    for _ in range(4):
        out = d(ids, None, loss_mask=torch.ones_like(ids, dtype=torch.bool))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    moved = [k for k, v in new.state_dict().items() if not torch.equal(v, before[k])]
    assert {"attn.out.weight", "mlp.down.weight", "mlp.gate_up.weight"} <= set(moved), moved
