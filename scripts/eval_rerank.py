"""Does best-of-K reranking pick better candidates? Judge every candidate with the eval's detector.

    python scripts/eval_rerank.py --prompts 48 --candidates 8 [--span window] [--model DIR] [--scorer DIR]

For each held-out prompt (the ones ``kinema eval`` uses, training captions excluded), draw
``--candidates`` first latent frames (``--span first``) or whole first windows (``--span window``,
``window_latents`` latents = 17 frames) of a text-to-video call in one batch, exactly as the pipeline
does (guidance from pipeline.json, seed = prompt index), decode each, and judge it alone with the
evaluation's detector (colours right, shape right, aligned; for windows also motion and persistence).
Then report the mean score of the candidate each ranking picks:

- ``first``: candidate 0 (what decoding without reranking gives);
- ``mean``: the average candidate (the expectation of a random pick);
- ``oracle``: the best candidate by the detector (the ceiling any ranking can reach);
- ``pmi``: the LM's own pointwise mutual information with the caption (kinema.decode.rerank.pmi);
- ``scorer``: the caption scorer (kinema.decode.caption_scorer), if one is given or shipped; for a
  window, the mean of its score on every latent frame.

The scorer never sees the detector; it is trained on the training clips' tokens only. Writes a JSON
summary and a PNG of the first prompts' candidates with each ranking's pick marked.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.decode.caption_scorer import CaptionScorer  # noqa: E402
from kinema.decode.generate import generate  # noqa: E402
from kinema.decode.rerank import pmi  # noqa: E402
from kinema.eval.metrics import evaluate_clip  # noqa: E402
from kinema.eval.run import heldout_prompts, manifest_captions  # noqa: E402
from kinema.lm import layout  # noqa: E402
from kinema.pipeline import Pipeline  # noqa: E402
from kinema.pipeline_io import to_uint8  # noqa: E402
from kinema.training import autocast  # noqa: E402

KEYS = ("colors_aligned", "shapes_right", "aligned")
WINDOW_KEYS = KEYS + ("motion_correct", "frames_all_objects")


def candidates_for(pipe: Pipeline, prompt: str, k: int, seed: int, span: str = "first"
                   ) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """k candidates for ``prompt``: head ids (k, n), generate's scores, codes (k, t, h, w) (t = 1 for
    ``span="first"``, the window's latents for ``"window"``)."""
    v, c = pipe.vocab, pipe.config
    w, h = c.size[0] // pipe.vt.spatial_factor, c.size[1] // pipe.vt.spatial_factor
    text = pipe.tt.encode(prompt)
    seq = layout.build_prefix("t2v", v, text=text, max_text_tokens=c.max_text_tokens)
    useq = layout.build_prefix("t2v", v, text=None, drop_text=True, max_text_tokens=c.max_text_tokens)
    grid = (c.window_latents, h, w)
    t = 1 if span == "first" else c.window_latents
    n = 1 + t * h * w * v.video_tokens_per_code
    head, _ = layout.output_plan("t2v", v, grid, start_pos=seq.next_pos).split(n)
    u_head, _ = layout.output_plan("t2v", v, grid, start_pos=useq.next_pos).split(n)
    g = torch.Generator().manual_seed(seed)
    heads, scores = generate(pipe.lm, [seq.ids] * k, [seq.positions] * k, [head] * k, uncond_ids=[useq.ids] * k,
                             uncond_positions=[useq.positions] * k, uncond_plan=[u_head] * k,
                             guidance_scale=c.guidance_scale, temperature=c.temperature, top_k=c.top_k,
                             top_p=c.top_p, generator=g, return_scores=True)
    codes = torch.stack([v.ids_to_video(r[1:]).view(t, h, w) for r in heads])
    return heads, scores, codes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the embedded kinema-tiny)")
    ap.add_argument("--scorer", default=None, help="caption scorer directory (default: the model's own, if any)")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--span", choices=("first", "window"), default="first",
                    help="rerank the first latent frame, or the whole first window")
    ap.add_argument("--exclude", default="data/synth_train/manifest.jsonl",
                    help="training manifest whose captions are not used as prompts ('' for none)")
    ap.add_argument("--out", default="runs/eval_rerank")
    args = ap.parse_args(argv)
    if args.prompts < 1 or args.candidates < 2:
        print("error: --prompts >= 1 and --candidates >= 2", file=sys.stderr)
        return 2
    pipe = Pipeline.from_pretrained(args.model)
    scorer = CaptionScorer.from_pretrained(args.scorer) if args.scorer else pipe.caption_scorer
    exclude = manifest_captions(args.exclude) if args.exclude and Path(args.exclude).is_file() else set()
    prompts = heldout_prompts(args.prompts, exclude)
    rankings = ["first", "mean", "oracle", "pmi"] + (["scorer"] if scorer is not None else [])
    keys = KEYS if args.span == "first" else WINDOW_KEYS
    picked = {r: {k: [] for k in keys} for r in rankings}
    rows, shown = [], []
    for i, prompt in enumerate(tqdm(prompts, desc="rerank", unit="prompt")):
        with autocast(pipe.device, enabled=pipe.config.bf16):
            heads, scores, codes = candidates_for(pipe, prompt, args.candidates, i, args.span)
            frames = [to_uint8(pipe.vt.decode(codes[j:j + 1])[0].float()) for j in range(len(codes))]
        judged = [evaluate_clip(f, prompt, pipe.config.fps) for f in frames]
        val = np.array([[float(j[k] or 0.0) for k in keys] for j in judged])  # (K, keys); nothing seen -> 0
        rank = {"pmi": pmi(heads, scores).float()}
        if scorer is not None:
            K, t = codes.shape[:2]
            rank["scorer"] = scorer.score(codes.flatten(0, 1), pipe.tt.encode(prompt)).float().view(K, t).mean(1)
        pick = {"first": 0, "oracle": int(np.lexsort(val[:, :3].T)[-1])}  # aligned first, then shape, then colours
        pick.update({r: int(s.argmax()) for r, s in rank.items()})
        for r in rankings:
            for n, k in enumerate(keys):
                picked[r][k].append(float(val[:, n].mean()) if r == "mean" else float(val[pick[r], n]))
        rows.append({"prompt": prompt, "judged": val.tolist(), "picks": pick,
                     **{r: [round(float(x), 4) for x in s] for r, s in rank.items()}})
        if len(shown) < 6:
            shown.append((torch.stack([f[0] for f in frames]), pick))  # each candidate's first frame
    summary = {r: {k: round(float(np.mean(v)), 3) for k, v in picked[r].items()} for r in rankings}
    summary = {"prompts": len(prompts), "candidates": args.candidates, "span": args.span, "picked": summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rerank.json").write_text(json.dumps({"summary": summary, "prompts": rows}, indent=1))
    _grid(shown, out / "rerank.png")
    print(json.dumps(summary))
    return 0


def _grid(shown: list[tuple[torch.Tensor, dict]], path: Path) -> None:
    """Rows = prompts, columns = candidates; a border marks the scorer's pick (green) or PMI's (red)."""
    from PIL import Image

    k, h, w = shown[0][0].shape[0], shown[0][0].shape[1], shown[0][0].shape[2]
    pad = 4
    img = np.full((len(shown) * (h + 2 * pad), k * (w + 2 * pad), 3), 255, np.uint8)
    for r, (frames, pick) in enumerate(shown):
        for c in range(k):
            y, x = r * (h + 2 * pad), c * (w + 2 * pad)
            colour = (40, 200, 60) if pick.get("scorer") == c else (230, 40, 40) if pick["pmi"] == c else None
            if colour is not None:
                img[y:y + h + 2 * pad, x:x + w + 2 * pad] = colour
            img[y + pad:y + pad + h, x + pad:x + pad + w] = frames[c].numpy()
    Image.fromarray(img).save(path)


if __name__ == "__main__":
    sys.exit(main())
