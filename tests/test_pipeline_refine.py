"""Pipeline(refine=True): the diffusion decoder head sits on the decode path, window by window."""
from __future__ import annotations

import pytest
import torch

from kinema.decode.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig
from kinema.pipeline import Pipeline, random_pipeline

torch.set_num_threads(1)


def _head(perturb: bool, upsample: int = 1) -> DiffusionDecoder:
    torch.manual_seed(0)
    dd = DiffusionDecoder(DiffusionDecoderConfig(dim=32, depth=1, heads=4, patch=(1, 4, 4), pixel_channels=8,
                                                 upsample=upsample))
    if perturb:
        torch.nn.init.normal_(dd.out.weight, std=0.2)  # a head that changes pixels
    return dd.eval()


def test_untrained_head_is_identity_and_trained_head_changes_frames():
    pipe = random_pipeline(seed=0)
    plain = pipe("a red circle bouncing", seconds=1.0, seed=3).video
    pipe.diffusion_decoder = _head(perturb=False)  # zero-initialised output: returns the detokenisation
    same = pipe("a red circle bouncing", seconds=1.0, seed=3, refine=True).video
    assert torch.equal(plain, same)
    pipe.diffusion_decoder = _head(perturb=True)
    refined = pipe("a red circle bouncing", seconds=1.0, seed=3, refine=True).video
    assert refined.shape == plain.shape and not torch.equal(refined, plain)
    # several windows: each one anchored on the previous window's last refined frame
    long = pipe("a red circle bouncing", seconds=3.5, seed=3, refine=True)
    assert long.video.shape == (28, 32, 32, 3) and len(long.window_starts) >= 2


def test_refine_head_saved_and_loaded_with_the_pipeline(tmp_path):
    pipe = random_pipeline(seed=0)
    pipe.diffusion_decoder = _head(perturb=True)
    pipe.save_pretrained(tmp_path / "m")
    loaded = Pipeline.from_pretrained(tmp_path / "m")
    assert loaded.diffusion_decoder is not None
    a = pipe("a blue square", seconds=1.0, seed=1, refine=True).video
    b = loaded("a blue square", seconds=1.0, seed=1, refine=True).video
    assert torch.equal(a, b)


def test_refine_refuses_an_upsampling_head():
    pipe = random_pipeline(seed=0)
    pipe.diffusion_decoder = _head(perturb=False, upsample=2)
    with pytest.raises(ValueError, match="upsample=1"):
        pipe("a red circle", seconds=1.0, refine=True)


def test_refine_default_comes_from_the_pipeline_config():
    pipe = random_pipeline(seed=0)
    plain = pipe("a red circle bouncing", seconds=1.0, seed=3).video
    pipe.diffusion_decoder = _head(perturb=True)
    assert torch.equal(pipe("a red circle bouncing", seconds=1.0, seed=3).video, plain)  # config default: off
    pipe.config.refine = True
    on = pipe("a red circle bouncing", seconds=1.0, seed=3).video
    assert not torch.equal(on, plain)
    assert torch.equal(pipe("a red circle bouncing", seconds=1.0, seed=3, refine=False).video, plain)
