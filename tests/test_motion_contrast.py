"""Motion guidance's contrast prompt: the caption with its motion standing still."""
from __future__ import annotations

import pytest

from kinema.data.heldout import heldout_captions
from kinema.decode.motion_contrast import contrast_caption, reversed_caption, still_caption, unslid_caption


def test_every_motion_phrase_becomes_standing_still():
    cap = ("a small white circle bouncing, a small green triangle sliding down and a small red triangle "
           "standing still on a dark blue background")
    assert still_caption(cap) == ("a small white circle standing still, a small green triangle standing still and a "
                                  "small red triangle standing still on a dark blue background")
    assert still_caption("a red ball Falling on a white background") == "a red ball standing still on a white background"
    assert still_caption("a blue square moving left") == "a blue square standing still"


def test_no_motion_no_contrast_and_bad_input():
    assert still_caption("a large red square standing still on a black background") is None
    assert still_caption("a red circle on a black background") is None
    assert still_caption("") is None
    assert still_caption("a falcon in flight") is None  # whole words only: no "falling" inside another word
    with pytest.raises(ValueError, match="string"):
        still_caption(None)


def test_the_held_out_captions_that_move_all_get_a_contrast():
    caps = heldout_captions()
    moving = [c for c in caps if any(m in c for m in ("bouncing", "falling", "sliding"))]
    assert moving and all(still_caption(c) is not None for c in moving)
    assert all(not any(m in still_caption(c) for m in ("bouncing", "falling", "sliding")) for c in moving)


def test_reversed_caption_turns_every_slide_around():
    cap = "a red circle sliding left, a blue square sliding up and a cyan circle falling on a black background"
    assert reversed_caption(cap) == ("a red circle sliding right, a blue square sliding down and a cyan circle "
                                     "falling on a black background")
    assert reversed_caption("a red circle bouncing on a black background") is None
    assert contrast_caption(cap, "reversed") == reversed_caption(cap)
    assert contrast_caption(cap) == still_caption(cap)
    with pytest.raises(ValueError, match="unknown motion contrast"):
        contrast_caption(cap, "sideways")


def test_unslid_caption_stills_bouncing_and_falling_and_keeps_slides():
    text = "a small white circle bouncing, a green triangle sliding down and a red square falling on a black background"
    assert unslid_caption(text) == ("a small white circle standing still, a green triangle sliding down and a red "
                                    "square standing still on a black background")
    assert unslid_caption("a red circle sliding left on a black background") is None
    assert unslid_caption("a red circle standing still") is None
    with pytest.raises(ValueError):
        unslid_caption(None)
