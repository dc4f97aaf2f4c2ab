"""scripts/eval_dit_loss.py: the same clips and noise give the same loss; a missing model is a clear error."""
import json

import torch
from conftest import load_script

from kinema.decode.dit_generator import DiTGenerator, DiTGeneratorConfig
from kinema.tokenizers.text import TextTokenizer
from kinema.tokenizers.video import VideoTokenizer


def test_scores_models_on_unseen_clips_reproducibly(tmp_path, capsys):
    cfg = DiTGeneratorConfig.preset("tiny", latent_channels=VideoTokenizer.from_pretrained().latent_channels,
                                    text_vocab=TextTokenizer.from_pretrained().vocab_size, max_text_len=32)
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        gen = DiTGenerator(cfg)
        for p in gen.net.final.parameters():  # off the zero init, so the two models predict differently
            torch.nn.init.normal_(p, std=0.2)
        gen.save_pretrained(tmp_path / name)
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "--clips", "2", "--size", "32", "32",
            "--frames", "5", "--cache", str(tmp_path / "unseen.safetensors")]
    assert load_script("eval_dit_loss").main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "unseen.safetensors").is_file() and out["clips"] == 2
    losses = {m: v["unseen"] for m, v in out["loss"].items()}
    assert all(v > 0 for v in losses.values()) and losses[str(tmp_path / "a")] != losses[str(tmp_path / "b")]
    assert load_script("eval_dit_loss").main(args[:1] + args[2:]) == 0  # the cached clips and fixed noise: the same number
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["loss"][str(tmp_path / "a")]["unseen"] == losses[str(tmp_path / "a")]


def test_missing_model_is_refused(tmp_path, capsys):
    assert load_script("eval_dit_loss").main([str(tmp_path / "nope")]) == 2
    assert "no DiT at" in capsys.readouterr().err
