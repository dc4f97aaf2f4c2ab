"""kinema.decode.dit_grow: a deepened DiT predicts what the trained DiT predicted, then its new blocks learn."""
import pytest
import torch

from kinema.decode.dit_generator import DiTGenerator, DiTGeneratorConfig
from kinema.decode.dit_grow import deepen_dit
from kinema.errors import ConfigError


def _trained_like(depth=2, seed=0):
    torch.manual_seed(seed)
    m = DiTGenerator(DiTGeneratorConfig.preset("tiny", latent_channels=4, text_vocab=50, depth=depth,
                                               patch=(1, 2, 2), latent_mean=[0.1, -0.2, 0.0, 0.3],
                                               latent_std=[1.0, 2.0, 0.5, 1.5]))
    with torch.no_grad():  # off the adaLN-zero init, so every block (gates included) does something
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def test_deepened_dit_gives_the_same_velocities_and_samples():
    m = _trained_like()
    d = deepen_dit(m, 4).eval()
    assert d.cfg.depth == 4 and len(d.net.blocks) == 4 and m.cfg.depth == 2 and len(m.net.blocks) == 2
    assert d.cfg.latent_mean == m.cfg.latent_mean and torch.equal(d.std, m.std)
    z = torch.randn(2, 4, 3, 4, 4)
    with torch.no_grad():
        for frames in (0, 1):  # with and without given leading latents
            a = m.loss(z, [[3, 4, 5], [6]], torch.Generator().manual_seed(1), context_frames=frames)
            b = d.loss(z, [[3, 4, 5], [6]], torch.Generator().manual_seed(1), context_frames=frames)
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
            assert float(a) > 0
        kw = dict(num_latent_frames=2, grid=(4, 4), steps=3, guidance_scale=2.0, snap=False)
        sa = m.generate([[3, 4]], generator=torch.Generator().manual_seed(5), **kw)
        sb = d.generate([[3, 4]], generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(sb, sa, rtol=0, atol=1e-5)


def test_new_blocks_copy_the_block_below_and_learn():
    m = _trained_like()
    d = deepen_dit(m, 3).train()  # growth_plan(2, 3) == [0, None, 1]
    new, below = d.net.blocks[1], m.net.blocks[0]
    for layer in (new.proj, new.mlp[2]):
        assert layer.weight.abs().max() == 0 and layer.bias.abs().max() == 0
    torch.testing.assert_close(new.qkv.weight, below.qkv.weight, rtol=0, atol=0)
    torch.testing.assert_close(new.ada[1].weight, below.ada[1].weight, rtol=0, atol=0)
    before = {k: v.clone() for k, v in new.state_dict().items()}
    opt = torch.optim.AdamW(d.parameters(), lr=1e-2)
    z = torch.randn(4, 4, 3, 4, 4)
    for i in range(3):
        loss = d.loss(z, [[3], [4], [5], [6]], torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = new.state_dict()
    assert after["proj.weight"].abs().max() > 0 and after["mlp.2.weight"].abs().max() > 0
    assert not torch.equal(after["qkv.weight"], before["qkv.weight"])


def test_a_dit_cannot_be_made_shallower():
    with pytest.raises(ConfigError, match="deepen"):
        deepen_dit(_trained_like(depth=3), 2)

