"""The `kinema` command line: one subcommand per job, each a thin layer over the library.

Errors a user can cause (missing file, corrupt media, bad option) print one line and exit 2;
Ctrl-C exits 130. Library imports happen inside each command so `kinema --help` is instant.

Each subcommand is a pair: ``_add_<name>(sub)`` declares its arguments, ``_run_<name>(args)`` does
the work by calling the library.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from kinema.errors import KinemaError


def _size(text: str) -> tuple[int, int]:
    """'128x96' -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (e.g. 128x128), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


# ----------------------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print what kinema.media.read_video sees in a file")
    p.add_argument("files", nargs="+", help="media files")


def _run_info(args) -> int:
    from kinema.media import describe

    failed = 0
    for path in args.files:
        try:
            print(describe(path))
        except KinemaError as e:
            print(f"{path}: error: {e}")
            failed += 1
    return 1 if failed else 0


# ----------------------------------------------------------------------------- synth
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic-world clips (mp4 with sound) and manifest.jsonl")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--size", type=_size, default=(128, 128), help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sample-rate", type=int, default=16000)


def _run_synth(args) -> int:
    from kinema.data.synthetic import write_dataset

    if args.clips <= 0 or args.seconds <= 0 or args.fps <= 0:
        raise ValueError("--clips, --seconds and --fps must be positive")
    write_dataset(
        args.out, clips=args.clips, seconds=args.seconds, size=args.size, fps=args.fps,
        seed=args.seed, workers=args.workers, sample_rate=args.sample_rate,
    )
    return 0


# ----------------------------------------------------------------------------- generation (kinema.pipeline)
def _guidance_options(p) -> None:
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (alone: for every latent; with --guidance-later: the "
                        "first latent and the sound) (default: the model's pipeline.json)")
    p.add_argument("--guidance-plausibility", type=float, default=None,
                   help="with guidance, keep only tokens at least this fraction as likely as the best (0: off)")
    p.add_argument("--guidance-later", type=float, default=None,
                   help="guidance for the latents after the first one (the caption decides the first alone; later "
                        "ones follow the frames before them) (default: --guidance when given, else pipeline.json)")
    p.add_argument("--plausibility-later", type=float, default=None,
                   help="--guidance-plausibility for the latents --guidance-later covers (default: "
                        "--guidance-plausibility when given, else pipeline.json)")
    p.add_argument("--motion-guidance", type=float, default=None,
                   help="on the latents --guidance-later covers, also guide away from the caption rewritten by "
                        "--motion-contrast, so the caption's motion is amplified (0: off; default: pipeline.json, "
                        "4 for kinema-tiny; with --backend dit: 0, and a given value guides every DiT step)")
    p.add_argument("--still-guidance", type=float, default=None,
                   help="beside --motion-guidance, at its own scale, also guide away from the caption with its "
                        "bouncing and falling standing still (0: off; default: pipeline.json; with --backend dit: 0)")
    # the keys of kinema.decode.motion_contrast.CONTRASTS, not imported here: it loads torch
    p.add_argument("--motion-contrast", choices=("still", "reversed"), default=None,
                   help="motion guidance's contrast: the caption with its motion standing still, or with every "
                        "slide reversed (direction alone) (default: pipeline.json, 'reversed' for kinema-tiny)")


def _gen_options(p, seconds: float | None) -> None:
    p.add_argument("-o", "--output", required=True, help="output mp4")
    p.add_argument("--seconds", type=float, default=seconds, help="length to generate")
    p.add_argument("--model", default=None, help="model directory (default: the embedded kinema-tiny)")
    p.add_argument("--seed", type=int, default=0)
    _guidance_options(p)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--candidates", type=int, default=None,
                   help="first frames drawn per text prompt; the caption scorer keeps the best (default: pipeline.json)")
    p.add_argument("--fps", type=float, default=None)
    p.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT")
    p.add_argument("--no-audio", action="store_true", help="video only")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="pass decoded frames through the diffusion decoder head (default: the model's pipeline.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _pipeline(args):
    from kinema.pipeline import Pipeline

    return Pipeline.from_pretrained(args.model)


def _generate_and_save(args, pipe, prompt, **kw) -> int:
    out = pipe(prompt, seconds=args.seconds, seed=args.seed, guidance_scale=args.guidance,
               guidance_plausibility=args.guidance_plausibility, guidance_later=args.guidance_later,
               plausibility_later=args.plausibility_later, motion_guidance=args.motion_guidance,
               still_guidance=args.still_guidance, motion_contrast=args.motion_contrast,
               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, fps=args.fps, size=args.size,
               with_audio=not args.no_audio, progress=not args.quiet, keep_partial=True,
               refine=args.refine, candidates=args.candidates, **kw)
    path = out.save(args.output)
    sound = f", sound {out.sample_rate} Hz" if out.audio is not None else ""
    print(f"{path}: {out.video.shape[0]} frames at {out.fps:g} fps ({out.duration:.2f} s), "
          f"{out.video.shape[2]}x{out.video.shape[1]}{sound}" + (" [interrupted: partial]" if out.interrupted else ""))
    return 130 if out.interrupted else 0


def _read_clip(path: str):
    from kinema.media import read_video

    return read_video(path)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="text (and optional image) to video with sound")
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("--image", default=None, help="first frame (png/jpg): image-to-video")
    p.add_argument("--negative", default=None, help="negative prompt for guidance")
    p.add_argument("--backend", choices=("ar", "dit"), default="ar",
                   help="ar: the token LM (default); dit: the diffusion transformer over latents")
    _gen_options(p, seconds=4.0)


def _run_generate(args) -> int:
    image = _read_clip(args.image).frames[0] if args.image else None
    return _generate_and_save(args, _pipeline(args), args.prompt, image=image, negative_prompt=args.negative,
                              backend=getattr(args, "backend", "ar"))


def _add_continue(sub) -> None:
    p = sub.add_parser("continue", help="continue a video (any length, window by window)")
    p.add_argument("input", help="video to continue")
    p.add_argument("--prompt", default=None)
    p.add_argument("--backward", action="store_true", help="extend before the start instead of after the end")
    _gen_options(p, seconds=10.0)


def _run_continue(args) -> int:
    clip = _read_clip(args.input)
    return _generate_and_save(args, _pipeline(args), args.prompt, video=clip,
                              task="extend_back" if args.backward else "continue")


def _add_bridge(sub) -> None:
    p = sub.add_parser("bridge", help="generate the frames between two videos")
    p.add_argument("before", help="video that comes first")
    p.add_argument("after", help="video that comes last")
    p.add_argument("--prompt", default=None)
    _gen_options(p, seconds=1.0)


def _run_bridge(args) -> int:
    a, b = _read_clip(args.before), _read_clip(args.after)
    return _generate_and_save(args, _pipeline(args), args.prompt, video=a, video_after=b, task="bridge")


def _add_v2a(sub) -> None:
    p = sub.add_parser("v2a", help="generate a sound track for a video")
    p.add_argument("input", help="video")
    p.add_argument("--prompt", default=None)
    _gen_options(p, seconds=None)


def _run_v2a(args) -> int:
    if args.no_audio:
        raise ValueError("v2a makes audio; --no-audio makes no sense here")
    return _generate_and_save(args, _pipeline(args), args.prompt, video=_read_clip(args.input), task="v2a")


# ----------------------------------------------------------------------------- eval (kinema.eval)
def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="judge generations on held-out synthetic-world prompts (JSON + HTML report)")
    p.add_argument("--model", default=None, help="model directory (default: the embedded kinema-tiny)")
    p.add_argument("--prompts", type=int, default=8, help="number of held-out prompts")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--exclude", default=None, help="training manifest.jsonl whose captions are never used as prompts")
    p.add_argument("--out", default="runs/eval", help="report directory")
    p.add_argument("--seed", type=int, default=0,
                   help="prompt i is drawn with seed SEED + i; another SEED is an independent second sample")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    _guidance_options(p)
    p.add_argument("--candidates", type=int, default=None,
                   help="first frames drawn per prompt, best kept by the caption scorer (default: pipeline.json)")
    p.add_argument("--backend", choices=("ar", "dit"), default="ar", help="generation path to judge")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="judge frames refined by the diffusion decoder head (default: the model's pipeline.json)")
    p.add_argument("--first-frame", choices=("generated", "truth"), default="generated",
                   help="truth: generate image-to-video from the synthetic world's own first frame of each prompt, "
                        "which separates what the first frame gets wrong from what the frames after it do")


def _run_eval(args) -> int:
    import json as _json

    from kinema.data.heldout import heldout_captions
    from kinema.eval.run import evaluate_pipeline, heldout_prompts, manifest_captions, render_caption

    if args.prompts <= 0 or args.seconds <= 0:
        raise ValueError("--prompts and --seconds must be positive")
    exclude = manifest_captions(args.exclude) if args.exclude else set()
    clash = [c for c in heldout_captions()[: args.prompts] if c in exclude]
    if clash:  # a training set not written by `kinema synth` (which skips them): those prompts are replaced
        print(f"eval: warning: {len(clash)} of the first {args.prompts} held-out prompts are captions of "
              f"{args.exclude}; they are skipped, so this prompt set differs from other evaluations'", file=sys.stderr)
    if args.first_frame == "truth" and args.backend != "ar":
        raise ValueError("--first-frame truth generates image-to-video, which only the ar backend does")
    pipe = _pipeline(args)

    def gen(prompt: str, seconds: float, seed: int):
        image = None
        if args.first_frame == "truth":
            (w, h), fps = pipe.config.size, pipe.config.fps
            clip = render_caption(prompt, 1.0 / fps, w, h, fps)
            if clip is None:
                raise ValueError(f"--first-frame truth: no synthetic-world scene renders the prompt {prompt!r}")
            image = clip.frames[0].numpy()
        return pipe(prompt, image=image, seconds=seconds, seed=seed, temperature=args.temperature, top_k=args.top_k,
                    guidance_scale=args.guidance, guidance_plausibility=args.guidance_plausibility,
                    guidance_later=args.guidance_later, plausibility_later=args.plausibility_later,
                    motion_guidance=args.motion_guidance, still_guidance=args.still_guidance,
                    motion_contrast=args.motion_contrast, backend=args.backend, refine=args.refine,
                    candidates=args.candidates)

    settings = {"backend": args.backend, "first_frame": args.first_frame, **pipe.sampling_options(
        guidance_scale=args.guidance, guidance_plausibility=args.guidance_plausibility,
        guidance_later=args.guidance_later, plausibility_later=args.plausibility_later,
        motion_guidance=args.motion_guidance, still_guidance=args.still_guidance,
        motion_contrast=args.motion_contrast, temperature=args.temperature, top_k=args.top_k, refine=args.refine,
        candidates=args.candidates, backend=args.backend)}
    summary = evaluate_pipeline(gen, heldout_prompts(args.prompts, exclude), args.seconds, args.out, vt=pipe.vt,
                                settings=settings, seed=args.seed)
    print(_json.dumps(summary))
    return 0


# ----------------------------------------------------------------------------- registry
COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "info": (_add_info, _run_info),
    "synth": (_add_synth, _run_synth),
    "generate": (_add_generate, _run_generate),
    "continue": (_add_continue, _run_continue),
    "bridge": (_add_bridge, _run_bridge),
    "v2a": (_add_v2a, _run_v2a),
    "eval": (_add_eval, _run_eval),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinema", description="kinema: autoregressive video+audio generation")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("kinema: interrupted", file=sys.stderr)
        return 130
    except (KinemaError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
