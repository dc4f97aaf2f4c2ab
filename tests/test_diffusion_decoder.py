"""Diffusion decoder head: shapes, bad input, determinism, save/load, and a tiny head that learns."""
import pytest
import torch
import torch.nn.functional as F

from kinema.data.synthetic import generate
from kinema.decode.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig


def _clip(seed=0, size=(16, 16), frames=5):
    c = generate(seed, size=size, fps=8.0, seconds=(frames + 1) / 8.0)
    fr = c.frames[: frames + 1].permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T+1, H, W)
    x = fr[:, 1:].unsqueeze(0)
    blurred = F.avg_pool3d(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"), (1, 3, 3), stride=1)
    return x, blurred, fr[:, 0].unsqueeze(0)


def _tiny(**kw):
    torch.manual_seed(0)
    return DiffusionDecoder(DiffusionDecoderConfig(dim=32, depth=2, heads=4, patch=(1, 4, 4), **kw))


def test_shapes_determinism_and_upsample():
    x, xd, prev = _clip()
    dd = _tiny().eval()
    a = dd.refine(None, xd, steps=2, generator=torch.Generator().manual_seed(1))
    b = dd.refine(None, xd, steps=2, generator=torch.Generator().manual_seed(1), prev_frame=None)
    assert a.shape == x.shape and torch.equal(a, b) and a.abs().max() <= 1
    assert dd.refine(None, xd, steps=1, prev_frame=prev).shape == x.shape
    up = _tiny(upsample=2).eval()
    assert up.refine(None, xd, steps=1).shape == (1, 3, 5, 32, 32)


def test_bad_input_refused():
    dd = _tiny().eval()
    with pytest.raises(ValueError, match="x_detok"):
        dd.refine(None, torch.zeros(1, 4, 5, 16, 16))
    with pytest.raises(ValueError, match="steps"):
        dd.refine(None, torch.zeros(1, 3, 5, 16, 16), steps=20)
    with pytest.raises(ValueError, match="prev_frame"):
        dd.refine(None, torch.zeros(1, 3, 5, 16, 16), prev_frame=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="upsample"):
        DiffusionDecoder(DiffusionDecoderConfig(upsample=3))


def test_save_load_roundtrip(tmp_path):
    dd = _tiny().eval()
    for p in dd.parameters():
        torch.nn.init.normal_(p, std=0.05)
    dd.save_pretrained(tmp_path / "dd")
    dd2 = DiffusionDecoder.from_pretrained(tmp_path / "dd")
    _, xd, _ = _clip()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.allclose(dd.refine(None, xd, 2, g()), dd2.refine(None, xd, 2, g()), atol=1e-6)


def test_tiny_head_learns_to_reduce_reconstruction_error():
    torch.set_num_threads(1)
    x, xd, prev = _clip(seed=3)
    dd = _tiny()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(dd.parameters(), lr=2e-3)
    dd.eval()
    before = F.mse_loss(dd.refine(None, xd, steps=4, generator=torch.Generator().manual_seed(5)), x).item()
    dd.train()
    losses = []
    for _ in range(150):
        loss = dd.loss(x, xd, prev, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    dd.eval()
    after = F.mse_loss(dd.refine(None, xd, steps=4, generator=torch.Generator().manual_seed(5)), x).item()
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    # untrained (zero-init) head returns the plain detokenisation; the trained one must beat it
    assert abs(before - F.mse_loss(xd, x).item()) < 1e-6
    assert after < 0.85 * before, (before, after)


def test_temporal_weight_adds_the_frame_difference_error():
    x, xd, prev = _clip(seed=4)
    dd = _tiny()
    nn_init = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial head, so its prediction differs from the target residual
        for p in dd.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=nn_init))
    dd.eval()  # no anchor dropout: both calls see the same condition
    plain = dd.loss(x, xd, prev, generator=torch.Generator().manual_seed(0))
    temporal = dd.loss(x, xd, prev, generator=torch.Generator().manual_seed(0), temporal_weight=0.5)
    assert temporal.item() > plain.item() > 0
    # a single frame has no differences: the term vanishes
    one = dict(x=x[:, :, :1], x_detok=xd[:, :, :1], prev_frame=prev)
    a = dd.loss(**one, generator=torch.Generator().manual_seed(0))
    b = dd.loss(**one, generator=torch.Generator().manual_seed(0), temporal_weight=0.5)
    assert torch.allclose(a, b)
