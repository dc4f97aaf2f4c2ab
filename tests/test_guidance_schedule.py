"""Per-output-index guidance schedules: the first latent of a text-to-video plan keeps the first value,
the latents after it (and every latent of i2v / continue) get the later one; contrasts act only there."""
from __future__ import annotations

import torch

from kinema.decode.guidance_schedule import contrast_schedule, later_schedule


def test_later_value_starts_after_the_first_latent_of_t2v_and_covers_i2v_and_continue():
    s = later_schedule("t2v", 10, 4, 2.0, 3.0)
    assert s[:4].tolist() == [2.0] * 4 and s[4:].tolist() == [3.0] * 6
    assert later_schedule("continue", 5, 4, 2.0, 3.0).tolist() == [3.0] * 5
    assert later_schedule("i2v", 5, 4, 2.0, 3.0).tolist() == [3.0] * 5
    assert later_schedule("v2a", 5, None, 2.0, 3.0).tolist() == [2.0] * 5  # no video: one value
    assert later_schedule("t2v", 5, 2, 2.0, 2.0).dtype == torch.float32


def test_contrast_acts_only_where_the_later_value_does_and_never_in_text_to_image():
    assert contrast_schedule("t2v", 6, 2, 4.0).tolist() == [0.0, 0.0] + [4.0] * 4
    assert contrast_schedule("continue", 3, 2, 4.0).tolist() == [4.0] * 3
    assert contrast_schedule("t2i", 6, 2, 4.0).tolist() == [0.0] * 6
    assert contrast_schedule("t2v", 6, 2, 0.0).tolist() == [0.0] * 6
