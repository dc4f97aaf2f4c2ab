"""scripts/bench_dit_continue.py: bit agreement of sampled latents with the truth and with a copy of the last given one."""
import json

import torch
from conftest import load_script

from kinema.decode.dit_generator import DiTGenerator, DiTGeneratorConfig
from kinema.tokenizers.text import TextTokenizer
from kinema.tokenizers.video import VideoTokenizer


def test_agreement_tells_a_copy_from_the_truth():
    bench = load_script("bench_dit_continue")
    truth = torch.randn(2, 4, 5, 3, 3)
    bits = torch.where(truth > 0, 1.0, -1.0)
    copy = bits[:, :, 1:2].expand(-1, -1, 3, -1, -1)
    r = bench.agreement(copy, truth, given=2)
    assert r["to_copy"] == [1.0, 1.0, 1.0] and r["to_truth"] == r["copy_to_truth"]
    r = bench.agreement(bits[:, :, 2:], truth, given=2)
    assert r["to_truth"] == [1.0, 1.0, 1.0] and r["to_copy"] == r["copy_to_truth"]
    assert all(v < 0.8 for v in r["to_copy"])  # independent random latents agree about half the time


def test_groups_and_a_run_on_unseen_clips(tmp_path, capsys):
    bench = load_script("bench_dit_continue")
    from kinema.data.synthetic import sample_scene
    groups = bench.clip_groups(list(range(300000, 300040)))
    assert groups["sliding"] and groups["static"]
    for i in groups["sliding"]:
        assert all(o.motion.startswith("sliding") for o in sample_scene(300000 + i).objects)
    cfg = DiTGeneratorConfig.preset("tiny", latent_channels=VideoTokenizer.from_pretrained().latent_channels,
                                    text_vocab=TextTokenizer.from_pretrained().vocab_size, max_text_len=32)
    DiTGenerator(cfg).save_pretrained(tmp_path / "dit")
    args = [str(tmp_path / "dit"), "--clips", "8", "--steps", "2", "--cache", str(tmp_path / "c.safetensors")]
    assert bench.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    res = out["models"][str(tmp_path / "dit")]
    assert sum(out["clips"].values()) >= 1 and res
    for rows in res.values():
        assert all(len(v) == 3 and all(0 <= x <= 1 for x in v) for v in rows.values())
    assert torch.is_grad_enabled()


def test_bad_arguments_are_refused(tmp_path, capsys):
    bench = load_script("bench_dit_continue")
    assert bench.main([str(tmp_path / "nope")]) == 2
    assert "no DiT at" in capsys.readouterr().err
