"""AudioCodec invariants: causality, streaming == whole, bitrate -> levels, save/load, bad input, learning."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kinema.errors import CheckpointError
from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig
from kinema.tokenizers.audio_losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, log_mel_distance, si_snr, stft_distance

torch.set_num_threads(1)


def tiny(seed: int = 0, **kw) -> AudioCodec:
    torch.manual_seed(seed)
    cfg = AudioCodecConfig.preset("tiny")
    for k, v in kw.items():
        setattr(cfg, k, v)
    return AudioCodec(cfg).eval()


def noise(n: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(b, 1, n, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_properties():
    ac = tiny()
    hop = ac.hop_length
    assert hop == 20 and ac.frame_rate == 800.0
    x = noise(10 * hop + 7, b=2)
    codes = ac.encode(x, kbps=None)
    assert codes.dtype == torch.long and codes.shape == (2, ac.num_quantizers, 11)
    assert int(codes.min()) >= 0 and int(codes.max()) < ac.codebook_size
    assert ac.decode(codes).shape == (2, 1, 11 * hop)


def test_small_preset_bitrates():
    cfg = AudioCodecConfig.preset("small")
    ac = AudioCodec(AudioCodecConfig(**{**cfg.__dict__, "kmeans_init": False}))
    assert ac.sample_rate == 16000 and ac.hop_length == 320 and ac.frame_rate == 50.0
    assert [ac.quantizers_for_kbps(k) for k in (1.5, 3.0, 6.0)] == [3, 6, 12]
    assert {1.5, 3.0, 6.0} <= set(ac.supported_kbps)


def test_kbps_changes_number_of_levels_and_coarse_levels_agree():
    ac = tiny()
    x = noise(400)
    k1 = ac.kbps_for_quantizers(1)
    c_low, c_high = ac.encode(x, kbps=2 * k1), ac.encode(x, kbps=4 * k1)
    assert c_low.shape[1] == 2 and c_high.shape[1] == 4
    assert torch.equal(c_low, c_high[:, :2])  # residual VQ: coarse levels first
    assert ac.decode(c_low).shape == ac.decode(c_high).shape
    with pytest.raises(ValueError):
        ac.encode(x, kbps=0.5 * k1)
    with pytest.raises(ValueError):
        ac.encode(x, kbps=float("nan"))


def test_encoder_and_decoder_are_causal():
    ac = tiny(bf16_inference=False)
    hop = ac.hop_length
    x = noise(40 * hop)
    z = ac.encoder(x)
    t = 25 * hop + 3  # perturb one sample inside frame 25
    x2 = x.clone()
    x2[..., t:] += 0.5
    z2 = ac.encoder(x2)
    assert torch.allclose(z[..., :25], z2[..., :25], atol=1e-6)
    assert not torch.allclose(z[..., 25:], z2[..., 25:], atol=1e-4)
    codes = ac.encode(x, kbps=None)
    codes2 = codes.clone()
    codes2[..., 30:] = (codes2[..., 30:] + 1) % ac.codebook_size
    y, y2 = ac.decode(codes), ac.decode(codes2)
    assert torch.allclose(y[..., : 30 * hop], y2[..., : 30 * hop], atol=1e-6)
    assert not torch.allclose(y[..., 30 * hop :], y2[..., 30 * hop :], atol=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_streaming_equals_whole(bf16: bool, monkeypatch):
    monkeypatch.setenv("KINEMA_BF16", "1")  # the bf16 path, even on a CPU where it is emulated (slow, same result)
    ac = tiny(bf16_inference=bf16)
    hop = ac.hop_length
    x = noise(97 * hop + 11)
    whole = ac.encode(x, kbps=None)
    pieces = [x[..., i : i + n] for i, n in zip((0, 13, 413, 1000), (13, 400, 587, x.shape[-1]))]
    streamed = torch.cat(list(ac.encode_stream(pieces, kbps=None)), dim=-1)
    assert torch.equal(streamed, whole)
    assert torch.equal(torch.cat(list(ac.encode_stream(x, kbps=None, chunk_frames=7)), -1), whole)
    y = ac.decode(whole)
    y_stream = torch.cat(list(ac.decode_stream(whole, chunk_frames=9)), dim=-1)
    assert y_stream.shape == y.shape
    assert torch.allclose(y_stream, y, atol=1e-2 if bf16 else 1e-5)


def test_save_load_gives_identical_codes(tmp_path):
    ac = tiny()
    x = noise(2000)
    ac.save_pretrained(tmp_path / "fp32", dtype=None)
    loaded = AudioCodec.from_pretrained(tmp_path / "fp32")
    assert torch.equal(loaded.encode(x), ac.encode(x))
    assert torch.allclose(loaded.decode(ac.encode(x)), ac.decode(ac.encode(x)))
    ac.save_pretrained(tmp_path / "bf16")  # shipped format
    a = AudioCodec.from_pretrained(tmp_path / "bf16")
    a.save_pretrained(tmp_path / "bf16b")
    b = AudioCodec.from_pretrained(tmp_path / "bf16b")
    assert torch.equal(a.encode(x), b.encode(x))
    # the codebooks' EMA statistics are training-only: not shipped, restarted consistently on load
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.endswith((".embed_avg", ".cluster_size"))]
    cb = a.rvq.layers[0]._codebook
    assert torch.equal(cb.embed_avg / cb.cluster_size[..., None], cb.embed)
    with pytest.raises(CheckpointError):
        AudioCodec.from_pretrained(tmp_path / "missing")


def test_prepare_downmix_resample_and_bad_input():
    ac = tiny()
    left, right = torch.rand(1, 1000), torch.rand(1, 1000)
    mono = ac.prepare(torch.cat([left, right]), ac.sample_rate)
    assert mono.shape == (1, 1, 1000)
    assert torch.allclose(mono[0], (left + right) / 2)
    up = ac.prepare(torch.randn(2, 8000), 8000)  # 1 s at 8 kHz -> 1 s at 16 kHz
    assert up.shape == (1, 1, 16000)
    silent = ac.prepare(torch.zeros(1, 500), ac.sample_rate)
    codes = ac.encode(silent)
    assert torch.isfinite(ac.decode(codes)).all()
    empty = ac.prepare(torch.zeros(2, 0), 44100)
    assert empty.shape == (1, 1, 0)
    c0 = ac.encode(empty)
    assert c0.shape[-1] == 0 and ac.decode(c0).shape == (1, 1, 0)
    for bad in (torch.tensor([[0.0, float("nan")]]), torch.tensor([[float("inf"), 0.0]])):
        with pytest.raises(ValueError, match="NaN or infinite"):
            ac.prepare(bad, ac.sample_rate)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ac.encode(torch.full((1, 1, 40), float("nan")))
    with pytest.raises(ValueError):
        ac.encode(torch.zeros(1, 2, 40))  # not mono: must go through prepare
    with pytest.raises(ValueError):
        ac.decode(torch.full((1, 1, 3), ac.codebook_size))
    with pytest.raises(ValueError):
        ac.prepare(torch.zeros(1, 10), 0)


def test_metrics_sanity():
    x = noise(4000)
    assert float(si_snr(x, x)) > 60
    assert float(log_mel_distance(x, x)) < 1e-6
    assert float(stft_distance(x, x)) < 1e-6 < float(stft_distance(0.5 * x, x))
    assert float(stft_distance(torch.zeros_like(x), torch.zeros_like(x))) == 0.0
    assert float(si_snr(x + 0.3 * noise(4000, seed=1), x)) < 15


def _speech_snippet(media_dir, n: int) -> torch.Tensor:
    from kinema.tokenizers.audio_trainer import load_audio_file

    w = load_audio_file(media_dir / "audio" / "sense_and_sensibility_01_austen_64kb-0870.wav", 16000)
    return (w[8000 : 8000 + n] / w.abs().max())[None, None]


def test_tiny_codec_overfits_tone_and_speech(media_dir):
    n = 4000  # 0.25 s
    t = torch.arange(n) / 16000
    tone = (0.5 * torch.sin(2 * math.pi * 440 * t))[None, None]
    x = torch.cat([tone, _speech_snippet(media_dir, n)])  # (2, 1, n)
    ac = tiny(seed=1, bf16_inference=False).train()
    mel, stft = MultiScaleMelLoss(16000), MultiResolutionSTFTLoss()

    def dist() -> torch.Tensor:
        ac.eval()
        d = log_mel_distance(ac.decode(ac.encode(x, kbps=None)), x)
        ac.train()
        return d

    before = dist()
    opt = torch.optim.Adam(ac.parameters(), lr=3e-3)
    for _ in range(250):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ac(x)
            loss = mel(out.wav.float(), x) + stft(out.wav.float(), x) + out.commit_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dist()
    assert (after < before * 0.7).all(), (before, after)


def test_trainer_runs_resumes_and_exports(tmp_path):
    from kinema.config import from_dict
    from kinema.tokenizers.audio_trainer import AudioTrainConfig, train_audio_codec, write_wav

    t = torch.arange(8000) / 16000
    write_wav(tmp_path / "data" / "a.wav", 0.5 * torch.sin(2 * math.pi * 330 * t), 16000)
    write_wav(tmp_path / "data" / "held.wav", 0.5 * torch.sin(2 * math.pi * 550 * t), 16000)
    cfg = from_dict(AudioTrainConfig, {
        "run_dir": str(tmp_path / "run"),
        "model": {**AudioCodecConfig.preset("tiny").__dict__},
        "data": {"folders": [str(tmp_path / "data")], "holdout": ["held.wav"], "segment_seconds": 0.1, "synthetic_fraction": 0.5},
        "train": {"steps": 4, "batch_size": 2, "adv_start": 2, "ckpt_every": 2, "sample_every": 4, "log_every": 1, "warmup": 1},
    })
    train_audio_codec(cfg, progress=False)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step_00000004").is_dir() and (run / "loss_curve.png").is_file()
    assert (run / "samples" / "final" / "0_ref.wav").is_file()
    ac = AudioCodec.from_pretrained(run / "final")
    assert ac.encode(torch.zeros(1, 1, 100), kbps=None).shape[1] == ac.num_quantizers
    cfg.train.steps = 6  # resume continues from step 4
    train_audio_codec(cfg, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def _train_parent_then(tmp_path, **finetune) -> tuple[AudioCodec, AudioCodec]:
    """A 3-step parent run, then 3 more steps with ``finetune`` set in cfg.train: (parent, child)."""
    from kinema.checkpoint import CheckpointManager
    from kinema.config import from_dict
    from kinema.tokenizers.audio_trainer import AudioTrainConfig, train_audio_codec, write_wav

    t = torch.arange(8000) / 16000
    write_wav(tmp_path / "data" / "a.wav", 0.5 * torch.sin(2 * math.pi * 330 * t), 16000)
    cfg = from_dict(AudioTrainConfig, {
        "run_dir": str(tmp_path / "run"),
        "model": {**AudioCodecConfig.preset("tiny").__dict__},
        "data": {"folders": [str(tmp_path / "data")], "segment_seconds": 0.1, "synthetic_fraction": 0.5},
        "train": {"steps": 3, "batch_size": 2, "adv_start": 1, "ckpt_every": 3, "sample_every": 100, "log_every": 1, "warmup": 1},
    })
    train_audio_codec(cfg, progress=False)
    parent = AudioCodec(cfg.model)
    parent.load_state_dict(CheckpointManager(tmp_path / "run" / "checkpoints").load_latest().modules["model"])
    parent.eval()
    cfg.train.steps, cfg.train.schedule_from = 6, 3
    cfg.train.mel_floor, cfg.train.stft_floor = 1e-3, 1e-4
    for k, v in finetune.items():
        setattr(cfg.train, k, v)
    train_audio_codec(cfg, progress=False)
    child = AudioCodec(cfg.model)
    child.load_state_dict(CheckpointManager(tmp_path / "run" / "checkpoints").load_latest().modules["model"])
    child.eval()
    return parent, child


def test_decoder_only_finetune_keeps_every_code(tmp_path):
    """train_decoder_only resumes a parent run, changes the decoder and leaves codes untouched."""
    parent, child = _train_parent_then(tmp_path, train_decoder_only=True)
    ps, cs = parent.state_dict(), child.state_dict()
    assert all(torch.equal(ps[k], cs[k]) for k in ps if not k.startswith("decoder.")), "encoder or codebooks moved"
    assert any(not torch.equal(ps[k], cs[k]) for k in ps if k.startswith("decoder.")), "decoder did not train"
    x = noise(1600, b=2, seed=3) * 0.3
    for kbps in (None, child.kbps_for_quantizers(1)):
        assert torch.equal(parent.encode(x, kbps=kbps), child.encode(x, kbps=kbps))


def test_frozen_codebook_finetune_keeps_every_code_vector(tmp_path):
    """freeze_codebooks trains encoder and decoder; every codebook entry (and its EMA state) stays put."""
    parent, child = _train_parent_then(tmp_path, freeze_codebooks=True)
    ps, cs = parent.state_dict(), child.state_dict()
    assert all(torch.equal(ps[k], cs[k]) for k in ps if k.startswith("rvq.")), "codebooks moved"
    for part in ("encoder.", "decoder."):
        assert any(not torch.equal(ps[k], cs[k]) for k in ps if k.startswith(part)), f"{part} did not train"
    codes = torch.randint(0, child.codebook_size, (1, child.num_quantizers, 7))
    assert torch.equal(parent.codes_to_latent(codes), child.codes_to_latent(codes))  # old tokens mean the same


def test_frozen_codebook_forward_is_straight_through():
    """The training pass decodes the inference path's codes, and its gradient reaches the encoder."""
    from kinema.tokenizers.audio_trainer import frozen_codebook_forward

    torch.manual_seed(0)
    model = AudioCodec(AudioCodecConfig.preset("tiny")).train()
    model.rvq.requires_grad_(False)
    x = noise(1600, b=2, seed=4) * 0.3
    out = frozen_codebook_forward(model, x)
    q = out.codes.shape[1]
    assert 1 <= q <= model.num_quantizers
    with torch.no_grad():
        z = model.encoder(x).float()
        assert torch.equal(out.codes, model._quantize_indices(z, q))
        torch.testing.assert_close(out.wav, model.decoder(model.codes_to_latent(out.codes)), atol=1e-5, rtol=1e-4)
    (out.wav.pow(2).mean() + out.commit_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters() if p.dim() > 1)
    assert all(p.grad is None for p in model.rvq.parameters())
    assert out.commit_loss > 0


def test_loss_floor_sets_how_quiet_a_bin_still_counts():
    """Faint noise far below the floor costs ~nothing; with a tiny floor it dominates the loss."""
    t = torch.arange(4096) / 16000
    x = (0.3 * torch.sin(2 * math.pi * 440 * t)).reshape(1, 1, -1)
    y = x + 1e-6 * noise(4096, seed=1)
    assert MultiScaleMelLoss(floor=1e-2)(y, x) < 0.01 < MultiScaleMelLoss(floor=1e-9)(y, x)
    assert MultiResolutionSTFTLoss(floor=1e-2)(y, x) < 0.05 < MultiResolutionSTFTLoss(floor=1e-9)(y, x)
    # the same floor still sees a tone played 20 dB too quietly
    assert MultiScaleMelLoss(floor=1e-3)(0.1 * x, x) > 0.5


def test_finetune_without_a_parent_checkpoint_is_refused(tmp_path):
    from kinema.config import from_dict
    from kinema.errors import ConfigError
    from kinema.tokenizers.audio_trainer import AudioTrainConfig, train_audio_codec

    base = {"run_dir": str(tmp_path / "run"), "model": {**AudioCodecConfig.preset("tiny").__dict__},
            "data": {"segment_seconds": 0.1, "synthetic_fraction": 1.0, "synthetic_seeds": 0}}
    for mode in ("train_decoder_only", "freeze_codebooks"):
        cfg = from_dict(AudioTrainConfig, {**base, "train": {"steps": 2, mode: True}})
        with pytest.raises(ConfigError, match=f"{mode} fine-tunes a trained codec, but .* no checkpoint"):
            train_audio_codec(cfg, progress=False)
    cfg = from_dict(AudioTrainConfig, {**base, "train": {"steps": 2, "schedule_from": 5}})
    with pytest.raises(ConfigError, match="schedule_from"):
        train_audio_codec(cfg, progress=False)
