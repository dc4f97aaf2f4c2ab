"""`kinema generate / continue / bridge / v2a`: playable mp4s with sound, one-line user errors."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kinema.cli import main
from kinema.media import read_video
from kinema.pipeline import Pipeline, random_pipeline
from conftest import load_script

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "model"
    random_pipeline(seed=0).save_pretrained(d)
    return d


def _run(*argv) -> int:
    return main([str(a) for a in argv])


def test_generate_continue_bridge_v2a(model_dir, tmp_path):
    g, c, b, v = (tmp_path / f"{n}.mp4" for n in "gcbv")
    m = ["--model", model_dir, "--quiet"]
    assert _run("generate", "a red circle", "--seconds", 2, "-o", g, "--seed", 1, *m) == 0
    clip = read_video(g)
    assert clip.num_frames == 16 and clip.fps == 8 and clip.audio is not None
    assert _run("continue", g, "--seconds", 1.5, "-o", c, "--prompt", "a red circle", *m) == 0
    assert read_video(c).num_frames == 16 + 12
    assert _run("continue", g, "--backward", "--seconds", 1, "-o", tmp_path / "e.mp4", *m) == 0
    assert read_video(tmp_path / "e.mp4").num_frames == 8 + 16
    assert _run("bridge", g, c, "-o", b, "--seconds", 1, *m) == 0
    assert read_video(b).num_frames == 16 + 8 + 28
    assert _run("v2a", g, "-o", v, *m) == 0
    out = read_video(v)
    assert out.num_frames == 16 and out.audio is not None and out.audio.abs().max() > 0
    png = tmp_path / "first.png"
    import av
    with av.open(str(png), "w") as f:  # a one-frame png for --image
        s = f.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 40, 24, "rgb24"
        import numpy as np
        fr = av.VideoFrame.from_ndarray(np.full((24, 40, 3), 90, np.uint8), format="rgb24")
        for p in s.encode(fr):
            f.mux(p)
        for p in s.encode():
            f.mux(p)
    assert _run("generate", "a red circle", "--image", png, "--seconds", 1, "--no-audio", "-o", g, *m) == 0
    assert read_video(g).audio is None


@pytest.mark.parametrize("argv,needle", [
    (["generate", "x", "--seconds", "-2"], "seconds must be positive"),
    (["generate", "x", "--seconds", "100000"], "maximum"),
    (["generate", "x", "--size", "4096x4096"], "larger than"),
    (["generate", "x", "--size", "36x32"], "multiples of 8"),
    (["continue", "/no/such/file.mp4"], "no such file"),
    (["generate", "x", "--guidance", "3", "--guidance-plausibility", "1.5"], "guidance_plausibility must be in [0, 1)"),
    (["generate", "x", "--candidates", "4"], "needs a caption_scorer component"),
    (["generate", "x", "--motion-guidance", "-1"], "motion_guidance must be a finite number >= 0"),
])
def test_user_errors_exit_2_one_line(model_dir, tmp_path, capsys, argv, needle):
    rc = _run(*argv, "-o", tmp_path / "x.mp4", "--model", model_dir, "--quiet")
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()


def test_missing_model_dir_is_one_line_in_a_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kinema.cli", "generate", "x", "-o", str(tmp_path / "x.mp4"),
                        "--model", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_writes_a_valid_partial_mp4(model_dir, tmp_path, monkeypatch):
    real = Pipeline._lm
    seen = {"n": 0}

    def interrupt(self, task, *a, **k):
        if task == "continue":
            seen["n"] += 1
            if seen["n"] == 2:
                raise KeyboardInterrupt
        return real(self, task, *a, **k)

    monkeypatch.setattr(Pipeline, "_lm", interrupt)
    out = tmp_path / "long.mp4"
    assert _run("generate", "x", "--seconds", 30, "-o", out, "--model", model_dir, "--quiet") == 130
    clip = read_video(out)
    assert clip.num_frames == 9 + 8  # first window + one continuation window, then Ctrl-C


def test_continue_video_batch_script(model_dir, tmp_path):
    mod = load_script("continue_video")
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    assert _run("generate", "x", "--seconds", 1, "-o", src / "a.mp4", "--model", model_dir, "--quiet") == 0
    (src / "broken.mp4").write_bytes(b"not a video")
    assert mod.main([str(src), str(dst), "--seconds", "1", "--model", str(model_dir)]) == 1  # one failed
    assert read_video(dst / "a.mp4").num_frames == 16 and not (dst / "broken.mp4").exists()
    stamp = (dst / "a.mp4").stat().st_mtime_ns
    mod.main([str(src), str(dst), "--seconds", "1", "--model", str(model_dir)])  # resumes: skips done
    assert (dst / "a.mp4").stat().st_mtime_ns == stamp


def test_eval_passes_sampling_options_and_records_them(model_dir, tmp_path, monkeypatch):
    """`kinema eval --guidance/--guidance-later/--top-k` reach every generation call and are written into
    the summary."""
    import json

    seen = []
    real_call = Pipeline.__call__

    def spy(self, *a, **k):
        seen.append((k.get("guidance_scale"), k.get("guidance_plausibility"), k.get("top_k"), k.get("guidance_later"),
                     k.get("motion_guidance"), k.get("plausibility_later"), k.get("still_guidance")))
        return real_call(self, *a, **k)

    monkeypatch.setattr(Pipeline, "__call__", spy)
    out = tmp_path / "eval"
    assert _run("eval", "--model", model_dir, "--prompts", 2, "--seconds", 1, "--guidance", 2.5, "--top-k", 40,
                "--guidance-plausibility", 0.05, "--guidance-later", 1.5, "--motion-guidance", 2,
                "--plausibility-later", 0.01, "--still-guidance", 0.5, "--out", out) == 0
    assert seen == [(2.5, 0.05, 40, 1.5, 2.0, 0.01, 0.5)] * 2
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["settings"]["guidance_scale"] == 2.5 and summary["settings"]["top_k"] == 40
    assert summary["settings"]["guidance_plausibility"] == 0.05 and summary["settings"]["guidance_later"] == 1.5
    assert summary["settings"]["plausibility_later"] == 0.01 and summary["settings"]["still_guidance"] == 0.5
    assert summary["settings"]["motion_guidance"] == 2.0 and summary["settings"]["motion_contrast"] == "still"
    assert summary["settings"]["temperature"] == Pipeline.from_pretrained(model_dir).config.temperature
    assert "guidance_scale" in (out / "report.html").read_text()


def test_eval_first_frame_truth_generates_from_the_worlds_own_frame(model_dir, tmp_path, monkeypatch):
    """`kinema eval --first-frame truth` hands each prompt's rendered first frame to the pipeline
    (image-to-video) and says so in the summary; the DiT backend, which has no image-to-video, is refused."""
    import json

    import numpy as np

    from kinema.eval.run import heldout_prompts, render_caption

    images = []
    real_call = Pipeline.__call__

    def spy(self, *a, **k):
        images.append(k.get("image"))
        return real_call(self, *a, **k)

    monkeypatch.setattr(Pipeline, "__call__", spy)
    out = tmp_path / "eval"
    assert _run("eval", "--model", model_dir, "--prompts", 2, "--seconds", 1, "--first-frame", "truth",
                "--no-refine", "--out", out) == 0
    cfg = Pipeline.from_pretrained(model_dir).config
    for img, prompt in zip(images, heldout_prompts(2)):
        want = render_caption(prompt, 1.0 / cfg.fps, cfg.size[0], cfg.size[1], cfg.fps).frames[0].numpy()
        assert img is not None and np.array_equal(img, want)
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["settings"]["first_frame"] == "truth"
    assert summary["generated"]["clips"] == 2
    assert _run("eval", "--model", model_dir, "--prompts", 1, "--seconds", 1, "--first-frame", "truth",
                "--backend", "dit", "--out", tmp_path / "e2") != 0
