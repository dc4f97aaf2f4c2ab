"""DiT backbone invariants: patches, packing, adaLN-zero identity, no cross-clip attention."""
import pytest
import torch

from kinema.decode.dit import AdaLNZeroBlock, DiT, DiTConfig, block_diagonal_mask, pack, patchify, unpack, unpatchify


@pytest.mark.parametrize("shape,patch", [((3, 1, 4, 4), (1, 2, 2)), ((4, 4, 8, 6), (2, 2, 2)),
                                         ((2, 3, 6, 10), (1, 3, 5)), ((1, 2, 2, 2), (1, 1, 1))])
def test_patch_roundtrip(shape, patch):
    x = torch.randn(shape)
    tok = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(shape[1:], patch))
    assert tok.shape == (grid[0] * grid[1] * grid[2], shape[0] * patch[0] * patch[1] * patch[2])
    assert torch.equal(unpatchify(tok, grid, patch), x)


def test_patchify_refuses_bad_shape():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(3, 1, 5, 4), (1, 2, 2))
    with pytest.raises(ValueError):
        patchify(torch.randn(1, 3, 1, 4, 4), (1, 2, 2))


def test_pack_unpack_roundtrip():
    seqs = [torch.randn(n, 8) for n in (3, 7, 1, 5)]
    packed, seg = pack(seqs)
    assert packed.shape == (16, 8) and seg.tolist() == [0] * 3 + [1] * 7 + [2] + [3] * 5
    for a, b in zip(unpack(packed, [3, 7, 1, 5]), seqs):
        assert torch.equal(a, b)
    m = block_diagonal_mask(seg)
    assert m[0, 2] and not m[0, 3] and m[3, 9] and not m[9, 10]


def _net(**kw):
    torch.manual_seed(0)
    net = DiT(DiTConfig(in_channels=3, out_channels=3, patch=(1, 2, 2), dim=32, depth=2, heads=4, cond_dim=16, **kw))
    for p in net.parameters():  # leave the zero init so outputs are non-trivial
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def test_packed_attention_never_crosses_clips():
    net = _net()
    net.force_packing = True
    a, b, c = torch.randn(3, 2, 4, 6), torch.randn(3, 1, 6, 4), torch.randn(3, 3, 2, 2)
    t, cond = torch.rand(3), torch.randn(3, 16)
    with torch.no_grad():
        out = net([a, b, c], t, cond)
        out2 = net([a, b * 5 + 1, c], t, cond)  # change clip b only
        alone = net([a], t[:1], cond[:1])
    assert [o.shape for o in out] == [a.shape, b.shape, c.shape]
    assert torch.allclose(out[0], out2[0], atol=1e-5) and torch.allclose(out[2], out2[2], atol=1e-5)
    assert not torch.allclose(out[1], out2[1])
    assert torch.allclose(out[0], alone[0], atol=1e-5)


def test_equal_shapes_batch_equals_packing():
    net = _net()
    x, t = torch.randn(2, 3, 2, 4, 4), torch.rand(2)
    with torch.no_grad():
        fast = net.forward_batch(x, t)
        net.force_packing = True
        packed = net.forward_batch(x, t)
    assert torch.allclose(fast, packed, atol=1e-5)


def test_unpatchable_shapes_are_padded_and_cropped():
    net = _net()
    x = torch.randn(3, 3, 5, 7)
    with torch.no_grad():
        y = net([x], torch.rand(1))[0]
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="expected"):
        net([torch.randn(4, 1, 4, 4)], torch.rand(1))


def test_adaln_zero_blocks_start_as_identity():
    blk = AdaLNZeroBlock(32, 4, 16)
    x, c = torch.randn(2, 10, 32), torch.randn(2, 10, 16)
    assert torch.equal(blk(x, c), x)
    net = DiT(DiTConfig(in_channels=3, out_channels=3, dim=32, depth=2, heads=4, cond_dim=16))
    y = net([torch.randn(3, 1, 4, 4)], torch.rand(1), torch.randn(1, 16))[0]
    assert torch.equal(y, torch.zeros_like(y))  # zero-init final layer
