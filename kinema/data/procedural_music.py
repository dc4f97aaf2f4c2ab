"""Procedural instrument audio: training material for the audio codec beyond speech and bounce tones.

The real recordings we may train on hold only a few seconds of instruments, so a codec trained on them
meets a cello or a xylophone almost for the first time at test time. This module synthesises short
phrases of notes with the spectral traits of the main instrument families, by additive synthesis
(every partial is a sinusoid with its own frequency and envelope):

- *bowed* (strings): sawtooth-like harmonic series with a resonant body (formant) envelope, slow
  attack, vibrato and bow noise;
- *plucked* (guitar, harp, piano-like): slightly inharmonic partials, f_k = k f0 sqrt(1 + B k^2)
  (the stiff-string law), upper partials decaying faster;
- *mallet* (xylophone, marimba, glass): a few strongly inharmonic partials of a bar, sharp strike
  with a noise click, fast decay;
- *wind* (clarinet, brass): odd-harmonic or bright harmonic spectra whose brightness follows the
  loudness envelope, breath noise.

Notes come from a random equal-tempered scale, one to three voices at a time, with a random room
(a short decaying-noise reverb). Pure function of a ``random.Random``: the same seed gives the same
audio. Following the data-diversity argument of SoundStream (Zeghidour et al., arXiv 2107.03312),
which trains on speech, music and general audio together.

    wav = procedural_music(random.Random(0), 10240, 16000)   # (10240,) float in [-1, 1]
"""
from __future__ import annotations

import math
import random

import torch

FAMILIES = ("bowed", "plucked", "mallet", "wind")
# partial ratios of a free bar (xylophone / marimba / glass), relative to the fundamental
_BAR_RATIOS = ((1.0, 2.76, 5.40, 8.93), (1.0, 3.93, 9.2), (1.0, 4.0, 10.0), (1.0, 2.32, 4.25, 6.63))


def _envelope(t: torch.Tensor, attack: float, decay: float, dur: float, release: float) -> torch.Tensor:
    """Attack ramp, exponential decay while held, exponential release after ``dur`` seconds."""
    env = (t / max(attack, 1e-4)).clamp(0, 1) * torch.exp(-decay * t)
    after = (t - dur).clamp_min(0)
    return env * torch.exp(-after / max(release, 1e-3)) * (t >= 0)


def _partials(t: torch.Tensor, freqs: list[float], amps: list[float], decays: list[float], sr: int,
              vibrato: torch.Tensor | None, rng: random.Random) -> torch.Tensor:
    """Sum of decaying sinusoids at random phases; partials above 0.45 * sr (aliasing) are left out."""
    out = torch.zeros_like(t)
    nyq = 0.45 * sr
    for f, a, d in zip(freqs, amps, decays):
        if f >= nyq or a < 1e-4:
            continue
        phase = 2 * math.pi * f * (t if vibrato is None else t + vibrato) + rng.uniform(0, 2 * math.pi)
        out += a * torch.exp(-d * t.clamp_min(0)) * torch.sin(phase)
    return out


def _note(family: str, f0: float, n: int, start: float, dur: float, sr: int, rng: random.Random,
          g: torch.Generator) -> torch.Tensor:
    t = torch.arange(n) / sr - start
    tc = t.clamp_min(0)
    noise = torch.randn(n, generator=g)
    if family == "bowed":
        k = list(range(1, 41))
        tilt, formant, width = rng.uniform(0.8, 1.4), rng.uniform(400, 2500), rng.uniform(0.5, 1.5)
        amps = [k_ ** -tilt * (1 + 2 * math.exp(-(math.log(k_ * f0 / formant) / width) ** 2)) for k_ in k]
        rate, depth = rng.uniform(4.5, 7), rng.uniform(0.002, 0.008)
        vib = depth / (2 * math.pi * rate) * (1 - torch.cos(2 * math.pi * rate * tc))  # phase offset of the vibrato
        y = _partials(t, [k_ * f0 for k_ in k], amps, [0.3] * len(k), sr, vib, rng)
        y += rng.uniform(0.0, 0.05) * noise
        env = _envelope(t, rng.uniform(0.03, 0.15), rng.uniform(0.0, 1.0), dur, rng.uniform(0.05, 0.3))
    elif family == "plucked":
        B = rng.uniform(0.0, 4e-4)
        k = list(range(1, 31))
        bright = rng.uniform(0.8, 2.0)
        freqs = [k_ * f0 * math.sqrt(1 + B * k_ * k_) for k_ in k]
        amps = [k_ ** -bright * abs(math.sin(math.pi * k_ * rng.uniform(0.1, 0.3)) + 0.1) for k_ in k]
        base = rng.uniform(1.5, 6)
        y = _partials(t, freqs, amps, [base * (1 + 0.15 * k_) for k_ in k], sr, None, rng)
        env = _envelope(t, 0.002, 0.0, dur, rng.uniform(0.05, 0.4))
    elif family == "mallet":
        ratios = rng.choice(_BAR_RATIOS)
        amps = [rng.uniform(0.3, 1.0) / (i + 1) ** 0.5 for i in range(len(ratios))]
        base = rng.uniform(4, 25)
        y = _partials(t, [r * f0 for r in ratios], amps, [base * (1 + 0.8 * i) for i in range(len(ratios))], sr, None, rng)
        y += rng.uniform(0.05, 0.4) * noise * torch.exp(-rng.uniform(150, 600) * tc)  # strike click
        env = _envelope(t, 0.001, 0.0, dur, rng.uniform(0.1, 0.5))
    elif family == "wind":
        odd = rng.random() < 0.5
        k = [k_ for k_ in range(1, 31) if not odd or k_ % 2 == 1]
        env = _envelope(t, rng.uniform(0.02, 0.1), rng.uniform(0.0, 0.5), dur, rng.uniform(0.03, 0.15))
        tilt = rng.uniform(1.0, 2.2)
        vib = rng.uniform(0.0, 0.004) / (2 * math.pi * 5) * (1 - torch.cos(2 * math.pi * 5 * tc))
        fundamental = _partials(t, [f0], [1.0], [0.0], sr, vib, rng)
        upper = _partials(t, [k_ * f0 for k_ in k[1:]], [k_ ** -tilt for k_ in k[1:]], [0.0] * (len(k) - 1), sr, vib, rng)
        y = fundamental + upper * env  # the upper partials follow the loudness twice: brighter when loud
        y += rng.uniform(0.0, 0.03) * noise
    else:
        raise ValueError(f"unknown instrument family {family!r}; choose from {', '.join(FAMILIES)}")
    return env * y


def _room(x: torch.Tensor, sr: int, rng: random.Random, g: torch.Generator) -> torch.Tensor:
    """A short exponentially decaying noise impulse response (a small room), mixed wet/dry."""
    rt = rng.uniform(0.05, 0.4)
    m = int(rt * sr)
    ir = torch.randn(m, generator=g) * torch.exp(-6.9 * torch.arange(m) / m)
    ir = ir / ir.norm().clamp_min(1e-6)
    wet = torch.fft.irfft(torch.fft.rfft(x, x.numel() + m) * torch.fft.rfft(ir, x.numel() + m))[: x.numel()]
    mix = rng.uniform(0.05, 0.4)
    return (1 - mix) * x + mix * wet


def procedural_music(rng: random.Random, n: int, sample_rate: int) -> torch.Tensor:
    """(n,) float phrase of one to three instrument voices, peak-normalised to at most 1."""
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    seconds = n / sample_rate
    root = 55.0 * 2 ** rng.uniform(0, 4)  # A1 .. A5
    scale = rng.choice(((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10)))
    out = torch.zeros(n)
    for _ in range(rng.randint(1, 3)):
        family = rng.choice(FAMILIES)
        gain = rng.uniform(0.3, 1.0)
        t = rng.uniform(-0.2, 0.1)
        while t < seconds:
            dur = rng.uniform(0.08, 0.6)
            step = rng.choice(scale) + 12 * rng.randint(-1, 1)
            f0 = min(root * 2 ** (step / 12), 2000.0)
            out += gain * _note(family, f0, n, t, dur, sample_rate, rng, g)
            t += dur + rng.uniform(-0.05, 0.2)
    if rng.random() < 0.7:
        out = _room(out, sample_rate, rng, g)
    return out / out.abs().max().clamp_min(1.0)
