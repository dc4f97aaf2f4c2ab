"""kinema.Pipeline end to end with tiny random components: every task, any length, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kinema
from kinema.errors import ResourceError
from kinema.media import Clip, read_video
from kinema.pipeline import GenerationOutput, Pipeline, PipelineConfig, random_pipeline

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return random_pipeline(seed=0)


def _clip(frames: int = 13, size: int = 48, fps: float = 8.0, audio: bool = True) -> Clip:
    g = torch.Generator().manual_seed(frames)
    x = torch.randint(0, 256, (frames, size, size, 3), dtype=torch.uint8, generator=g)
    wav = torch.randn(2, int(16000 * frames / fps), generator=g) * 0.1 if audio else None
    return Clip(x, fps, wav, 16000 if audio else None)


def _check(out: GenerationOutput, frames: int, audio: bool = True) -> None:
    assert out.video.dtype == torch.uint8 and out.video.shape == (frames, 32, 32, 3)
    assert out.fps == 8.0
    if audio:
        assert out.audio.dtype == torch.float32 and out.audio.dim() == 2
        assert out.audio.shape[1] == round(frames / 8.0 * out.sample_rate)  # audio as long as the video
        assert torch.isfinite(out.audio).all()
    else:
        assert out.audio is None


def test_exported_from_package():
    assert kinema.Pipeline is Pipeline and kinema.GenerationOutput is GenerationOutput


@pytest.mark.parametrize("seconds,frames", [(1.0, 8), (2.0, 16), (3.5, 28)])
def test_text_to_video_exact_length(pipe, seconds, frames):
    out = pipe("a red circle bouncing", seconds=seconds, seed=0)
    assert out.task == "t2v"
    _check(out, frames)
    assert out.tokens["video"].shape[1:] == (4, 4)
    assert out.tokens["audio"].shape[0] == 2


def test_text_to_image(pipe):
    out = pipe("a blue square", seconds=0, seed=0)
    assert out.task == "t2i"
    _check(out, 1, audio=False)
    assert pipe("a blue square", task="image", seed=0).video.shape[0] == 1


def test_image_to_video_starts_from_the_image(pipe):
    img = np.full((40, 56, 3), 200, dtype=np.uint8)  # other size: resized
    out = pipe("a red circle", image=img, seconds=1.5, seed=1)
    assert out.task == "i2v"
    _check(out, 12)
    # latent 0 is the encoded image: the first frame is the decoded image code, not LM output
    first = pipe._decode_video(pipe._encode_frames(torch.full((1, 32, 32, 3), 200, dtype=torch.uint8)).unsqueeze(0))
    want = ((first[0, :, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
    assert (out.video[0].float() - want).abs().max() <= 2  # bf16 rounding only (causal decoder)
    assert (out.video[0].float() - out.video[-1].float()).abs().max() > 2


def test_continue_keeps_the_clip_and_adds_exactly(pipe):
    clip = _clip(13)
    out = pipe("x", video=clip, seconds=2.0, seed=0)
    assert out.task == "continue"
    _check(out, 13 + 16)
    from kinema.media import resize_frames
    assert torch.equal(out.video[:13], resize_frames(clip.frames, (32, 32)))


def test_short_clip_is_handled(pipe):
    out = pipe(None, video=_clip(2, audio=False), seconds=1.0, seed=0)
    _check(out, 2 + 8)


def test_extend_back_and_bridge(pipe):
    clip = _clip(9)
    out = pipe("x", video=clip, task="extend_back", seconds=1.25, seed=0)
    _check(out, 10 + 9)
    out = pipe("x", video=clip, video_after=_clip(5), seconds=3.0, seed=0)
    assert out.task == "bridge"
    _check(out, 9 + 24 + 5)
    assert [s["task"] for s in out.stats if s["task"] != "v2a"][-1] == "bridge"


def test_video_to_audio_and_audio_to_video(pipe):
    clip = _clip(20)
    out = pipe(None, video=clip, task="video_to_audio", seed=0)
    assert out.task == "v2a"
    _check(out, 20)
    out2 = pipe(None, video=clip, task="v2a", seed=0)
    assert torch.equal(out.audio, out2.audio)
    out = pipe(None, audio=(torch.randn(16000 * 2) * 0.1, 16000), seed=0)
    assert out.task == "a2v"
    _check(out, 16)


def test_same_seed_same_output_and_generator(pipe):
    a = pipe("a red circle", seconds=2.0, seed=3, temperature=1.0, top_k=20)
    b = pipe("a red circle", seconds=2.0, seed=3, temperature=1.0, top_k=20)
    c = pipe("a red circle", seconds=2.0, seed=4, temperature=1.0, top_k=20)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.tokens["video"], c.tokens["video"])
    g = torch.Generator().manual_seed(3)
    d = pipe("a red circle", seconds=2.0, generator=g, temperature=1.0, top_k=20)
    assert torch.equal(a.tokens["video"], d.tokens["video"])


def test_guidance_and_negative_prompt_run(pipe):
    out = pipe("a red circle", seconds=1.0, seed=0, guidance_scale=3.0, negative_prompt="blue")
    _check(out, 8)
    plain = pipe("a red circle", seconds=1.0, seed=0)
    assert not torch.equal(out.tokens["video"], plain.tokens["video"])
    # plausibility near 1 keeps only the conditional branch's best token: guided greedy == plain greedy
    greedy = pipe("a red circle", seconds=1.0, seed=0, temperature=0.0)
    kept = pipe("a red circle", seconds=1.0, seed=0, temperature=0.0, guidance_scale=3.0, guidance_plausibility=0.999)
    assert torch.equal(greedy.tokens["video"], kept.tokens["video"])


def test_guidance_later_guides_only_the_first_latent(pipe, monkeypatch):
    """guidance_later=1: the first latent is drawn as with full guidance; the later latents differ, and
    continuation windows run without the unconditional branch (one row instead of two)."""
    kw = dict(seconds=2.0, seed=0, guidance_scale=50.0, with_audio=False, temperature=1.0)
    full = pipe("a red circle", **kw)
    assert torch.equal(full.tokens["video"], pipe("a red circle", guidance_later=50.0, **kw).tokens["video"])
    rows: list[int] = []
    prefill = pipe.lm.prefill
    monkeypatch.setattr(pipe.lm, "prefill", lambda ids, *a, **k: rows.append(ids.shape[0]) or prefill(ids, *a, **k))
    first = pipe("a red circle", guidance_later=1.0, **kw)
    assert [s["task"] for s in first.stats] == ["t2v", "continue"]
    assert rows == [2, 1]  # guided first window, unguided continuation
    assert torch.equal(first.tokens["video"][:1], full.tokens["video"][:1])  # (t, h, w): latent 0
    assert not torch.equal(first.tokens["video"], full.tokens["video"])
    assert pipe.sampling_options(guidance_scale=3.0, guidance_later=1.5)["guidance_later"] == 1.5
    assert pipe.sampling_options(guidance_scale=3.0)["guidance_later"] == 3.0  # one scale alone: every latent
    saved = pipe.config
    try:
        pipe.config = PipelineConfig(size=(32, 32), guidance_scale=2.0, guidance_later=3.0)
        assert [pipe.sampling_options()[k] for k in ("guidance_scale", "guidance_later")] == [2.0, 3.0]
        assert pipe.sampling_options(guidance_scale=1.0)["guidance_later"] == 1.0  # off means off everywhere
        assert pipe.sampling_options(guidance_later=5.0)["guidance_scale"] == 2.0
    finally:
        pipe.config = saved


def test_plausibility_later_applies_only_after_the_first_latent(pipe, monkeypatch):
    """plausibility_later: the plausibility constraint on the latents guidance_later covers and the
    first latent's own value before them; greedy with 0.999 there is the conditional branch's greedy
    choice, so the first latent is drawn as with guidance alone and the rest as without guidance."""
    import kinema.pipeline as pipeline_mod

    seen: list[torch.Tensor] = []
    real = pipeline_mod.generate
    monkeypatch.setattr(pipeline_mod, "generate",
                        lambda *a, **k: seen.append(torch.as_tensor(k["guidance_plausibility"])) or real(*a, **k))
    kw = dict(seconds=1.0, seed=0, guidance_scale=3.0, with_audio=False, temperature=0.0)
    guided = pipe("a red circle", **kw)
    seen.clear()
    later = pipe("a red circle", plausibility_later=0.999, **kw)
    (sched,) = seen
    per_latent = pipe.vocab.video_tokens_per_code * int(later.tokens["video"][0].numel())
    assert float(sched[: 1 + per_latent].max()) == 0.0 and float(sched[1 + per_latent:].min()) == pytest.approx(0.999)
    assert torch.equal(later.tokens["video"][:1], guided.tokens["video"][:1])
    assert pipe.sampling_options(guidance_plausibility=0.1)["plausibility_later"] == 0.1  # alone: every latent
    assert pipe.sampling_options(plausibility_later=0.2)["guidance_plausibility"] == pipe.config.guidance_plausibility
    with pytest.raises(ValueError, match="plausibility_later must be in"):
        pipe("a red circle", plausibility_later=1.0, **kw)


def test_still_guidance_adds_its_own_contrast_beside_the_reversed_slides(pipe, monkeypatch):
    """still_guidance: one more row (the caption with its bouncing and falling standing still) beside
    motion guidance's, at its own scale, after the first latent; none for a prompt that names neither."""
    kw = dict(seconds=2.0, seed=0, guidance_scale=3.0, with_audio=False, temperature=1.0, motion_contrast="reversed")
    rows: list[int] = []
    prefill = pipe.lm.prefill
    monkeypatch.setattr(pipe.lm, "prefill", lambda ids, *a, **k: rows.append(ids.shape[0]) or prefill(ids, *a, **k))
    text = "a red circle bouncing and a blue square sliding left"
    reversed_only = pipe(text, motion_guidance=4.0, **kw)
    rows.clear()
    both = pipe(text, motion_guidance=4.0, still_guidance=40.0, **kw)
    assert rows == [4, 4]  # conditional, unconditional, reversed slides, bouncing standing still
    assert torch.equal(both.tokens["video"][:1], reversed_only.tokens["video"][:1])
    assert not torch.equal(both.tokens["video"], reversed_only.tokens["video"])
    rows.clear()
    pipe(text, motion_guidance=0.0, still_guidance=40.0, **kw)
    assert rows == [3, 3]  # the still contrast alone
    rows.clear()
    pipe("a blue square sliding left", motion_guidance=4.0, still_guidance=40.0, **kw)
    assert rows == [3, 3]  # no bouncing or falling: no still row
    with pytest.raises(ValueError, match="still_guidance"):
        pipe(text, still_guidance=float("nan"), **kw)


def test_motion_guidance_adds_a_still_contrast_after_the_first_latent(pipe, monkeypatch):
    """motion_guidance: a third row (the caption with its motion standing still) in every window that
    has latents after the first; the first latent is drawn as without it. A prompt that names no
    motion runs as without it."""
    kw = dict(seconds=2.0, seed=0, guidance_scale=3.0, with_audio=False, temperature=1.0)
    rows: list[int] = []
    prefill = pipe.lm.prefill
    monkeypatch.setattr(pipe.lm, "prefill", lambda ids, *a, **k: rows.append(ids.shape[0]) or prefill(ids, *a, **k))
    plain = pipe("a red circle sliding left", **kw)
    rows.clear()
    moved = pipe("a red circle sliding left", motion_guidance=40.0, **kw)
    assert rows == [3, 3]  # t2v window and continuation: conditional, unconditional, standing still
    assert torch.equal(moved.tokens["video"][:1], plain.tokens["video"][:1])
    assert not torch.equal(moved.tokens["video"], plain.tokens["video"])
    rows.clear()
    still = pipe("a red circle standing still", motion_guidance=40.0, **kw)
    assert rows == [2, 2] and torch.equal(still.tokens["video"], pipe("a red circle standing still", **kw).tokens["video"])
    with pytest.raises(ValueError, match="motion_guidance"):
        pipe("a red circle sliding left", motion_guidance=-1.0, **kw)
    with pytest.raises(ValueError, match="motion_contrast must be one of"):
        pipe("a red circle sliding left", motion_guidance=1.0, motion_contrast="sideways", **kw)
    rows.clear()  # the reversed contrast: a third row too, and other draws than the still one
    turned = pipe("a red circle sliding left", motion_guidance=40.0, motion_contrast="reversed", **kw)
    assert rows == [3, 3] and not torch.equal(turned.tokens["video"], moved.tokens["video"])
    rows.clear()
    pipe("a red circle falling", motion_guidance=40.0, motion_contrast="reversed", **kw)  # no slide to reverse
    assert rows == [2, 2]
    saved = pipe.config
    try:
        pipe.config = PipelineConfig(size=(32, 32), motion_guidance=2.0)
        assert pipe.sampling_options()["motion_guidance"] == 2.0
        assert pipe.sampling_options(motion_guidance=0.0)["motion_guidance"] == 0.0
    finally:
        pipe.config = saved


def test_constant_memory_per_window(pipe):
    """2 vs 10 windows: the same largest LM sequence and KV cache, cost per latent flat."""
    def video_stats(seconds):
        out = pipe("a red circle", seconds=seconds, seed=0, with_audio=False)
        s = [x for x in out.stats if x["task"] != "v2a"]
        return out, s

    short, s2 = video_stats(1.0 + 8 / 8)  # 16 frames: 5 latents = first window of 3 + 1 window of 2
    long_, s10 = video_stats(1.0 + 9 * 8 / 8)  # 80 frames: first window + 9 continuation windows
    assert len(s2) == 2 and len(s10) == 10
    assert max(x["cache_tokens"] for x in s10) == max(x["cache_tokens"] for x in s2)
    assert max(x["prefix_tokens"] for x in s10) == max(x["prefix_tokens"] for x in s2)
    assert {x["output_tokens"] for x in s10[1:]} == {s2[1]["output_tokens"]}  # same cost per window
    assert long_.video.shape[0] == 80
    assert long_.window_starts == [0] + list(range(9, 80, 8))  # 1 + 4*2 frames, then 4*2 per window


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    loaded = Pipeline.from_pretrained(tmp_path / "m")
    assert loaded.config == pipe.config
    a = pipe("a red circle", seconds=1.0, seed=5)
    b = loaded("a red circle", seconds=1.0, seed=5)
    assert torch.equal(a.tokens["video"], b.tokens["video"])
    path = a.save(tmp_path / "a.mp4")
    clip = read_video(path)
    assert clip.num_frames == 8 and clip.audio is not None


def test_ctrl_c_keeps_what_was_made(pipe, monkeypatch):
    real = pipe._lm
    calls = {"n": 0}

    def interrupt_third_window(task, *a, **k):
        if task != "v2a":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(task, *a, **k)

    monkeypatch.setattr(pipe, "_lm", interrupt_third_window)
    with pytest.raises(KeyboardInterrupt):
        pipe("x", seconds=4.0, seed=0)
    calls["n"] = 0
    out = pipe("x", seconds=4.0, seed=0, keep_partial=True)
    assert out.interrupted and out.video.shape[0] == 9 + 8  # two windows made
    assert out.audio.shape[1] == round(17 / 8 * out.sample_rate)


@pytest.mark.parametrize("kwargs,err", [
    (dict(seconds=-1.0), ValueError), (dict(seconds=float("nan")), ValueError),
    (dict(seconds=10_000.0), ResourceError), (dict(size=(4096, 4096)), ResourceError),
    (dict(size=(1024, 1024), fps=120.0, seconds=600.0), ResourceError), (dict(size=(30, 32)), ValueError), (dict(task="dance"), ValueError), (dict(backend="gan"), ValueError),
    (dict(task="i2v"), ValueError), (dict(task="continue"), ValueError), (dict(fps=0.0), ValueError),
    (dict(image=np.zeros((8, 8), dtype=np.float32)), ValueError), (dict(refine=True), ValueError),
])
def test_bad_requests_refused_up_front(pipe, kwargs, err):
    with pytest.raises(err) as e:
        pipe("a red circle", **kwargs)
    if kwargs.get("task") == "dance":
        assert "t2v" in str(e.value) and "video_to_audio" in str(e.value)


def test_mismatched_components_refused(pipe):
    other = random_pipeline(seed=1, config=PipelineConfig())
    from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig
    big = VideoTokenizer(VideoTokenizerConfig(base_channels=8, channel_mults=(1, 2, 2), codebook_bits=9))
    with pytest.raises(ValueError, match="video codebook"):
        Pipeline(big, other.ac, other.tt, other.lm)


def test_sound_track_is_one_continuous_stream(pipe):
    """Per-window audio codes decode with carried state: the track equals decoding all codes at once."""
    out = pipe("a red circle", seconds=3.0, seed=0)
    codes = out.tokens["audio"]  # (Q, n) over all windows
    assert codes.shape[1] == -(-out.audio.shape[1] // pipe.ac.hop_length)  # no drift beyond one frame
    whole = pipe.ac.decode(codes.unsqueeze(0))[0]
    torch.testing.assert_close(out.audio, whole[:, : out.audio.shape[1]], atol=2e-2, rtol=0)
