"""The synthetic world: determinism, truth matches pixels, tones at contacts, captions, physics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kinema.data.synthetic import COLORS, SIZES, generate, render, sample_scene, simulate


def test_deterministic_per_seed():
    a, b, c = generate(5), generate(5), generate(6)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio) and a.caption == b.caption
    assert not torch.equal(a.frames, c.frames)


@pytest.mark.parametrize("size", [(128, 128), (160, 96)])
def test_truth_matches_pixels(size):
    W, H = size
    checked = 0
    for seed in range(20, 30):
        clip = generate(seed, size=size, seconds=1.0)
        for k, row in enumerate(clip.truth):
            for obj in row:
                ext = obj["radius"] * 1.2
                inside = ext < obj["x"] < W - 1 - ext and ext < obj["y"] < H - 1 - ext
                if obj["visible"] < 0.999 or not inside:
                    continue
                colour = torch.tensor(COLORS[obj["color"]], dtype=torch.float32)
                mask = (clip.frames[k].float() - colour).abs().sum(-1) < 30
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert len(xs) > 0
                assert abs(xs.float().mean() - obj["x"]) < 1.5 and abs(ys.float().mean() - obj["y"]) < 1.5
                checked += 1
    assert checked > 20


def test_same_motion_at_any_resolution_and_fps():
    scene = sample_scene(3)
    lo = render(scene, (64, 64), fps=4, seconds=1.0)
    hi = render(scene, (128, 128), fps=8, seconds=1.0)
    for k in range(4):
        for a, b in zip(lo.truth[k], hi.truth[2 * k]):
            assert abs((a["x"] + 0.5) * 2 - (b["x"] + 0.5)) < 1e-6


def test_tones_land_on_contacts():
    found = 0
    for seed in range(40):
        clip = generate(seed, seconds=3.0)
        for t_hit, _, _ in clip.events:
            n = int(t_hit * clip.sample_rate)
            window = clip.audio[0, n : n + int(0.02 * clip.sample_rate)]
            assert window.abs().max() > 0.1
            found += 1
        if not clip.events:
            assert clip.audio.abs().max() == 0
    assert found >= 5


def test_caption_mentions_every_attribute():
    for seed in range(30):
        scene = sample_scene(seed)
        cap = scene.caption
        assert cap.endswith(f"on a {scene.background} background")
        for o in scene.objects:
            assert o.shape in cap and o.color in cap and o.size in cap
            assert ("standing still" if o.motion == "static" else o.motion) in cap


def test_physics_falling_accelerates_and_bouncing_reverses():
    scene = sample_scene(0, num_objects=1)
    o = scene.objects[0]
    o.motion, o.y, o.vx, o.vy = "falling", 0.2, 0.0, 0.0
    pos, events = simulate(scene, np.linspace(0, 0.3, 4))
    steps = np.diff(pos[:, 0, 1])
    assert (np.diff(steps) > 0).all()  # falling speeds up
    o.motion, o.x, o.y, o.vx, o.vy = "bouncing", 0.5, 0.5, 0.8, 0.0
    pos, events = simulate(scene, np.linspace(0, 1.5, 31))
    assert events and events[0][2] == "wall"
    xs = pos[:, 0, 0]
    assert xs.max() <= 1 - SIZES[o.size] + 1e-6 and (np.diff(xs) < 0).any()  # turned around


def test_bad_arguments():
    with pytest.raises(ValueError):
        render(sample_scene(0), (128, 64))  # aspect mismatch
    with pytest.raises(ValueError):
        generate(0, seconds=0)
    with pytest.raises(ValueError, match="width/height"):
        generate(0, size=(16, 256))
    with pytest.raises(ValueError):
        sample_scene(0, num_objects=0)


def test_synth_command(tmp_path, capsys):
    import json

    from kinema.cli import main

    assert main(["synth", "--out", str(tmp_path / "bad"), "--clips", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--clips", "2", "--seconds", "0.5", "--size", "64x48",
                 "--workers", "1", "--seed", "4"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in recs] == [4, 5] and all((tmp_path / r["path"]).is_file() for r in recs)
    assert recs[0]["caption"] == generate(4, size=(64, 48)).caption


def test_tone_onsets_within_one_frame_and_pitch_follows_shape():
    from kinema.data.synthetic import TONE_HZ

    checked = 0
    for seed in range(40):
        clip = generate(seed, seconds=3.0)
        sr, frame = clip.sample_rate, 1.0 / clip.fps
        a = clip.audio[0].numpy()
        for t_hit, i, _ in clip.events:
            lo = max(0, int((t_hit - frame) * sr))
            loud = np.nonzero(np.abs(a[lo:]) > 0.05)[0]
            assert len(loud), "no tone after a contact"
            assert abs((lo + loud[0]) / sr - t_hit) <= frame + 1.0 / sr
            alone = all(abs(t2 - t_hit) > 0.08 for t2, j, _ in clip.events if (t2, j) != (t_hit, i))
            n = int(round(t_hit * sr))
            if alone and n + 960 <= len(a):
                seg = a[n : n + 960] * np.hanning(960)
                spec = np.abs(np.fft.rfft(seg, 8 * 960))
                peak = np.argmax(spec) * sr / (8 * 960)
                assert abs(peak - TONE_HZ[clip.scene.objects[i].shape]) < 15
                checked += 1
        silent = np.ones(len(a), bool)
        for t_hit, _, _ in clip.events:
            n = int(round(t_hit * sr))
            silent[n : n + int(0.07 * sr)] = False
        assert np.abs(a[silent]).max(initial=0.0) == 0.0  # sound only at contacts
    assert checked >= 5


def test_occlusion_front_object_hides_back_one():
    from kinema.data.synthetic import Scene, SceneObject

    back = SceneObject("circle", "red", "large", "static", 0.5, 0.5, 0.0, 0.0)
    front = SceneObject("square", "blue", "small", "static", 0.55, 0.5, 0.0, 0.0)
    clip = render(Scene([back, front], "black"), (96, 96), seconds=0.25)
    t_back, t_front = clip.truth[0]
    assert t_front["visible"] > 0.99 and 0.3 < t_back["visible"] < 0.9
    cy, cx = int(t_front["y"]), int(t_front["x"])
    assert clip.frames[0, cy, cx].tolist() == list(COLORS["blue"])
    red = ((clip.frames[0].float() - torch.tensor(COLORS["red"]).float()).abs().sum(-1) < 30).sum().item()
    assert red > 0 and abs(red / (np.pi * t_back["radius"] ** 2) - t_back["visible"]) < 0.1


def test_colours_are_distinct_from_each_other_and_backgrounds():
    from kinema.data.synthetic import BACKGROUNDS

    names = list(COLORS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(np.subtract(COLORS[a], COLORS[b])).sum() > 100, (a, b)
    for seed in range(200):
        scene = sample_scene(seed)
        for o in scene.objects:
            assert np.abs(np.subtract(COLORS[o.color], BACKGROUNDS[scene.background])).sum() > 100


def test_shapes_touch_the_walls_at_contacts():
    from kinema.data.synthetic import shape_extent

    checked = 0
    for seed in range(60):
        scene = sample_scene(seed)
        _, events = simulate(scene, np.array([0.0, 4.0]))
        if not events:
            continue
        pos, _ = simulate(scene, np.array([t for t, _, _ in events]))
        for k, (t, i, kind) in enumerate(events):
            o = scene.objects[i]
            left, up, right, down = shape_extent(o.shape, o.radius)
            x, y = pos[k, i]
            gaps = [x - left, y - up, scene.aspect - x - right, 1 - y - down]
            assert min(gaps) > -0.01 and min(abs(g) for g in gaps) < 0.01, (seed, kind, gaps)
            if kind == "floor":
                assert abs(gaps[3]) < 0.01
            checked += 1
    assert checked > 20
