"""Model directories on disk: the generation defaults (``pipeline.json``) and the components beside them.

A model directory holds one ``save_pretrained`` directory per component (``video_tokenizer``,
``audio_codec``, ``text_tokenizer``, ``lm`` and the optional ``dit``, ``diffusion_decoder`` and
``caption_scorer``) plus :class:`PipelineConfig` as ``pipeline.json``. :func:`load_components` and
:func:`save_components` read and write it; :func:`random_components` makes untrained tiny ones for
tests. Each returns the keyword arguments of ``kinema.pipeline.Pipeline``, which checks that they fit
together (vocabulary, code fingerprints).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kinema.checkpoint import atomic_write_text
from kinema.config import from_dict, to_dict
from kinema.errors import CheckpointError
from kinema.lm.model import KinemaLM, LMConfig
from kinema.lm.vocab import Vocab
from kinema.paths import DEFAULT_MODEL
from kinema.pipeline_io import MAX_SECONDS
from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig
from kinema.tokenizers.text import TextTokenizer
from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig

__all__ = ["CONFIG_NAME", "DEFAULT_MODEL", "PipelineConfig", "load_components", "save_components", "random_components"]

CONFIG_NAME = "pipeline.json"


@dataclass
class PipelineConfig:
    """Generation defaults stored beside the components (``pipeline.json``)."""

    fps: float = 8.0
    size: tuple[int, int] = (64, 64)  # (width, height)
    seconds: float = 2.0  # default length to generate
    window_latents: int = 5  # latents per LM window (condition + new)
    cond_latents: int = 2  # latents carried into the next window (~1 s at 8 fps, 4x temporal)
    dit_steps: int = 8  # Euler steps per window with backend="dit" (kinema-tiny: 32)
    refine: bool = False  # default of the call's refine= (needs a diffusion_decoder component)
    refine_steps: int = 1  # diffusion decoder head steps with refine=True (1 = its posterior mean, best PSNR)
    decode_context: int = 8  # past latents re-decoded before each new window (bounded: flat cost). With the
    # embedded tokenizer (8 s of Megamind.avi, 64x64) 8 is at most 1/255 off a whole-video decode; 4: up to 18/255
    guidance_scale: float = 1.0
    guidance_plausibility: float = 0.0  # with guidance: drop ids under this fraction of the best id's probability
    guidance_later: float | None = None  # guidance of the latents the caption does not decide alone (after a
    # text-to-video window's first latent, image-to-video and continuation windows); None: guidance_scale.
    # guidance_scale then covers the first latent and the sound
    plausibility_later: float | None = None  # guidance_plausibility on the latents guidance_later covers; None: the same
    motion_guidance: float = 0.0  # scale of the contrast with the caption rewritten by motion_contrast, on the
    # latents guidance_later covers (kinema.decode.motion_contrast); 0: off
    motion_contrast: str = "still"  # the contrast prompt: "still" (motion -> standing still) or "reversed" (slides)
    still_guidance: float = 0.0  # scale of one more contrast, the caption with its bouncing and falling standing
    # still, on the same latents; 0: off
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    candidates: int = 1  # text-to-video/-image: first windows' heads drawn per call, the caption scorer keeps the best
    rerank_latents: int = 1  # the head: how many leading latents of the first window are drawn `candidates` times
    max_text_tokens: int = 64
    max_seconds: float = MAX_SECONDS
    bf16: bool = True


def load_components(directory: str | Path | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Every component of ``directory`` (None: the embedded default) as ``Pipeline`` keyword arguments.
    Raises CheckpointError when the directory or a required component is missing."""
    root = Path(directory) if directory is not None else DEFAULT_MODEL
    if not root.is_dir():
        raise CheckpointError(f"model directory {root} does not exist")
    missing = [c for c in ("video_tokenizer", "text_tokenizer", "lm") if not (root / c / "config.json").is_file()]
    if missing:
        raise CheckpointError(f"{root} lacks the component(s) {', '.join(missing)} (each a save_pretrained directory)")
    cfg = PipelineConfig()
    if (root / CONFIG_NAME).is_file():
        cfg = from_dict(PipelineConfig, json.loads((root / CONFIG_NAME).read_text()))
    vt = VideoTokenizer.from_pretrained(root / "video_tokenizer").to(device)
    has_audio = (root / "audio_codec" / "config.json").is_file()
    ac = AudioCodec.from_pretrained(root / "audio_codec").to(device) if has_audio else None
    tt = TextTokenizer.from_pretrained(root / "text_tokenizer")
    lm = KinemaLM.from_pretrained(root / "lm", device=device)
    dit = dd = None
    if (root / "dit" / "config.json").is_file():
        from kinema.decode.dit_generator import DiTGenerator

        dit = DiTGenerator.from_pretrained(root / "dit").to(device)
    if (root / "diffusion_decoder" / "config.json").is_file():
        from kinema.decode.diffusion_decoder import DiffusionDecoder

        dd = DiffusionDecoder.from_pretrained(root / "diffusion_decoder").to(device)
    scorer = None
    if (root / "caption_scorer" / "config.json").is_file():
        from kinema.decode.caption_scorer import CaptionScorer

        scorer = CaptionScorer.from_pretrained(root / "caption_scorer").to(device)
    return dict(video_tokenizer=vt, audio_codec=ac, text_tokenizer=tt, lm=lm, config=cfg, dit=dit,
                diffusion_decoder=dd, caption_scorer=scorer)


def save_components(pipe: Any, directory: str | Path) -> Path:
    """Write ``pipe``'s components and its config into ``directory``; returns the directory."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    pipe.vt.save_pretrained(root / "video_tokenizer")
    if pipe.ac is not None:
        pipe.ac.save_pretrained(root / "audio_codec")
    pipe.tt.save_pretrained(root / "text_tokenizer")
    pipe.lm.save_pretrained(root / "lm")
    for name in ("dit", "diffusion_decoder", "caption_scorer"):
        if getattr(pipe, name) is not None:
            getattr(pipe, name).save_pretrained(root / name)
    atomic_write_text(root / CONFIG_NAME, json.dumps(to_dict(pipe.config), indent=2))
    return root


def random_components(seed: int = 0, config: PipelineConfig | None = None, lm_preset: str = "tiny") -> dict[str, Any]:
    """Freshly initialised (untrained) tiny components as ``Pipeline`` keyword arguments."""
    torch.manual_seed(seed)
    vt = VideoTokenizer(VideoTokenizerConfig.preset("tiny"))  # 8x space, 4x time, 256 codes
    ac = AudioCodec(AudioCodecConfig(sample_rate=8000, channels=4, mults=(1, 2, 2, 4), strides=(4, 5, 8),
                                     dilations=(1,), latent_dim=8, num_quantizers=2, codebook_size=16,
                                     kmeans_init=False))  # hop 160: 50 frames/s
    words = "a red green blue circle square triangle bouncing falling sliding on black white background"
    tt = TextTokenizer.train([words, "a small red circle", "the big blue square"], vocab_size=48,
                             byte_fallback=False)
    vocab = Vocab(text_size=tt.vocab_size, video_codebook_size=vt.codebook_size,
                  audio_codebook_size=ac.codebook_size, audio_num_quantizers=2)
    lm = KinemaLM(LMConfig.preset(lm_preset, vocab_size=vocab.size, vocab=vocab.to_dict()))
    cfg = config or PipelineConfig(size=(32, 32), window_latents=3, cond_latents=1, decode_context=2)
    return dict(video_tokenizer=vt, audio_codec=ac, text_tokenizer=tt, lm=lm, vocab=vocab, config=cfg)
