"""The evaluation's detector and metrics: near-perfect on ground-truth synthetic clips, low on
noise, pixel-shuffled frames or a different scene, so the evaluation cannot pass everything."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinema.data.synthetic import generate
from kinema.eval.detector import detect_frame, detect_frames
from kinema.eval.metrics import audio_onsets, evaluate_clip, parse_caption
from kinema.eval.run import summarize
from conftest import load_script

SEEDS = range(2000, 2012)


@pytest.fixture(scope="module")
def clips():
    torch.set_num_threads(1)
    return [generate(s, size=(96, 96), seconds=3.0) for s in SEEDS]


def test_parse_caption_round_trip(clips):
    for c in clips:
        objs, bg = parse_caption(c.caption)
        assert bg == c.scene.background
        assert [(o.color, o.shape, o.size, o.motion) for o in objs] == \
            [(o.color, o.shape, o.size, o.motion) for o in c.scene.objects]
    assert parse_caption("a photo of a dog") == ([], None)


def test_detector_recovers_truth(clips):
    hits = total = 0
    for c in clips:
        dets = detect_frames(c.frames)
        H, W = c.frames.shape[1:3]
        for t, row in enumerate(c.truth):
            for o in row:
                x0, y0, x1, y1 = o["bbox"]
                if o["visible"] < 0.99 or x0 < 0 or y0 < 0 or x1 > W - 1 or y1 > H - 1:
                    continue  # fully visible, not cut by (or wrapping over) the frame edge
                total += 1
                d = next((d for d in dets[t] if d.color == o["color"]), None)
                hits += d is not None and d.shape == o["shape"] and abs(d.x - o["x"]) < 1.5 and abs(d.y - o["y"]) < 1.5
    assert total > 100
    assert hits / total > 0.95


def test_metrics_high_on_truth_low_on_noise_shuffle_and_other_scene(clips):
    g = torch.Generator().manual_seed(0)
    truth, noise, shuffled, other = [], [], [], []
    for i, c in enumerate(clips):
        truth.append(evaluate_clip(c.frames, c.caption, c.fps, c.audio, c.sample_rate))
        noise.append(evaluate_clip(torch.randint(0, 256, c.frames.shape, generator=g, dtype=torch.uint8), c.caption, c.fps))
        flat = c.frames.reshape(-1, 3)
        shuffled.append(evaluate_clip(flat[torch.randperm(len(flat), generator=g)].reshape(c.frames.shape), c.caption, c.fps))
        o = clips[(i + 5) % len(clips)]
        if o.caption != c.caption:
            other.append(evaluate_clip(o.frames, c.caption, c.fps))

    def mean(rs, k):
        v = [r[k] for r in rs if r[k] is not None]
        return float(np.mean(v)) if v else 0.0

    assert mean(truth, "aligned") >= 0.9
    assert mean(truth, "motion_correct") >= 0.8
    assert mean(truth, "frames_all_objects") >= 0.75  # true occlusions count as misses
    sync = [r["av"]["within_one_frame"] for r in truth if r["av"]["within_one_frame"] is not None]
    assert sync and np.mean(sync) >= 0.8
    for bad in (noise, shuffled):
        assert mean(bad, "aligned") == 0.0
        assert mean(bad, "frames_all_objects") < 0.05
    assert mean(other, "aligned") < 0.3
    assert mean(other, "frames_all_objects") < 0.4


def test_time_shuffle_breaks_motion(clips):
    g = torch.Generator().manual_seed(1)
    moving = [c for c in clips if any(o.motion != "static" for o in c.scene.objects)]
    true_m = [evaluate_clip(c.frames, c.caption, c.fps)["motion_correct"] for c in moving]
    shuf_m = [evaluate_clip(c.frames[torch.randperm(len(c.frames), generator=g)], c.caption, c.fps)["motion_correct"]
              for c in moving]
    assert np.mean([m or 0 for m in shuf_m]) < np.mean([m or 0 for m in true_m]) - 0.3


def test_slide_speed_and_motion_by_kind(clips):
    """Renders slide along their captioned direction at a few px/frame; frozen or reversed clips do not."""
    truth = [evaluate_clip(c.frames, c.caption, c.fps) for c in clips]
    frozen = [evaluate_clip(c.frames[:1].expand_as(c.frames).contiguous(), c.caption, c.fps) for c in clips]
    backward = [evaluate_clip(c.frames.flip(0), c.caption, c.fps) for c in clips]

    def speeds(rs):
        return [m["slide_speed"] for r in rs for m in r["motions"] if m["slide_speed"] is not None]

    assert len(speeds(truth)) >= 5
    assert 2.0 < np.median(speeds(truth)) < 10.0
    assert max(abs(v) for v in speeds(frozen)) < 0.5
    assert np.median(speeds(backward)) < -2.0
    s = summarize(truth)
    assert s["slide_speed_px_per_frame"] == pytest.approx(np.median(speeds(truth)))
    assert set(s["motion_by_kind"]) <= {"static", "sliding", "bouncing", "falling"} and "sliding" in s["motion_by_kind"]
    assert s["motion_by_kind"]["sliding"] >= 0.8
    assert summarize(frozen)["motion_by_kind"]["sliding"] == 0.0


def test_audio_onsets_and_bad_input():
    sr = 16000
    wav = np.zeros(sr, np.float32)
    for t in (0.2, 0.55):
        n = int(t * sr)
        wav[n: n + 800] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / sr)
    on = audio_onsets(wav, sr)
    assert len(on) == 2 and abs(on[0] - 0.2) < 0.01 and abs(on[1] - 0.55) < 0.01
    assert audio_onsets(np.zeros(sr, np.float32), sr) == []
    with pytest.raises(ValueError):
        detect_frame(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        evaluate_clip(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "a photo of a dog", 8.0)


def test_evaluate_pipeline_report_with_the_world_as_generator(tmp_path):
    """The synthetic world's own render as the 'generator' scores perfectly; report files appear."""
    from kinema.eval.run import evaluate_pipeline, heldout_prompts, render_caption
    from kinema.pipeline_io import GenerationOutput

    seeds = []

    def gen(prompt, seconds, seed):
        seeds.append(seed)
        c = render_caption(prompt, seconds, 64, 64, 8.0)
        return GenerationOutput(c.frames, 8.0, c.audio, c.sample_rate)

    prompts = heldout_prompts(2, exclude={heldout_prompts(1)[0]})
    assert len(set(prompts)) == 2 and heldout_prompts(1)[0] not in prompts
    s = evaluate_pipeline(gen, prompts, 2.0, tmp_path, seed=100)
    assert seeds == [100, 101] and s["seed"] == 100
    assert s["generated"]["prompt_alignment"] == 1.0
    assert (tmp_path / "report.html").is_file() and (tmp_path / "results.json").is_file()
    assert len(list((tmp_path / "gifs").glob("*.gif"))) == 2


def test_frechet_distance_and_classifier_features():
    from kinema.eval.frechet import ClassifierConfig, VideoClassifier, clip_input, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 4))
    assert frechet_distance(a, a) < 1e-6
    shifted = frechet_distance(a, a + 2.0)
    assert abs(shifted - 16.0) < 0.5  # ||mu||^2 = 4 * 2^2, same covariance
    assert frechet_distance(a, rng.normal(size=(200, 4)) * 3) > 5.0
    cfg = ClassifierConfig(frames=8, size=32, channels=[4, 8])
    clf = VideoClassifier(cfg)
    x = clip_input(generate(1, size=(48, 48), seconds=0.5).frames, cfg)  # 4 frames: padded to 8
    assert x.shape == (3, 8, 32, 32) and x.min() >= -1 and x.max() <= 1
    out = clf(x[None])
    assert clf.features(x[None]).shape == (1, 8) and out["color"].shape == (1, 8) and out["shape"].shape == (1, 3)
    assert out["count"].shape == (1, 3) and out["background"].shape == (1, 4)


def test_classifier_labels_are_what_the_clip_shows():
    """Presence labels name every object's colour/shape/motion (order-free); loss and accuracy agree with them."""
    from kinema.data.synthetic import sample_scene
    from kinema.eval.frechet import (CLASS_HEADS, HEADS, PRESENCE_HEADS, classifier_accuracy, classifier_loss,
                                     labels_of)

    scene = sample_scene(11, num_objects=3)
    y = labels_of(scene)
    assert set(y) == set(HEADS)
    for k, names in PRESENCE_HEADS.items():
        assert {n for n, v in zip(names, y[k].tolist()) if v} == {getattr(o, k) for o in scene.objects}
    assert CLASS_HEADS["count"][int(y["count"])] == "3" and CLASS_HEADS["background"][int(y["background"])] == scene.background
    batch = {k: v[None] for k, v in y.items()}
    perfect = {k: (v * 20 - 10) for k, v in batch.items() if k in PRESENCE_HEADS}
    perfect.update({k: F.one_hot(batch[k], len(CLASS_HEADS[k])).float() * 20 for k in CLASS_HEADS})
    assert all(a == 1.0 for a in classifier_accuracy(perfect, batch).values())
    assert float(classifier_loss(perfect, batch)) < 1e-3
    wrong = {k: -v for k, v in perfect.items()}
    assert all(a == 0.0 for a in classifier_accuracy(wrong, batch).values()) and float(classifier_loss(wrong, batch)) > 10


def test_frechet_distance_with_fewer_clips_than_dimensions_matches_the_eigenvalue_form():
    """Singular covariances (N < D, the usual case here) give the exact value, without a matrix sqrt."""
    from kinema.eval.frechet import frechet_distance

    rng = np.random.default_rng(3)
    a, b = np.maximum(rng.normal(size=(12, 40)), 0), np.maximum(rng.normal(size=(12, 40)) * 2 - 0.5, 0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ev = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum()
    assert abs(frechet_distance(a, b) - want) < 1e-6 * want
    assert abs(frechet_distance(a, a)) < 1e-6


def test_frechet_vs_real_puts_renders_at_the_floor_and_noise_far_above():
    from kinema.eval.run import frechet_vs_real

    g = torch.Generator().manual_seed(0)
    renders = [generate(900 + i, size=(96, 96), seconds=2.0).frames for i in range(8)]
    noise = [torch.randint(0, 256, (16, 96, 96, 3), generator=g, dtype=torch.uint8) for _ in range(8)]
    r = frechet_vs_real(renders, n_real=64, floor_sets=2)
    n = frechet_vs_real(noise, n_real=64, floor_sets=2)
    lo, hi = r["frechet_real_vs_real_range"]
    assert 0 <= lo <= r["frechet_real_vs_real"] <= hi and r["n_generated"] == 8 and r["n_real"] == 64
    assert r["frechet_generated_vs_real"] < 1.5 * hi
    assert n["frechet_generated_vs_real"] > 3 * r["frechet_real_vs_real"]


def test_detector_never_reports_white_on_white():
    """The world draws no white object on a white background, so an off-white patch there is background;
    the same patch on black is a white object."""
    from kinema.data.synthetic import BACKGROUNDS, object_colors

    assert "white" not in object_colors("white") and all("white" in object_colors(b) for b in BACKGROUNDS if b != "white")
    with pytest.raises(ValueError):
        object_colors("purple")
    for bg, found in (("white", []), ("black", ["white"])):
        f = np.full((64, 64, 3), BACKGROUNDS[bg], np.uint8)
        f[10:30, 10:30] = 242
        f[40:56, 40:56] = (230, 40, 40)
        assert sorted(d.color for d in detect_frame(f, bg)) == sorted(found + ["red"])


def test_train_video_classifier_script_runs_and_saves_a_loadable_model(tmp_path, capsys):
    import json

    from kinema.eval.frechet import HEADS, VideoClassifier

    mod = load_script("train_video_classifier")
    assert mod.main(["--clips", "20", "--steps", "3", "--batch", "4", "--out", str(tmp_path / "clf")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["heldout_accuracy"]) == set(HEADS)
    clf = VideoClassifier.from_pretrained(tmp_path / "clf")
    assert set(clf.heads) == set(HEADS)
    assert mod.main(["--clips", "5", "--out", str(tmp_path / "x")]) == 2


def test_alignment_parts_say_whether_colours_or_shapes_fail():
    """A render with one object's shape swapped keeps the colours but fails on shape; one with a colour
    swapped fails on colours. The breakdown tells the two apart where 'aligned' is False for both."""
    from dataclasses import replace

    from kinema.data.synthetic import object_colors, render, sample_scene

    scene = next(sc for sc in map(sample_scene, range(3000, 3100))
                 if len(sc.objects) == 1 and sc.objects[0].size == "large" and sc.objects[0].motion == "static")
    o = scene.objects[0]
    other_shape = next(s for s in ("square", "circle", "triangle") if s != o.shape)
    other_color = next(c for c in object_colors(scene.background) if c != o.color)
    cases = {"truth": scene, "shape": replace(scene, objects=[replace(o, shape=other_shape)]),
             "color": replace(scene, objects=[replace(o, color=other_color)])}
    r = {k: evaluate_clip(render(sc, (96, 96), 8.0, 1.0).frames, scene.caption, 8.0) for k, sc in cases.items()}
    assert r["truth"]["aligned"] and r["truth"]["colors_aligned"] and r["truth"]["shapes_right"] == 1.0
    assert not r["shape"]["aligned"] and r["shape"]["colors_aligned"] and r["shape"]["shapes_right"] == 0.0
    assert not r["color"]["aligned"] and not r["color"]["colors_aligned"] and r["color"]["shapes_right"] is None


def _clip(caption, aligned, speed):
    return {"caption": caption, "aligned": aligned, "colors_aligned": aligned, "shapes_right": float(aligned),
            "motion_correct": 1.0, "frames_all_objects": 0.5, "reappeared": None,
            "motions": [{"motion": "sliding up", "correct": speed > 2, "slide_speed": speed}],
            "av": {"within_one_frame": None, "mean_abs_offset_frames": None}}


def test_paired_bootstrap_separates_a_real_gap_from_none(tmp_path):
    """Same prompts: B right where A is wrong gives a positive gap whose interval excludes 0; A against
    itself gives 0 with a zero-width interval; runs of other prompts are refused."""
    import json

    from kinema.eval.compare import load_runs, paired_bootstrap

    rng = np.random.default_rng(0)
    caps = [f"prompt {i}" for i in range(40)]
    a_hits = rng.random(40) < 0.2
    for name, clips in {"a": [_clip(c, bool(h), 1.0) for c, h in zip(caps, a_hits)],
                        "a2": [_clip(c, False, 1.5) for c in caps],
                        "b": [_clip(c, True, 5.0) for c in caps],
                        "other": [_clip(c + "!", True, 5.0) for c in caps]}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"summary": {}, "clips": clips}))
    a = load_runs([tmp_path / "a", tmp_path / "a2"])  # two draws per prompt, pooled
    assert len(a) == 40 and len(a[0]) == 2
    b = load_runs([tmp_path / "b"])
    r = paired_bootstrap(a, b, boot=200)["metrics"]
    assert r["prompt_alignment"]["b"] == 1.0 and r["prompt_alignment"]["a"] == pytest.approx(a_hits.mean() / 2)
    assert r["prompt_alignment"]["interval"][0] > 0
    assert r["slide_speed_px_per_frame"]["diff"] > 3
    assert r["reappeared"]["diff"] is None  # no clip had an object vanish
    same = paired_bootstrap(a, a, boot=50)["metrics"]["prompt_alignment"]
    assert same["diff"] == 0 and same["interval"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="other prompts"):
        load_runs([tmp_path / "a", tmp_path / "other"])
    with pytest.raises(FileNotFoundError):
        load_runs([tmp_path / "missing"])
