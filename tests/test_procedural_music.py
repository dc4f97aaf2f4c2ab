"""Procedural instrument audio and the codec trainer's music / speed-perturbation sources."""
from __future__ import annotations

import math
import random

import pytest
import torch

from kinema.data.procedural_music import FAMILIES, _note, procedural_music


def test_phrases_are_deterministic_bounded_and_audible():
    a = procedural_music(random.Random(7), 8000, 16000)
    b = procedural_music(random.Random(7), 8000, 16000)
    c = procedural_music(random.Random(8), 8000, 16000)
    assert a.shape == (8000,) and torch.equal(a, b) and not torch.equal(a, c)
    for seed in range(20):
        x = procedural_music(random.Random(seed), 4000, 16000)
        assert torch.isfinite(x).all() and x.abs().max() <= 1.0 and x.abs().max() > 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_sounds_at_its_pitch(family):
    """The strongest spectral peak of a held note is the fundamental or one of its partials."""
    sr, f0 = 16000, 220.0
    y = _note(family, f0, sr, 0.0, 0.8, sr, random.Random(0), torch.Generator().manual_seed(0))
    spec = torch.fft.rfft(y * torch.hann_window(sr)).abs()
    peak_hz = float(spec.argmax())  # sr samples: 1 Hz bins
    ratio = peak_hz / f0
    assert ratio > 0.95 and min(abs(ratio - r) for r in (1, 2, 2.76, 3, 3.93, 4, 5, 5.4)) < 0.1, (family, peak_hz)
    with pytest.raises(ValueError, match="choose from"):
        _note("kazoo", f0, 100, 0.0, 0.1, sr, random.Random(0), torch.Generator())


def test_sampler_mixes_music_and_speed_perturbed_clips(tmp_path):
    from kinema.tokenizers.audio_trainer import AudioDataConfig, SegmentSampler, write_wav

    t = torch.arange(16000) / 16000
    write_wav(tmp_path / "tone.wav", 0.5 * torch.sin(2 * math.pi * 440 * t), 16000)
    only_real = AudioDataConfig(folders=[str(tmp_path)], synthetic_fraction=0.0, speed_perturb=0.25, segment_seconds=0.2)
    s = SegmentSampler(only_real, 16000, 320, seed=0)
    peaks = set()
    for _ in range(12):
        seg = s.batch(1)[0, 0]
        assert seg.shape == (s.n,) and torch.isfinite(seg).all()
        peaks.add(int(torch.fft.rfft(seg * torch.hann_window(s.n)).abs().argmax()) * 16000 // s.n)
    assert min(peaks) < 420 and max(peaks) > 460, peaks  # the tone was played at several speeds
    assert all(350 <= p <= 550 for p in peaks), peaks  # ... within 1/1.25 .. 1.25
    music = AudioDataConfig(folders=[str(tmp_path)], synthetic_fraction=0.0, music_fraction=1.0, segment_seconds=0.2)
    m = SegmentSampler(music, 16000, 320, seed=0)
    segs = m.batch(4)[:, 0]
    assert segs.shape == (4, m.n) and not torch.allclose(segs[0], segs[1])
    state = m.state()
    again = m.batch(2)
    m.set_state(state)
    assert torch.equal(again, m.batch(2))  # resumable: the sampler's state fixes the next segments


def test_sampler_refuses_bad_mix_settings(tmp_path):
    from kinema.errors import ConfigError
    from kinema.tokenizers.audio_trainer import AudioDataConfig, SegmentSampler

    for bad in (dict(synthetic_fraction=0.6, music_fraction=0.6), dict(music_fraction=-0.1), dict(speed_perturb=2.0),
                dict(synthetic_fraction=0.5, music_fraction=0.3, tone_fraction=0.3), dict(tone_fraction=-0.1)):
        with pytest.raises(ConfigError):
            SegmentSampler(AudioDataConfig(folders=[str(tmp_path)], **bad), 16000, 320, seed=0)


def test_steady_tones_hold_a_few_pure_frequencies(tmp_path):
    """The tone source: 1-3 sinusoids that ring through the segment, at the sampler's share."""
    from kinema.tokenizers.audio_trainer import AudioDataConfig, SegmentSampler, steady_tones, write_wav

    rng = random.Random(3)
    for _ in range(5):
        x = steady_tones(rng, 16000, 16000)
        assert x.shape == (16000,) and torch.isfinite(x).all() and 0.99 < float(x.abs().max()) <= 1.0
        spec = torch.fft.rfft(x * torch.hann_window(16000)).abs().pow(2)
        top = spec.topk(3 * 7).values.sum()  # up to three peaks, a few bins wide each
        assert top / spec.sum() > 0.9  # nearly all the energy sits at a few frequencies
    write_wav(tmp_path / "noise.wav", 0.3 * torch.randn(16000, generator=torch.Generator().manual_seed(0)), 16000)
    cfg = AudioDataConfig(folders=[str(tmp_path)], synthetic_fraction=0.0, tone_fraction=0.5, segment_seconds=0.2)
    sampler = SegmentSampler(cfg, 16000, 320, seed=0)
    kinds = [sampler._source() for _ in range(400)]
    assert 0.4 < kinds.count("tone") / 400 < 0.6 and set(kinds) == {"tone", "real"}
