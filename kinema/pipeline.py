"""Pipeline: prompt (and/or image, video, audio) -> video with sound, any length, every task.

The only module that knows the whole path (DESIGN.md section 2): text/frames/audio -> tokenizers ->
task layout (kinema.lm.layout) -> KinemaLM prefill + KV-cache decode (kinema.decode.generate) ->
codes -> tokenizers' decoders -> frames + waveform.

Long videos follow VideoPoet (Kondratyuk et al., 2023): a window of latents, then windows that each
condition on the last ~1 s of tokens (``continue``; ``extend_back`` backwards), with a fresh KV cache
per window so memory and cost per second stay flat (see kinema.decode.continuation). Audio is made
alongside, per window, with the ``v2a`` layout conditioned on that window's video tokens.

Documented behaviour:
- ``seconds`` is the length to *generate*. For ``continue``/``extend_back``/``bridge`` the output is
  the given clip(s) with the new part attached (resampled to the pipeline's fps and size).
- Images/clips of another size are resized (aspect kept, centre crop); clips at another fps are
  resampled by nearest frame. A clip shorter than the conditioning window (~1 s) conditions on what
  it has (at least its last frame).
- ``seconds`` above ``MAX_SECONDS`` (600) or frames above ``MAX_PIXELS`` raise ResourceError.
- ``refine=True`` (default: ``PipelineConfig.refine`` when a head is loaded) passes each window's
  decoded frames through the diffusion decoder head (``PipelineConfig.refine_steps`` steps, anchored
  on the previous window's last refined frame) for t2v, i2v, continue and bridge; the other tasks
  decode plainly.
- ``candidates=K`` (default: ``PipelineConfig.candidates`` when a ``caption_scorer`` component is
  loaded) draws the first ``PipelineConfig.rerank_latents`` latent frames of a text-to-video/-image
  call K times in one batch and keeps the draw the caption scorer matches best to the prompt
  (kinema.decode.rerank); the rest is decoded after it as usual.
- ``motion_guidance=M`` (default: ``PipelineConfig.motion_guidance``, 0 = off) adds a second guidance
  term on the latents ``guidance_later`` covers: away from the same caption with its motion phrases
  replaced by "standing still" (kinema.decode.motion_contrast), so what it amplifies is how things
  move; ``motion_contrast="reversed"`` contrasts with every slide turned around instead (direction
  alone). A prompt that names no motion (no slide, for "reversed") leaves it off. It adds a third
  row to every such window's batched forward. ``still_guidance=S`` (default
  ``PipelineConfig.still_guidance``, 0 = off) adds one more term and row beside it, at its own scale:
  away from the caption with its bouncing and falling standing still (the motions a slide reversal
  cannot touch). With ``backend="dit"`` both are velocity terms at every sampling step
  (``kinema.decode.flow.guided``), and both default to 0 there: ``pipeline.json``'s values are the
  AR path's.
- With ``keep_partial=True`` Ctrl-C stops after the current window and returns what was made
  (``out.interrupted``); the CLI writes that as a valid mp4.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kinema.decode.continuation import LatentStream, latents_for_frames, window_schedule
from kinema.decode.generate import Contrast, generate
from kinema.decode.guidance_schedule import contrast_schedule, later_schedule
from kinema.decode.motion_contrast import CONTRASTS, contrast_caption, unslid_caption
from kinema.errors import ResourceError
from kinema.lm import layout
from kinema.lm.model import KinemaLM
from kinema.lm.vocab import Vocab
from kinema.pipeline_files import PipelineConfig, load_components, random_components, save_components
from kinema.pipeline_io import (GenerationOutput, MAX_SECONDS, as_image, check_output, check_seconds, check_size,
                                fit_length,
                                prepare_clip, resolve_task, to_model, to_uint8)
from kinema.tokenizers.audio import AudioCodec
from kinema.tokenizers.text import TextTokenizer
from kinema.tokenizers.video import VideoTokenizer, pad_frames
from kinema.training import autocast

__all__ = ["Pipeline", "PipelineConfig", "GenerationOutput", "MAX_SECONDS"]

BACKENDS = ("ar", "dit")


class Pipeline:
    """Every generation task with any set of components (see the module docstring)."""

    def __init__(self, video_tokenizer: VideoTokenizer, audio_codec: AudioCodec | None, text_tokenizer: TextTokenizer,
                 lm: KinemaLM, vocab: Vocab | None = None, config: PipelineConfig | None = None,
                 diffusion_decoder: Any = None, dit: Any = None, caption_scorer: Any = None):
        if vocab is None:
            if not lm.cfg.vocab:
                raise ValueError("the LM stores no vocabulary layout; pass vocab=kinema.lm.vocab.Vocab(...)")
            vocab = Vocab.from_dict(lm.cfg.vocab)
        if vocab.size != lm.cfg.vocab_size:
            raise ValueError(f"vocabulary has {vocab.size} ids but the LM has {lm.cfg.vocab_size}")
        bad = []
        if text_tokenizer.vocab_size != vocab.text_size:
            bad.append(f"text {text_tokenizer.vocab_size} vs {vocab.text_size}")
        if video_tokenizer.codebook_size != vocab.video_codebook_size:
            bad.append(f"video codebook {video_tokenizer.codebook_size} vs {vocab.video_codebook_size}")
        if audio_codec is not None and (audio_codec.codebook_size != vocab.audio_codebook_size
                                        or audio_codec.num_quantizers < vocab.audio_num_quantizers):
            bad.append(f"audio codebook {audio_codec.codebook_size}x{audio_codec.num_quantizers} vs "
                       f"{vocab.audio_codebook_size}x{vocab.audio_num_quantizers}")
        trained_on = lm.cfg.trained_on  # code fingerprints of the LM's training tokens
        for name, comp in (("video_tokenizer", video_tokenizer), ("audio_codec", audio_codec)):
            if comp is not None and trained_on.get(name) and comp.code_fingerprint() != trained_on[name]:
                bad.append(f"{name} codes {comp.code_fingerprint()} vs {trained_on[name]}, the codes the LM "
                           f"was trained on (kinema.checkpoint.weights_fingerprint)")
        if bad:
            raise ValueError("components do not match the LM (its vocabulary or the codes it was trained on): " + "; ".join(bad))
        self.vt, self.ac, self.tt, self.lm, self.vocab = video_tokenizer.eval(), audio_codec, text_tokenizer, lm.eval(), vocab
        if self.ac is not None:
            self.ac.eval()
        self.config = config or PipelineConfig()
        if self.config.window_latents < 2 or not 1 <= self.config.cond_latents < self.config.window_latents:
            raise ValueError("PipelineConfig needs window_latents >= 2 and 1 <= cond_latents < window_latents")
        self.diffusion_decoder, self.dit, self.caption_scorer = diffusion_decoder, dit, caption_scorer

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str | torch.device = "cpu") -> "Pipeline":
        """Load every component from ``directory/<component>/`` (no argument: the embedded default)."""
        return cls(**load_components(directory, device))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write every component to ``directory/<component>/`` and the config to ``pipeline.json``."""
        return save_components(self, directory)

    @property
    def device(self) -> torch.device:
        return self.lm.device

    # ------------------------------------------------------------------ the call
    def sampling_options(self, *, guidance_scale: float | None = None, guidance_plausibility: float | None = None,
                         guidance_later: float | None = None, plausibility_later: float | None = None,
                         motion_guidance: float | None = None, still_guidance: float | None = None,
                         motion_contrast: str | None = None, temperature: float | None = None,
                         top_k: int | None = None, top_p: float | None = None,
                         refine: bool | None = None, candidates: int | None = None,
                         backend: str = "ar") -> dict[str, Any]:
        """The sampling options a call with these arguments uses: each ``None`` takes ``pipeline.json``'s
        value (refine only where a diffusion decoder exists, candidates above 1 only where a caption
        scorer exists; motion and still guidance only on the ``ar`` backend, whose values they were
        tuned on: the DiT takes them when they are passed, and measured no gain from the AR's).
        ``guidance_later`` defaults to ``guidance_scale`` when that is given, so one
        scale passed alone applies to every latent, else to ``pipeline.json``'s; ``plausibility_later``
        follows ``guidance_plausibility`` the same way. Raises ValueError on a plausibility outside
        [0, 1), candidates below 1, or candidates above 1 asked for without a caption scorer."""
        c = self.config
        pick = lambda given, default: default if given is None else given  # noqa: E731
        opts = dict(guidance_scale=float(pick(guidance_scale, c.guidance_scale)),
                    guidance_plausibility=float(pick(guidance_plausibility, c.guidance_plausibility)),
                    guidance_later=float(pick(guidance_later, guidance_scale if guidance_scale is not None
                                              else pick(c.guidance_later, c.guidance_scale))),
                    plausibility_later=float(pick(plausibility_later, guidance_plausibility
                                                  if guidance_plausibility is not None
                                                  else pick(c.plausibility_later, c.guidance_plausibility))),
                    motion_guidance=float(pick(motion_guidance, c.motion_guidance if backend == "ar" else 0.0)),
                    still_guidance=float(pick(still_guidance, c.still_guidance if backend == "ar" else 0.0)),
                    motion_contrast=str(pick(motion_contrast, c.motion_contrast)),
                    temperature=float(pick(temperature, c.temperature)), top_k=int(pick(top_k, c.top_k)),
                    top_p=float(pick(top_p, c.top_p)),
                    refine=bool(pick(refine, c.refine and self.diffusion_decoder is not None)),
                    candidates=int(pick(candidates, c.candidates if self.caption_scorer is not None else 1)))
        if opts["candidates"] < 1:
            raise ValueError(f"candidates must be >= 1, got {opts['candidates']}")
        if opts["candidates"] > 1 and self.caption_scorer is None:
            raise ValueError("candidates > 1 needs a caption_scorer component; this pipeline has none")
        for name in ("guidance_plausibility", "plausibility_later"):
            if not 0.0 <= opts[name] < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {opts[name]}")
        for name in ("motion_guidance", "still_guidance"):
            if not (math.isfinite(opts[name]) and opts[name] >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {opts[name]}")
        if opts["motion_contrast"] not in CONTRASTS:
            raise ValueError(f"motion_contrast must be one of {', '.join(CONTRASTS)}, got {opts['motion_contrast']!r}")
        return opts

    def __call__(self, prompt: str | None = None, *, image: Any = None, video: Any = None, video_after: Any = None,
                 audio: Any = None, task: str | None = None, seconds: float | None = None, fps: float | None = None,
                 size: tuple[int, int] | None = None, guidance_scale: float | None = None,
                 guidance_plausibility: float | None = None, guidance_later: float | None = None,
                 plausibility_later: float | None = None,
                 motion_guidance: float | None = None, motion_contrast: str | None = None,
                 still_guidance: float | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None, negative_prompt: str | None = None,
                 with_audio: bool = True, progress: bool = False, backend: str = "ar", refine: bool | None = None,
                 candidates: int | None = None, keep_partial: bool = False) -> GenerationOutput:
        """Generate; see the module docstring and DESIGN.md section 3 for the options."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "dit" and self.dit is None:
            raise ValueError("backend 'dit' needs a DiT generator component; this pipeline has none")
        opts = self.sampling_options(guidance_scale=guidance_scale, guidance_plausibility=guidance_plausibility,
                                     guidance_later=guidance_later, plausibility_later=plausibility_later,
                                     motion_guidance=motion_guidance, still_guidance=still_guidance,
                                     motion_contrast=motion_contrast, temperature=temperature, top_k=top_k,
                                     top_p=top_p, refine=refine, candidates=candidates, backend=backend)
        refine = opts.pop("refine")
        self._candidates = opts.pop("candidates")
        self._guidance_later = opts.pop("guidance_later")
        self._plausibility_later = opts.pop("plausibility_later")
        motion_scale, still_scale = opts.pop("motion_guidance"), opts.pop("still_guidance")
        contrast = opts.pop("motion_contrast")
        if refine and self.diffusion_decoder is None:
            raise ValueError("refine=True needs a diffusion decoder component; this pipeline has none")
        if refine and self.diffusion_decoder.cfg.upsample != 1:
            raise ValueError("refine=True needs a diffusion decoder with upsample=1 (output frames keep the call's size)")
        self._refine, self._prev_refined = bool(refine), None
        self._backend = backend
        c = self.config
        t = resolve_task(task, prompt, image, video, video_after, audio, seconds)
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        fps = float(fps if fps is not None else c.fps)
        if not math.isfinite(fps) or not 0 < fps <= 120:
            raise ValueError(f"fps must be in (0, 120], got {fps}")
        self._size = check_size(size if size is not None else c.size, self.vt.spatial_factor)
        self._fps = fps
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,))))
        self._opts = dict(opts, generator=generator)
        self._text = self.tt.encode(prompt) if prompt else None
        self._neg = self.tt.encode(negative_prompt) if negative_prompt else None
        self._contrasts = []  # motion guidance's contrast prompts (token ids) and their scales
        for scale, make in ((motion_scale, lambda text: contrast_caption(text, contrast)), (still_scale, unslid_caption)):
            contrast_text = make(prompt) if prompt and scale > 0 else None
            if contrast_text:
                self._contrasts.append((self.tt.encode(contrast_text), scale))
        self._stats: list[dict[str, Any]] = []
        self._starts: list[int] = []  # frame index where each generated window begins in the output
        self._a_state, self._a_target, self._a_emitted = {}, 0, 0  # the call's sound track (see _audio_for_video)
        self._progress, self._keep_partial, self._interrupted = progress, keep_partial, False
        want_audio = with_audio and self.ac is not None
        need = {"i2v": ("image", image), "continue": ("video", video), "extend_back": ("video", video),
                "bridge": ("video", video), "v2a": ("video", video), "a2v": ("audio", audio)}
        if t in need and need[t][1] is None:
            raise ValueError(f"task {t!r} needs {need[t][0]}=")
        if t == "bridge" and video_after is None:
            raise ValueError("task 'bridge' needs video= (before) and video_after= (after)")
        if t in ("v2a", "a2v", "t2va") and self.ac is None:
            raise ValueError(f"task {t!r} needs an audio codec; this pipeline has none")
        if backend == "dit" and t not in ("t2v", "t2va", "uncond", "continue"):
            raise ValueError(f"backend 'dit' supports text-to-video and continue, not task {t!r}; use backend='ar'")
        with autocast(self.device, enabled=c.bf16):
            if t == "t2i":
                return self._forward(t, 1, None, False)
            if t == "v2a":
                return self._video_to_audio(prepare_clip(video, fps, self._size))
            if t == "a2v":
                return self._audio_to_video(audio, seconds)
            default_s = 1.0 if t == "bridge" else c.seconds
            s = check_seconds(default_s if seconds is None else seconds, c.max_seconds)
            n_frames = max(1, round(s * fps))
            check_output(n_frames, self._size)
            if t in ("t2v", "t2va", "uncond"):
                return self._forward("t2v" if t == "t2va" else t, n_frames, None, want_audio)
            if t == "i2v":
                img = prepare_clip(as_image(image), fps, self._size).frames  # (1, H, W, 3)
                return self._forward(t, n_frames, img, want_audio)
            clip = prepare_clip(video, fps, self._size)
            if t == "continue":
                return self._forward(t, n_frames, clip.frames, want_audio, clip=clip)
            if t == "extend_back":
                return self._extend_back(clip, n_frames, want_audio)
            return self._bridge(clip, prepare_clip(video_after, fps, self._size), n_frames, want_audio)

    # ------------------------------------------------------------------ one LM window
    def _lm(self, task: str, video_grid: tuple[int, int, int] | None = None,
            audio_shape: tuple[int, int] | None = None, **cond: Any) -> dict[str, Any]:
        v, text = self.vocab, self._text if task != "uncond" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # prompt truncated to the budget
            seq = layout.build_prefix(task, v, text=text, max_text_tokens=self.config.max_text_tokens, **cond)
        plan = layout.output_plan(task, v, video_grid, audio_shape, start_pos=seq.next_pos)
        branches: dict[str, Any] = {}  # guidance's unconditional and contrast prompts, one row each
        has_text = bool(text) or self._neg is not None  # without text both branches would be the same
        first = None if video_grid is None else 1 + video_grid[1] * video_grid[2] * v.video_tokens_per_code
        scales = later_schedule(task, plan.length, first, self._opts["guidance_scale"], self._guidance_later)
        plausibility = later_schedule(task, plan.length, first, self._opts["guidance_plausibility"],
                                      self._plausibility_later)
        opts = dict(self._opts, guidance_scale=scales, guidance_plausibility=plausibility)
        if bool((scales != 1.0).any()) and task != "uncond" and has_text:
            useq = layout.build_prefix(task, v, text=self._neg, drop_text=self._neg is None,
                                       max_text_tokens=self.config.max_text_tokens, **cond)
            branches = dict(uncond_ids=useq.ids.to(self.device), uncond_positions=useq.positions.to(self.device),
                          uncond_plan=layout.output_plan(task, v, video_grid, audio_shape, start_pos=useq.next_pos))
        contrasts = []
        for contrast_text, scale in self._contrasts if text else []:
            motion = contrast_schedule(task, plan.length, first, scale)
            if not bool((motion != 0.0).any()):
                continue
            cseq = layout.build_prefix(task, v, text=contrast_text, max_text_tokens=self.config.max_text_tokens, **cond)
            contrasts.append(Contrast(cseq.ids.to(self.device), cseq.positions.to(self.device),
                                      layout.output_plan(task, v, video_grid, audio_shape, start_pos=cseq.next_pos),
                                      scale=motion))
        if contrasts:
            opts["contrasts"] = contrasts
        total = len(seq) + plan.length
        if total > self.lm.cfg.max_seq_len:
            raise ResourceError(f"one {task} window needs {total} tokens but the LM handles {self.lm.cfg.max_seq_len}; "
                                "use a smaller size or shorter windows")
        stat = {"window": len(self._stats), "task": task, "prefix_tokens": len(seq), "output_tokens": plan.length,
                "cache_tokens": total - 1}
        if self._candidates > 1 and task in ("t2v", "t2i") and text:
            out, info = self._reranked(seq, plan, branches, video_grid, opts)
            stat.update(candidates=self._candidates, candidate_scores=info["rank"], chosen=info["chosen"])
        else:
            out = generate(self.lm, [seq.ids.to(self.device)], [seq.positions.to(self.device)], [plan],
                           **{k: [x] for k, x in branches.items()}, **opts, progress=self._progress)
        self._stats.append(stat)
        cv = cond.get("cond_video_codes")
        hw = video_grid[1:] if video_grid is not None else (tuple(cv.shape[-2:]) if cv is not None else self._grid_hw())
        return layout.revert(torch.cat([seq.ids, out[0].cpu()]), v, video_hw=hw)

    def _reranked(self, seq: Any, plan: Any, branches: dict[str, Any], video_grid: tuple[int, int, int],
                  opts: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """One window's output (1, N) whose first ``rerank_latents`` latent frames are the caption
        scorer's pick of ``self._candidates`` drawn in one batch (kinema.decode.rerank)."""
        from kinema.decode.rerank import caption_rank, decode_reranked_head

        t, h, w = video_grid
        t = max(1, min(self.config.rerank_latents, t))
        per_frame = h * w * self.vocab.video_tokens_per_code

        def to_codes(heads: torch.Tensor) -> torch.Tensor:  # (K, 1 + t*h*w*k) ids, <bov> first -> (K, t, h, w)
            return torch.stack([self.vocab.ids_to_video(r[1:].cpu()).view(t, h, w) for r in heads])

        out, info = decode_reranked_head(
            self.lm, seq.ids.to(self.device), seq.positions.to(self.device), plan, head_len=1 + t * per_frame,
            candidates=self._candidates, rank=caption_rank(self.caption_scorer, list(self._text), to_codes), **branches,
            **opts, progress=self._progress)
        return out.view(1, -1), info

    def _grid_hw(self) -> tuple[int, int]:
        w, h = self._size
        return h // self.vt.spatial_factor, w // self.vt.spatial_factor

    def _decode_video(self, codes: torch.Tensor) -> torch.Tensor:  # (1, t, h, w) -> (1, 3, T, H, W)
        return self.vt.decode(codes.to(self.vt.bit_weights.device)).float().cpu()

    def _new_frames(self, stream: LatentStream) -> torch.Tensor:
        """uint8 (T, H, W, 3) frames of the stream's new latents; with ``refine=True`` the diffusion
        decoder head refines them, anchored on the previous window's last refined frame."""
        x = stream.decode_new()  # (3, T, H, W) in [-1, 1]
        if self._refine:
            dd = self.diffusion_decoder
            x = dd.refine(None, x[None].float().to(next(dd.parameters()).device), steps=self.config.refine_steps,
                          generator=self._opts["generator"], prev_frame=self._prev_refined)[0].cpu()
            self._prev_refined = x[None, :, -1]
        return to_uint8(x)

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> codes (t, h, w); T padded to 1 + 4k by repeating the last frame."""
        x = pad_frames(to_model(frames)).to(self.vt.bit_weights.device)
        return self.vt.encode(x)[0].cpu()

    # ------------------------------------------------------------------ audio
    def _audio_q(self) -> int:
        return self.vocab.audio_num_quantizers

    def _audio_for_video(self, codes: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """v2a on one window's video codes (t, h, w) -> (audio codes (Q, n), wav (1, n * hop)).

        Windows of one call form one sound track: the codec decodes them with carried state
        (continuous waveform across windows) and the frame count per window follows the running
        total, so the track never drifts more than one codec frame from the video."""
        self._a_target += n_samples
        n = math.ceil((self._a_target - self._a_emitted) / self.ac.hop_length)
        if n <= 0:
            return torch.zeros(self._audio_q(), 0, dtype=torch.long), torch.zeros(1, 0)
        got = self._lm("v2a", audio_shape=(self._audio_q(), n), cond_video_codes=codes)["audio_codes"]
        wav = self.ac.decode(got.unsqueeze(0).to(self.ac.rvq.layers[0]._codebook.embed.device), self._a_state)
        self._a_emitted += n * self.ac.hop_length
        return got, wav[0].float().cpu()

    def _samples(self, frames: int) -> int:
        return round(frames / self._fps * self.ac.sample_rate)

    def _prepare_audio(self, audio: Any) -> torch.Tensor:
        """(wav, sr) or a Clip's audio -> mono (1, N) at the codec's rate."""
        if isinstance(audio, tuple) and len(audio) == 2:
            wav, sr = audio
        else:
            raise ValueError("audio must be a (waveform, sample_rate) pair")
        return self.ac.prepare(torch.as_tensor(wav), int(sr))[0]

    # ------------------------------------------------------------------ forward generation (t2v, i2v, continue)
    def _forward(self, task: str, n_frames: int, given: torch.Tensor | None, want_audio: bool,
                 clip: Any = None) -> GenerationOutput:
        c, f = self.config, self.vt.temporal_factor
        h, w = self._grid_hw()
        stream = LatentStream(self._decode_video, f, c.decode_context)
        head = 0  # frames of the output that come from the user's input
        if task == "continue":  # encode the clip's tail (with decode context) as the stream start
            T = given.shape[0]
            keep = min(T, 1 + f * (c.cond_latents + c.decode_context - 1))
            keep = 1 + f * ((keep - 1) // f)
            stream.append(self._encode_frames(given[T - keep:]))
            stream.skip(len(stream))
            head = T
            total = len(stream) + latents_for_frames(n_frames, f, first=False)
        elif task == "i2v":
            stream.append(self._encode_frames(given))  # latent 0 = the image
            total = latents_for_frames(n_frames, f)
        else:
            total = latents_for_frames(n_frames, f)
        start = len(stream)
        pieces: list[torch.Tensor] = [] if given is None or task == "i2v" else [given]
        audio_parts: list[torch.Tensor] = []
        if want_audio and task == "continue":
            audio_parts.append(self._input_audio(clip, head))
        a_codes: list[torch.Tensor] = []
        made = 0
        windows = window_schedule(total, c.window_latents, c.cond_latents, start)
        bar = tqdm(total=n_frames, desc=task, unit="frame", disable=not self._progress)
        try:
            for win in windows:
                if self._backend == "dit":
                    codes = self._dit_window(task, win, h, w, stream)
                elif win.num_cond == 0 and task in ("t2v", "uncond", "t2i"):
                    codes = self._lm(task, video_grid=(win.num_new, h, w))["video_codes"]
                elif task == "i2v" and win.index == 0:
                    codes = self._lm("i2v", video_grid=(win.num_new, h, w), image_codes=stream.span(0, 1))["video_codes"]
                else:
                    codes = self._lm("continue", video_grid=(win.num_new, h, w),
                                     cond_video_codes=stream.span(*win.cond))["video_codes"]
                stream.append(codes)
                frames = self._new_frames(stream)[: n_frames - made]  # (T, H, W, 3)
                self._starts.append(head + made)
                pieces.append(frames)
                made += frames.shape[0]
                if want_audio:
                    got, wav = self._audio_for_video(codes, self._samples(frames.shape[0]))
                    a_codes.append(got)
                    audio_parts.append(wav)
                bar.update(frames.shape[0])
        except KeyboardInterrupt:
            if not self._keep_partial or made == 0:
                raise
            self._interrupted = True
        finally:
            bar.close()
        tokens = {"video": stream.span(start if task != "i2v" else 1, len(stream)) if len(stream) > start else stream.codes()}
        if a_codes:
            tokens["audio"] = torch.cat(a_codes, dim=1)
        return self._output(task, torch.cat(pieces), audio_parts, tokens)

    def _dit_window(self, task: str, win: Any, h: int, w: int, stream: LatentStream) -> torch.Tensor:
        """One window's new video codes (t, h, w) from the DiT generator (sign-snapped latents are
        exactly LFQ codes), conditioned on the window's leading latents like the AR path."""
        cond = self.vt.codes_to_latents(stream.span(*win.cond).unsqueeze(0)) if win.num_cond else None
        text = [self._text or []] if task != "uncond" else [[]]
        gen = self._opts["generator"]
        contrasts = [([ids], scale) for ids, scale in self._contrasts] if text[0] else []
        z = self.dit.generate(text, win.num_new, (h, w), guidance_scale=self._opts["guidance_scale"] if text[0] else 1.0,
                              steps=self.config.dit_steps, generator=gen, cond_latents=cond, contrasts=contrasts)
        self._stats.append({"window": len(self._stats), "task": task, "backend": "dit", "new_latents": win.num_new})
        return self.vt.latents_to_codes(z)[0].cpu()

    def _input_audio(self, clip: Any, n_frames: int) -> torch.Tensor:
        n = self._samples(n_frames)
        if clip is None or clip.audio is None or clip.sample_rate is None:
            return torch.zeros(1, n)
        return fit_length(self._prepare_audio((clip.audio, int(clip.sample_rate))), n)

    def _output(self, task: str, video: torch.Tensor, audio_parts: list[torch.Tensor],
                tokens: dict[str, torch.Tensor]) -> GenerationOutput:
        audio, sr = None, None
        if audio_parts:
            audio = fit_length(torch.cat(audio_parts, dim=1), self._samples(video.shape[0])).float()
            sr = self.ac.sample_rate
        return GenerationOutput(video, self._fps, audio, sr, tokens, task, self._stats, self._interrupted,
                                list(self._starts))

    # ------------------------------------------------------------------ backwards, bridge
    def _extend_back(self, clip: Any, n_frames: int, want_audio: bool) -> GenerationOutput:
        """Prepend ``n_frames`` before the clip, window by window backwards (``extend_back``)."""
        c, f = self.config, self.vt.temporal_factor
        h, w = self._grid_hw()
        T = clip.frames.shape[0]
        keep = 1 + f * ((min(T, 1 + f * (c.cond_latents - 1)) - 1) // f)
        head = list(self._encode_frames(clip.frames[:keep]).unbind(0))  # the stream from its start
        n_cond0 = len(head)
        n_new = latents_for_frames(n_frames, f)
        for win in window_schedule(n_cond0 + n_new, c.window_latents, c.cond_latents, n_cond0):
            cond = torch.stack(head[: win.num_cond])
            codes = self._lm("extend_back", video_grid=(win.num_new, h, w), cond_video_codes=cond)["video_codes"]
            head = list(codes.unbind(0)) + head
        gen = torch.stack(head[: len(head) - n_cond0])  # (n_new, h, w)
        x = self.vt.decode_chunked(torch.stack(head).unsqueeze(0).to(self.vt.bit_weights.device))[0].cpu()
        new = to_uint8(x[:, : 1 + f * (len(gen) - 1)])[-n_frames:]
        parts = []
        tokens = {"video": gen}
        if want_audio:
            got, wav = self._audio_for_video(gen, self._samples(new.shape[0]))
            parts = [wav, self._input_audio(clip, T)]
            tokens["audio"] = got
        return self._output("extend_back", torch.cat([new, clip.frames]), parts, tokens)

    def _bridge(self, a: Any, b: Any, n_frames: int, want_audio: bool) -> GenerationOutput:
        """Frames between clip ``a`` and clip ``b``: continue windows from ``a``, the last one a ``bridge``."""
        c, f = self.config, self.vt.temporal_factor
        h, w = self._grid_hw()
        Ta, Tb = a.frames.shape[0], b.frames.shape[0]
        keep_a = 1 + f * ((min(Ta, 1 + f * (c.cond_latents + c.decode_context - 1)) - 1) // f)
        keep_b = 1 + f * ((min(Tb, 1 + f * (c.cond_latents - 1)) - 1) // f)
        after = self._encode_frames(b.frames[:keep_b])[: c.cond_latents]
        if c.window_latents - len(after) <= c.cond_latents:
            raise ValueError("bridge needs window_latents > 2 * cond_latents (condition on both sides)")
        stream = LatentStream(self._decode_video, f, c.decode_context)
        stream.append(self._encode_frames(a.frames[Ta - keep_a:]))
        stream.skip(len(stream))
        start = len(stream)
        total = start + latents_for_frames(n_frames, f, first=False)
        windows = window_schedule(total, c.window_latents - len(after), c.cond_latents, start)
        pieces, audio_parts, a_codes = [a.frames], [], []
        if want_audio:
            audio_parts.append(self._input_audio(a, Ta))
        made = 0
        for win in windows:
            cond = dict(cond_video_codes=stream.span(*win.cond))
            if win is windows[-1]:
                codes = self._lm("bridge", video_grid=(win.num_new, h, w), cond_video_after_codes=after, **cond)
            else:
                codes = self._lm("continue", video_grid=(win.num_new, h, w), **cond)
            codes = codes["video_codes"]
            stream.append(codes)
            frames = self._new_frames(stream)[: n_frames - made]
            self._starts.append(Ta + made)
            made += frames.shape[0]
            pieces.append(frames)
            if want_audio:
                got, wav = self._audio_for_video(codes, self._samples(frames.shape[0]))
                a_codes.append(got)
                audio_parts.append(wav)
        pieces.append(b.frames)
        if want_audio:
            audio_parts = [audio_parts[0], fit_length(torch.cat(audio_parts[1:], dim=1), self._samples(made))]
            audio_parts.append(self._input_audio(b, Tb))
        tokens = {"video": stream.span(start, len(stream))}
        if a_codes:
            tokens["audio"] = torch.cat(a_codes, dim=1)
        return self._output("bridge", torch.cat(pieces), audio_parts, tokens)

    # ------------------------------------------------------------------ cross-modal
    def _video_to_audio(self, clip: Any) -> GenerationOutput:
        """Sound for a clip, window by window (each window's frames coded on their own)."""
        f, T = self.vt.temporal_factor, clip.frames.shape[0]
        step = 1 + f * (self.config.window_latents - 1)
        parts, codes = [], []
        for s in tqdm(range(0, T, step), desc="v2a", disable=not self._progress):
            seg = clip.frames[s: s + step]
            got, wav = self._audio_for_video(self._encode_frames(seg), self._samples(s + seg.shape[0]) - self._samples(s))
            parts.append(wav)
            codes.append(got)
        return self._output("v2a", clip.frames, parts, {"audio": torch.cat(codes, dim=1)})

    def _audio_to_video(self, audio: Any, seconds: float | None) -> GenerationOutput:
        """Video for a sound track, one ``a2v`` window per stretch of audio."""
        wav = self._prepare_audio(audio)  # (1, N)
        dur = wav.shape[-1] / self.ac.sample_rate
        if wav.shape[-1] == 0:
            raise ValueError("audio is empty: nothing to make a video for")
        if seconds is not None:
            dur = min(dur, check_seconds(seconds, self.config.max_seconds))
        check_seconds(dur, self.config.max_seconds)
        f, (h, w) = self.vt.temporal_factor, self._grid_hw()
        n_frames = max(1, round(dur * self._fps))
        step = 1 + f * (self.config.window_latents - 1)
        pieces, toks = [], []
        for s in tqdm(range(0, n_frames, step), desc="a2v", disable=not self._progress):
            n = min(step, n_frames - s)
            seg = wav[:, self._samples(s): self._samples(s + n)]
            q = self.ac.encode(seg.unsqueeze(0).to(self.ac.rvq.layers[0]._codebook.embed.device),
                               kbps=self.ac.kbps_for_quantizers(self._audio_q()))[0].cpu()
            t = latents_for_frames(n, f)
            codes = self._lm("a2v", video_grid=(t, h, w), cond_audio_codes=q)["video_codes"]
            pieces.append(to_uint8(self._decode_video(codes.unsqueeze(0))[0])[:n])
            toks.append(codes)
        return self._output("a2v", torch.cat(pieces), [fit_length(wav, self._samples(n_frames))],
                            {"video": torch.cat(toks)})


def random_pipeline(seed: int = 0, config: PipelineConfig | None = None, lm_preset: str = "tiny") -> Pipeline:
    """A Pipeline of freshly initialised (untrained) tiny components: tests and benchmarks when no
    trained model is around. Real components, random weights: output is noise of the right shape."""
    return Pipeline(**random_components(seed, config, lm_preset))
