"""scripts/bench_video_tokenizer.py: the sample grid and the detector ceiling through the tokenizer."""
import json

import torch
from PIL import Image

from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig
from conftest import load_script

bench = load_script("bench_video_tokenizer")


def test_sample_grid_rows_are_original_then_reconstruction(tmp_path):
    a = torch.zeros(17, 16, 24, 3, dtype=torch.uint8)
    b = torch.full_like(a, 200)
    bench.sample_grid([(a, b)], tmp_path / "g.png", n_frames=4)
    img = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "g.png")))
    assert img.shape == (32, 96, 3)
    assert int(img[:16].max()) == 0 and int(img[16:].min()) == 200


def test_roundtrip_ceiling_scores_renders_and_their_round_trips(tmp_path):
    caption = "a large red circle bouncing on a black background"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"caption": caption}) + "\n")
    res = bench.roundtrip_ceiling(VideoTokenizer.from_pretrained(), 2, 1.0, str(manifest))
    assert res["prompts"] == 2
    assert res["render_prompt_alignment"] == 1.0  # the world's own renders: the detector's ceiling
    for k in ("prompt_alignment", "motion_correct", "persistence_frames"):
        assert 0.0 <= res[f"roundtrip_{k}"] <= 1.0


def test_roundtrip_ceiling_measures_the_tokenizer_not_the_renders():
    torch.manual_seed(0)
    untrained = VideoTokenizer(VideoTokenizerConfig.preset("tiny")).eval()
    res = bench.roundtrip_ceiling(untrained, 2, 1.0, None)
    assert res["render_prompt_alignment"] == 1.0
    assert res["roundtrip_prompt_alignment"] == 0.0  # random weights decode no caption's objects
