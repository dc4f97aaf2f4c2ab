"""Rectified flow: training loss and few-step samplers, as pure functions.

After Liu et al., "Flow Straight and Fast" (arXiv 2209.03003) and Esser et al., "Scaling Rectified
Flow Transformers" (SD3, arXiv 2403.03206). Convention: t = 0 is data, t = 1 is Gaussian noise,

    x_t = (1 - t) * x0 + t * noise,        v = dx_t/dt = noise - x0,

the network predicts v, the clean estimate is ``x0_hat = x_t - t * v``. A sampler integrates the ODE
from t = 1 down to t = 0 with Euler steps; the last step (to t = 0) returns exactly the clean
estimate. The network never knows how it is sampled: every function takes the model as a callable
``model(x_t, t) -> v`` (bind conditioning with a lambda or :func:`guided`) and an explicit
``torch.Generator``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (B,) -> (B, 1, 1, ...) matching x."""
    return t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, t (B,) in [0, 1]."""
    tb = _bcast(t, x0)
    return (1 - tb) * x0 + tb * noise


def clean_estimate(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x0_hat = x_t - t v (exact when v is the true velocity)."""
    return x_t - _bcast(t, x_t) * v


def sample_t(batch: int, generator: torch.Generator | None = None, logit_normal: bool = True,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times (B,): logit-normal (SD3), which weights the middle of the path, or uniform."""
    if logit_normal:
        return torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    return torch.rand(batch, generator=generator, device=device)


def flow_loss(model: Velocity, x0: torch.Tensor, generator: torch.Generator | None = None,
              t: torch.Tensor | None = None, weight: torch.Tensor | None = None,
              logit_normal: bool = True) -> torch.Tensor:
    """Rectified-flow MSE between predicted and true velocity; ``weight`` (broadcastable to x0)
    masks elements (e.g. conditioning frames) out of the loss."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if t is None:
        t = sample_t(x0.shape[0], generator, logit_normal, x0.device)
    v = model(interpolate(x0, noise, t), t)
    err = (v.float() - (noise - x0).float()) ** 2
    if weight is None:
        return err.mean()
    w = weight.expand_as(err).float()
    return (err * w).sum() / w.sum().clamp_min(1.0)


def timesteps(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 times from 1 to 0; ``shift`` > 1 spends more steps at high noise (SD3 eq. 23)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def euler_step(x_t: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next; with t_next = 0 this is the clean estimate."""
    return x_t + (t_next - t) * v


@torch.no_grad()
def sample(model: Velocity, noise: torch.Tensor, steps: int = 4, shift: float = 1.0,
           progress: bool = False) -> torch.Tensor:
    """Integrate from x_1 = ``noise`` to t = 0 with ``steps`` Euler steps; returns x_0."""
    ts = timesteps(steps, shift)
    x = noise
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="flow sampling", leave=False)
    for i in it:
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = model(x, torch.full((x.shape[0],), t, device=x.device))
        x = euler_step(x, v, t, t_next)
    return x


def sample_from_noise(model: Velocity, shape: tuple[int, ...], generator: torch.Generator, steps: int = 4,
                      shift: float = 1.0, device: torch.device | str = "cpu", progress: bool = False) -> torch.Tensor:
    """:func:`sample` starting from Gaussian noise drawn from ``generator`` (deterministic per seed)."""
    noise = torch.randn(shape, generator=generator, device=device)
    return sample(model, noise, steps, shift, progress)


def guided(cond: Velocity, uncond: Velocity, scale: float,
           contrasts: Sequence[tuple[Velocity, float]] = ()) -> Velocity:
    """Classifier-free guidance (Ho & Salimans, arXiv 2207.12598): v_u + s (v_c - v_u).

    Each ``(contrast, m)`` adds ``m (v_c - v_contrast)``: away from a second prompt (motion guidance,
    where the contrast is the caption with its motion reversed or standing still), the velocity-space
    twin of the AR path's contrast logits (:mod:`kinema.decode.sampling`).
    """
    if scale == 1.0 and not contrasts:
        return cond

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        vc = cond(x, t)
        out = vc
        if scale != 1.0:
            vu = uncond(x, t)
            out = vu + scale * (vc - vu)
        for contrast, m in contrasts:
            out = out + m * (vc - contrast(x, t))
        return out

    return v


def mse_to_psnr(mse: torch.Tensor | float, peak: float = 2.0) -> float:
    """PSNR in dB for signals spanning ``peak`` (2 for [-1, 1])."""
    mse = float(mse)
    return float("inf") if mse <= 0 else 10.0 * torch.log10(torch.tensor(peak**2 / mse)).item()


__all__ = ["interpolate", "clean_estimate", "sample_t", "flow_loss", "timesteps", "euler_step", "sample",
           "sample_from_noise", "guided", "mse_to_psnr"]
