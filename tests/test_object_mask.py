"""kinema.data.object_mask: latent positions with object pixels, on the causal tokenizer's grid."""
import pytest
import torch

from kinema.data.object_mask import latent_object_mask
from kinema.data.synthetic import render, sample_scene


def test_a_flat_clip_has_no_objects_and_a_dot_marks_its_own_latent_only():
    frames = torch.full((9, 32, 32, 3), 40, dtype=torch.uint8)
    assert not latent_object_mask(frames, (3, 4, 4)).any()
    frames[3, 17, 9] = 200  # one pixel in video frame 3: latent frame 1 (frames 1-4), block (2, 1)
    m = latent_object_mask(frames, (3, 4, 4))
    assert m.sum() == 1 and m[1, 2, 1]
    frames[0, 0, 31] = 200  # frame 0 is coded on its own: latent frame 0
    m = latent_object_mask(frames, (3, 4, 4))
    assert m.sum() == 2 and m[0, 0, 3]
    frames[8, 31, 0, 0] = 40 + 12  # below the threshold (12.75 levels)
    assert latent_object_mask(frames, (3, 4, 4)).sum() == 2


def test_the_objects_of_a_synthetic_clip_are_where_its_truth_says():
    scene = sample_scene(100001)
    c = render(scene, (128, 128), 8.0, 17 / 8)
    m = latent_object_mask(c.frames, (5, 16, 16))
    assert 0.02 < m.float().mean() < 0.5  # a few small shapes on a plain background
    for k in (0, 4, 16):
        j = 0 if k == 0 else 1 + (k - 1) // 4
        for obj in c.truth[k]:
            x, y = int(round(obj["x"])), int(round(obj["y"]))
            if obj["visible"] > 0.5 and 0 <= x < 128 and 0 <= y < 128:
                assert m[j, y // 8, x // 8], (k, obj)


def test_frames_that_do_not_fit_the_grid_are_refused():
    frames = torch.zeros(8, 32, 32, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="do not map onto a latent grid"):
        latent_object_mask(frames, (3, 4, 4))  # 8 frames is not 1 + 4k
    with pytest.raises(ValueError, match="do not map onto a latent grid"):
        latent_object_mask(torch.zeros(9, 30, 32, 3, dtype=torch.uint8), (3, 4, 4))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        latent_object_mask(torch.zeros(9, 32, 32), (3, 4, 4))
