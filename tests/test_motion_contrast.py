"""Motion guidance's contrast prompt: the caption with its motion standing still."""
from __future__ import annotations

import pytest

from kinema.data.heldout import heldout_captions
from kinema.decode.motion_contrast import still_caption


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
