"""AR (LM) vs DiT (diffusion) generation on held-out synthetic-world prompts, same run, same judge.

Both paths turn the same held-out captions (:func:`kinema.eval.run.heldout_prompts`) into frames at
the same size/fps through the same video tokenizer, and are judged by the synthetic-world detector
(:func:`kinema.eval.metrics.evaluate_clip`: prompt alignment, motion, persistence). The synthetic
world's own renders of the captions give the detector's ceiling, and the same renders round-tripped
through the tokenizer give the ceiling of anything decoded by it. Cost is wall ms per output frame.
Used by ``scripts/bench_dit.py`` and ``scripts/bench_diffusion.py``.

    res = compare_ar_dit(prompts=8, seconds=2.0)   # flat dict: dit_*, ar_*, reference_*, ...
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from kinema.eval.metrics import evaluate_clip
from kinema.eval.run import heldout_prompts, render_caption, summarize
from kinema.pipeline_io import to_model, to_uint8


def dit_frames(gen, vt, ids: list[int], n_frames: int, size: tuple[int, int], steps: int, cfg_scale: float,
               seed: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames for one caption: latents window by window, decoded once."""
    W, H = size
    t = 1 + -(-(n_frames - 1) // vt.temporal_factor)
    grid = (H // vt.spatial_factor, W // vt.spatial_factor)
    z = gen.generate_long([ids], t, grid, window=5, guidance_scale=cfg_scale, steps=steps,
                          generator=torch.Generator().manual_seed(seed))
    return to_uint8(vt.decode_latents(z)[0, :, :n_frames])  # (T, H, W, 3)


def tokenizer_roundtrip(vt, frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> the same frames encoded, quantised and decoded by the video tokenizer."""
    from kinema.tokenizers.video import pad_frames

    return to_uint8(vt.decode(vt.encode(pad_frames(to_model(frames))))[0, :, :frames.shape[0]])


def caption_renders(captions: list[str], seconds: float, size: tuple[int, int], fps: float
                    ) -> list[tuple[torch.Tensor, str]]:
    """(uint8 frames, caption) of the synthetic world's own render of each held-out caption."""
    renders = [(render_caption(p, seconds, size[0], size[1], fps), p) for p in captions]
    return [(c.frames, p) for c, p in renders if c is not None]


def judge(frames_list: list[torch.Tensor], prompts: list[str], fps: float) -> dict:
    return summarize([evaluate_clip(f, p, fps) for f, p in zip(frames_list, prompts)])


def compare_ar_dit(prompts: int = 8, seconds: float = 2.0, fps: float = 8.0, size: tuple[int, int] = (128, 128),
                   dit_dir=None, video_tokenizer_dir=None, steps: int = 8, guidance: float = 3.0,
                   lm_pipeline_dir=None) -> dict:
    """Flat dict of the comparison; ``dit_speedup_vs_ar`` = AR ms/frame / DiT ms/frame.

    The AR side needs an LM (the embedded default's, or ``lm_pipeline_dir``); without one it is
    reported as not measured.
    """
    from kinema.decode.dit_generator import DiTGenerator
    from kinema.tokenizers.text import TextTokenizer
    from kinema.tokenizers.video import VideoTokenizer

    captions = heldout_prompts(prompts)
    n_frames = max(1, round(seconds * fps))
    vt = VideoTokenizer.from_pretrained(video_tokenizer_dir)
    tt = TextTokenizer.from_pretrained()
    gen = DiTGenerator.from_pretrained(dit_dir)
    res: dict = {"prompts": len(captions), "seconds": seconds, "fps": fps, "size": list(size),
                 "dit_steps": steps, "dit_guidance": guidance,
                 "dit_params_m": round(sum(p.numel() for p in gen.parameters()) / 1e6, 3)}

    frames, t0 = [], time.perf_counter()
    for i, p in enumerate(tqdm(captions, desc="DiT")):
        frames.append(dit_frames(gen, vt, tt.encode(p), n_frames, size, steps, guidance, i))
    dit_ms = 1000 * (time.perf_counter() - t0) / (len(captions) * n_frames)
    d = judge(frames, captions, fps)
    res.update({f"dit_{k}": v for k, v in d.items() if k != "clips"}, dit_ms_per_frame=round(dit_ms, 2))
    # the synthetic world's own renders: the ceiling the detector gives a perfect model
    refs = caption_renders(captions, seconds, size, fps)
    r = judge([f for f, _ in refs], [p for _, p in refs], fps)
    res.update({f"reference_{k}": v for k, v in r.items() if k in ("prompt_alignment", "motion_correct")})
    # the same renders through the tokenizer (encode, sign, decode): the ceiling for anything it decodes
    recs = [tokenizer_roundtrip(vt, f) for f, _ in refs]
    r = judge(recs, [p for _, p in refs], fps)
    res.update({f"tokenizer_roundtrip_{k}": v for k, v in r.items() if k in ("prompt_alignment", "motion_correct")})
    # text adherence the detector cannot see through the tokenizer: mean colour of each DiT clip vs its
    # own caption's round trip, and vs another caption's (shuffled); ratio < 1 means the text steers colour
    if len(recs) > 1:
        mc = [f.float().mean(dim=(0, 1, 2)) for f in frames[: len(recs)]]
        mr = [f.float().mean(dim=(0, 1, 2)) for f in recs]
        own = sum(float((g - t).abs().mean()) for g, t in zip(mc, mr)) / len(mr)
        other = sum(float((g - mr[(i + 1) % len(mr)]).abs().mean()) for i, g in enumerate(mc)) / len(mr)
        res.update(dit_color_err_own_caption=round(own, 2), dit_color_err_other_caption=round(other, 2),
                   dit_text_color_ratio=round(own / max(other, 1e-9), 3))

    try:
        import kinema

        pipe = kinema.Pipeline.from_pretrained(lm_pipeline_dir)
    except Exception as e:  # noqa: BLE001 - the AR side is optional here
        res["ar"] = f"not measured: no AR pipeline ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        return res
    frames, t0 = [], time.perf_counter()
    for i, p in enumerate(tqdm(captions, desc="AR")):
        frames.append(pipe(p, seconds=seconds, fps=fps, size=size, seed=i, with_audio=False).video)
    ar_ms = 1000 * (time.perf_counter() - t0) / (len(captions) * n_frames)
    r = judge(frames, captions, fps)
    res.update({f"ar_{k}": v for k, v in r.items() if k != "clips"}, ar_ms_per_frame=round(ar_ms, 2),
               dit_speedup_vs_ar=round(ar_ms / dit_ms, 3))
    res["dit_compute_s_per_video_s"] = round(dit_ms * fps / 1000, 3)
    res["ar_compute_s_per_video_s"] = round(ar_ms * fps / 1000, 3)
    return res
