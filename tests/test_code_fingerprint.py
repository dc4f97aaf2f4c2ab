"""Code fingerprints (kinema.checkpoint.weights_fingerprint): which encoder made an LM's tokens, so a
pipeline refuses a tokenizer whose codes the LM never saw."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from kinema.lm.model import KinemaLM
from kinema.pipeline import Pipeline, random_pipeline
from kinema.tokenizers.audio import AudioCodec
from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig


def test_video_fingerprint_follows_the_encoder_not_the_decoder(tmp_path):
    vt = VideoTokenizer(VideoTokenizerConfig.preset("tiny"))
    fp = vt.code_fingerprint()
    vt.save_pretrained(tmp_path / "vt")  # bf16 on disk: the fingerprint reads bf16 values, so it survives
    assert VideoTokenizer.from_pretrained(tmp_path / "vt").code_fingerprint() == fp
    with torch.no_grad():
        next(p for n, p in vt.named_parameters() if n.startswith("decoder.")).add_(0.5)
    assert vt.code_fingerprint() == fp  # a decoder-only fine-tune keeps the codes
    with torch.no_grad():
        next(p for n, p in vt.named_parameters() if n.startswith("encoder.")).add_(0.5)
    assert vt.code_fingerprint() != fp


def test_audio_fingerprint_ignores_training_statistics():
    ac = random_pipeline(seed=0).ac
    fp = ac.code_fingerprint()
    with torch.no_grad():
        for name, buf in ac.named_buffers():
            if name.endswith((".embed_avg", ".cluster_size")):
                buf.add_(1.0)
    assert ac.code_fingerprint() == fp
    with torch.no_grad():
        next(p for n, p in ac.named_parameters() if n.startswith("encoder.")).add_(0.5)
    assert ac.code_fingerprint() != fp


def _with_trained_on(lm: KinemaLM, trained_on: dict) -> KinemaLM:
    other = KinemaLM(dataclasses.replace(lm.cfg, trained_on=trained_on))
    other.load_state_dict(lm.state_dict())
    return other


def test_pipeline_refuses_a_tokenizer_the_lm_was_not_trained_on(tmp_path):
    p = random_pipeline(seed=0)
    right = {"video_tokenizer": p.vt.code_fingerprint(), "audio_codec": p.ac.code_fingerprint()}
    ok = Pipeline(p.vt, p.ac, p.tt, _with_trained_on(p.lm, right), config=p.config)
    ok.save_pretrained(tmp_path / "model")
    assert Pipeline.from_pretrained(tmp_path / "model").lm.cfg.trained_on == right  # stored with the LM
    other_vt = VideoTokenizer(VideoTokenizerConfig.preset("tiny"))  # same codebook size, other encoder
    with pytest.raises(ValueError, match="video_tokenizer codes .* the codes the LM was trained on"):
        Pipeline(other_vt, p.ac, p.tt, ok.lm, config=p.config)
    # an LM that records nothing (older checkpoints) is not checked
    assert Pipeline(other_vt, p.ac, p.tt, p.lm, config=p.config).vt is other_vt


def test_train_lm_takes_the_shards_fingerprints_and_refuses_mixed_ones(tmp_path):
    from conftest import load_script
    from kinema.errors import ConfigError
    from kinema.lm.shards import ShardWriter, TokenShards

    train_lm = load_script("train_lm")

    def shards(name: str, fp: dict | None) -> TokenShards:
        with ShardWriter(tmp_path / name, meta={"code_fingerprints": fp} if fp is not None else {}):
            pass
        return TokenShards(tmp_path / name)

    a = {"video_tokenizer": "aaaa", "audio_codec": "cccc"}
    assert train_lm.code_fingerprints(shards("train", a), shards("eval", a)) == a
    assert train_lm.code_fingerprints(shards("old", None), None) == {}  # shards from before fingerprints
    with pytest.raises(ConfigError, match="different video_tokenizer"):
        train_lm.code_fingerprints(shards("train", a), shards("other", {**a, "video_tokenizer": "bbbb"}))
