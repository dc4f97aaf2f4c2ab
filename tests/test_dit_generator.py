"""DiT generator invariants: learns one clip, CFG/conditioning wiring, determinism, save/load, bad input."""
import pytest
import torch

from kinema.decode import flow
from kinema.decode.dit_generator import DiTGenerator, DiTGeneratorConfig


def _gen(**kw) -> DiTGenerator:
    torch.manual_seed(0)
    return DiTGenerator(DiTGeneratorConfig.preset("tiny", latent_channels=4, text_vocab=50, **kw))


def test_tiny_generator_learns_one_clip():
    gen = _gen(text_drop=0.0)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0)).sign()
    ids = [[1, 2, 3]]
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)

    def recon_err() -> float:  # sampler error from fixed noise at a fixed step count
        gen.eval()
        out = gen.generate(ids, 3, (4, 4), guidance_scale=1.0, steps=4, generator=torch.Generator().manual_seed(5),
                           snap=False)
        gen.train()
        return float(((out - z) ** 2).mean())

    before = recon_err()
    for _ in range(150):
        loss = gen.loss(z, ids, generator=g, context_frames=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon_err()
    assert after < 0.5 * before, (before, after)


def test_context_frames_are_masked_and_condition_the_output():
    gen = _gen()
    for p in gen.net.final.parameters():  # leave the zero init so outputs depend on inputs
        torch.nn.init.normal_(p, std=0.2)
    for blk in gen.net.blocks:
        torch.nn.init.normal_(blk.ada[1].weight, std=0.2)
    gen.eval()
    ids = [[1, 2], [3]]
    z = torch.randn(2, 4, 3, 4, 4)
    kw = dict(guidance_scale=2.0, steps=2)
    a = gen.generate(ids, 2, (4, 4), generator=torch.Generator().manual_seed(1), cond_latents=z[:, :, :1], **kw)
    b = gen.generate(ids, 2, (4, 4), generator=torch.Generator().manual_seed(1), cond_latents=z[:, :, :1], **kw)
    c = gen.generate(ids, 2, (4, 4), generator=torch.Generator().manual_seed(1), cond_latents=-z[:, :, :1],
                     snap=False, **kw)
    d = gen.generate(ids, 2, (4, 4), generator=torch.Generator().manual_seed(1), cond_latents=z[:, :, :1],
                     snap=False, **kw)
    assert a.shape == (2, 4, 2, 4, 4) and torch.equal(a, b) and set(a.unique().tolist()) <= {-1.0, 1.0}
    assert not torch.allclose(c, d)  # the given latents matter
    # one caption's prediction does not depend on the other sample in the batch (fixed text padding)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.tensor([0.3, 0.8])
    cin = gen.cond_input(z[:, :, :1], 2, 3, 4, 4)
    with torch.no_grad():
        both = gen.velocity(x, t, cin, gen.text(gen.text.ids_tensor(ids, 2)))
        solo = gen.velocity(x[:1], t[:1], cin[:1], gen.text(gen.text.ids_tensor(ids[:1], 1)))
    assert torch.allclose(both[:1], solo, atol=1e-5)
    # masked context frames: the loss ignores whatever the model predicts there
    gen.train()
    l1 = gen.loss(z, ids, generator=torch.Generator().manual_seed(3), context_frames=2)
    z2 = z.clone()
    z2[:, :, :2] = z2[:, :, :2].sign()  # same signs: the conditioning input is identical
    l2 = gen.loss(z2, ids, generator=torch.Generator().manual_seed(3), context_frames=2)
    assert torch.allclose(l1, l2, atol=1e-6)


def test_motion_contrast_is_a_velocity_term_away_from_its_caption():
    gen = _gen()
    for p in gen.net.final.parameters():  # leave the zero init so outputs depend on the text
        torch.nn.init.normal_(p, std=0.2)
    for blk in gen.net.blocks:
        torch.nn.init.normal_(blk.ada[1].weight, std=0.2)
    gen.eval()
    kw = dict(guidance_scale=2.0, steps=2, snap=False)
    plain = gen.generate([[1, 2]], 2, (4, 4), generator=torch.Generator().manual_seed(1), **kw)
    same = gen.generate([[1, 2]], 2, (4, 4), generator=torch.Generator().manual_seed(1),
                        contrasts=[([[1, 2]], 3.0)], **kw)  # contrast == caption: the term is zero
    off = gen.generate([[1, 2]], 2, (4, 4), generator=torch.Generator().manual_seed(1),
                       contrasts=[([[5, 6]], 0.0)], **kw)  # scale 0: no branch
    away = gen.generate([[1, 2]], 2, (4, 4), generator=torch.Generator().manual_seed(1),
                        contrasts=[([[5, 6]], 3.0)], **kw)
    assert torch.allclose(plain, same, atol=1e-5) and torch.equal(plain, off)
    assert not torch.allclose(plain, away, atol=1e-3)


def test_generate_long_and_save_load(tmp_path):
    gen = _gen().eval()
    out = gen.generate_long([[1, 2]], 7, (4, 4), window=3, context=1, steps=2,
                            generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 4, 7, 4, 4)
    gen.cfg.latent_mean, gen.cfg.latent_std = [0.1] * 4, [2.0] * 4
    gen2 = DiTGenerator(gen.cfg)
    gen2.load_state_dict(gen.state_dict())
    gen2.save_pretrained(tmp_path / "dit")
    loaded = DiTGenerator.from_pretrained(tmp_path / "dit")
    kw = dict(steps=2, snap=False, guidance_scale=3.0)
    assert torch.allclose(loaded.generate([[4]], 2, (4, 4), generator=torch.Generator().manual_seed(2), **kw),
                          gen2.generate([[4]], 2, (4, 4), generator=torch.Generator().manual_seed(2), **kw), atol=1e-5)


def test_bad_input_is_refused():
    gen = _gen().eval()
    with pytest.raises(ValueError, match="text ids"):
        gen.generate([[99]], 1, (4, 4))
    with pytest.raises(ValueError, match="cond_latents"):
        gen.generate([[1]], 1, (4, 4), cond_latents=torch.zeros(1, 4, 1, 3, 3))
    with pytest.raises(ValueError, match="grid"):
        gen.generate([[1]], 1, (4,))
    with pytest.raises(ValueError, match="latents"):
        gen.loss(torch.zeros(1, 3, 2, 4, 4), [[1]])
    with pytest.raises(ValueError, match="unknown DiT preset"):
        DiTGeneratorConfig.preset("huge")
    assert flow.timesteps(2).shape == (3,)


def test_pipeline_dit_backend_runs_windows_and_continues():
    from kinema.pipeline import random_pipeline

    pipe = random_pipeline(0)
    pipe.config.dit_steps = 2
    pipe.dit = DiTGenerator(DiTGeneratorConfig.preset("tiny", latent_channels=pipe.vt.latent_channels,
                                                      text_vocab=pipe.tt.vocab_size, max_text_len=32)).eval()
    out = pipe("a red circle bouncing", seconds=2.0, seed=0, backend="dit", with_audio=False)
    again = pipe("a red circle bouncing", seconds=2.0, seed=0, backend="dit", with_audio=False)
    assert out.video.shape == (16, 32, 32, 3) and torch.equal(out.video, again.video)
    assert len([s for s in out.stats if s.get("backend") == "dit"]) >= 2  # several windows
    with pytest.raises(ValueError, match="backend 'dit'"):
        pipe("a red circle", seconds=1.0, backend="dit", task="t2i")
    # motion guidance reaches the DiT: a slide's reversed caption changes the sample, a prompt with no
    # slide has no contrast prompt and is drawn as without guidance
    for p in pipe.dit.net.final.parameters():
        torch.nn.init.normal_(p, std=0.2)
    for blk in pipe.dit.net.blocks:
        torch.nn.init.normal_(blk.ada[1].weight, std=0.2)
    kw = dict(seconds=1.0, seed=0, backend="dit", with_audio=False, motion_contrast="reversed")
    slide = [pipe("a red circle sliding left", motion_guidance=m, **kw).tokens["video"] for m in (0.0, 8.0)]
    still = [pipe("a red circle", motion_guidance=m, **kw).tokens["video"] for m in (0.0, 8.0)]
    assert not torch.equal(*slide) and torch.equal(*still)
    # pipeline.json's motion guidance is the AR path's; the DiT takes it only when it is passed
    pipe.config.motion_guidance = 8.0
    assert pipe.sampling_options(backend="dit")["motion_guidance"] == 0.0
    assert pipe.sampling_options(backend="ar")["motion_guidance"] == 8.0
    assert torch.equal(pipe("a red circle sliding left", **kw).tokens["video"], slide[0])


def test_position_weight_scales_the_loss_per_latent_position():
    torch.manual_seed(0)
    m = DiTGenerator(DiTGeneratorConfig.preset("tiny", latent_channels=4, text_vocab=50, patch=(1, 2, 2))).eval()
    with torch.no_grad():  # off the adaLN-zero init, so the prediction depends on the input
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(2, 4, 3, 4, 4)
    ids = [[3, 4], [5]]
    with torch.no_grad():
        plain = m.loss(z, ids, torch.Generator().manual_seed(2), context_frames=1)
        ones = m.loss(z, ids, torch.Generator().manual_seed(2), context_frames=1,
                      position_weight=torch.ones(2, 3, 4, 4))
        torch.testing.assert_close(ones, plain, rtol=0, atol=1e-6)
        w = torch.zeros(2, 3, 4, 4)
        w[:, 1, 0, 0] = 1.0  # one position of the first generated latent
        one = m.loss(z, ids, torch.Generator().manual_seed(2), context_frames=1, position_weight=w)
        w[:, 0] = 5.0  # the given latent stays out of the loss whatever its weight
        same = m.loss(z, ids, torch.Generator().manual_seed(2), context_frames=1, position_weight=w)
    torch.testing.assert_close(same, one, rtol=0, atol=1e-6)
    assert float(one) != pytest.approx(float(plain), rel=1e-3)
    with pytest.raises(ValueError, match="position_weight must be"):
        m.loss(z, ids, position_weight=torch.ones(2, 3, 4))
