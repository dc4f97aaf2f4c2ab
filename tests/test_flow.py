"""Rectified-flow invariants (kinema.decode.flow)."""
import torch

from kinema.decode import flow


def test_step_to_zero_is_clean_estimate():
    g = torch.Generator().manual_seed(0)
    x_t, v = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    t = 0.7
    out = flow.euler_step(x_t, v, t, 0.0)
    assert torch.allclose(out, flow.clean_estimate(x_t, torch.full((2,), t), v), atol=1e-6)


def test_oracle_denoiser_recovers_data():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 5, 5, generator=g)

    def oracle(x, t):  # exact velocity of the flow toward the single data point x0
        return (x - x0) / t.view(-1, 1, 1, 1)

    for steps in (1, 2, 4, 8):
        out = flow.sample_from_noise(oracle, x0.shape, torch.Generator().manual_seed(2), steps=steps, shift=3.0)
        assert torch.allclose(out, x0, atol=1e-5)


def test_interpolation_endpoints_and_target():
    x0, n = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(flow.interpolate(x0, n, torch.zeros(2)), x0)
    assert torch.allclose(flow.interpolate(x0, n, torch.ones(2)), n)
    # the true velocity gives zero loss
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    loss = flow.flow_loss(lambda x, t: noise - x0, x0, generator=g, t=torch.full((2,), 0.5))
    assert loss.item() < 1e-10


def test_sampler_deterministic_and_timesteps():
    model = lambda x, t: 0.5 * x  # noqa: E731
    a = flow.sample_from_noise(model, (2, 3), torch.Generator().manual_seed(5), steps=3)
    b = flow.sample_from_noise(model, (2, 3), torch.Generator().manual_seed(5), steps=3)
    assert torch.equal(a, b)
    ts = flow.timesteps(4, shift=2.0)
    assert ts[0] == 1 and ts[-1] == 0 and bool((ts[1:] < ts[:-1]).all())
    try:
        flow.timesteps(0)
    except ValueError:
        pass
    else:
        raise AssertionError("steps=0 must be refused")


def test_guidance_scale_one_is_conditional():
    c = lambda x, t: x + 1  # noqa: E731
    u = lambda x, t: x * 0  # noqa: E731
    x = torch.randn(2, 3)
    assert torch.equal(flow.guided(c, u, 1.0)(x, torch.ones(2)), c(x, None))
    assert torch.allclose(flow.guided(c, u, 3.0)(x, torch.ones(2)), 3 * (x + 1))


def test_contrast_terms_push_away_from_their_prompt():
    c = lambda x, t: x + 1  # noqa: E731
    u = lambda x, t: x * 0  # noqa: E731
    r = lambda x, t: x - 1  # noqa: E731  (the contrast prompt's velocity)
    x = torch.randn(2, 3)
    # v_u + s (v_c - v_u) + m (v_c - v_r) = 3 (x + 1) + 0.5 * 2
    assert torch.allclose(flow.guided(c, u, 3.0, [(r, 0.5)])(x, torch.ones(2)), 3 * (x + 1) + 1.0)
    # without the unconditional term (scale 1) the contrast still applies; two contrasts add up
    assert torch.allclose(flow.guided(c, u, 1.0, [(r, 0.5), (u, 2.0)])(x, torch.ones(2)), (x + 1) + 1.0 + 2 * (x + 1))
