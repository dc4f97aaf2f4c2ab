"""The fixed held-out caption list: well formed, rendered by its seeds, kept out of written datasets,
and the evaluation's prompt order."""
import json

from kinema.data.heldout import draw_captions, heldout_captions, heldout_seed, is_heldout
from kinema.data.synthetic import sample_scene, write_dataset
from kinema.eval.run import heldout_prompts, render_caption


def test_list_is_distinct_and_each_seed_renders_its_caption():
    caps = heldout_captions()
    assert len(caps) == 128 and len(set(caps)) == 128
    for c in caps:
        assert sample_scene(heldout_seed(c)).caption == c
    assert heldout_seed("a purple elephant") is None and not is_heldout("a purple elephant")


def test_list_is_what_draw_captions_cuts():
    """The file is reproducible: the first listed captions are the first distinct scene captions
    from the held-out seed on, less the training captions it was cut against (none of these)."""
    listed = heldout_captions()
    # the list skips only captions of training seeds 0-5999: what it keeps comes in the same order
    kept = [c for _, c in draw_captions(10, exclude=frozenset()) if is_heldout(c)]
    assert kept and kept == listed[: len(kept)]
    assert not any(is_heldout(sample_scene(s).caption) for s in range(300))  # the training seeds stay clear


def test_write_dataset_skips_heldout_captions(tmp_path, capsys):
    first = heldout_seed(heldout_captions()[0])  # a seed whose scene is an evaluation prompt
    n_listed = sum(is_heldout(sample_scene(s).caption) for s in range(first, first + 4))
    assert 0 < n_listed < 4
    manifest = write_dataset(tmp_path, clips=4, seconds=0.25, size=(32, 32), fps=4.0, seed=first, workers=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 4 - n_listed and not any(is_heldout(r["caption"]) for r in rows)
    assert f"skipped {n_listed} seed(s)" in capsys.readouterr().out


def test_eval_prompts_are_the_list_in_order():
    caps = heldout_captions()
    assert heldout_prompts(48) == caps[:48]
    assert heldout_prompts(3, exclude={caps[0]}) == caps[1:4]  # a clash with a training manifest is skipped
    more = heldout_prompts(130)
    assert more[:128] == caps and len(set(more)) == 130
    frames = render_caption(caps[5], 0.5, 32, 32, 8.0)
    assert frames is not None and frames.caption == caps[5]
