"""HTML report of an evaluation: the summary table, a bar plot beside the ground-truth reference,
and a grid of the generated clips as GIFs with their per-clip scores."""
from __future__ import annotations

import html
import json
from pathlib import Path

__all__ = ["write_html", "plot_summary", "frames_grid"]

METRICS = ("prompt_alignment", "motion_correct", "persistence_frames", "av_sync_within_one_frame")


def plot_summary(summary: dict, path: Path) -> None:
    """Bar plot: generated vs the synthetic world's own render of the same prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = summary.get("generated", {})
    ref = summary.get("reference_truth", {})
    xs = range(len(METRICS))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([x - 0.2 for x in xs], [gen.get(m) or 0 for m in METRICS], 0.4, label="kinema")
    if ref:
        ax.bar([x + 0.2 for x in xs], [ref.get(m) or 0 for m in METRICS], 0.4, label="ground truth")
    ax.set_xticks(list(xs), [m.replace("_", "\n") for m in METRICS], fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_html(path: str | Path, summary: dict, clips: list[dict]) -> Path:
    path = Path(path)
    plot_summary(summary, path.parent / "summary.png")
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(summary.get('generated', {}).get(k))}</td>"
        f"<td>{_fmt(summary.get('reference_truth', {}).get(k))}</td></tr>"
        for k in summary.get("generated", {}))
    cells = "".join(
        f"<div class='c'><img src='{html.escape(c['gif'])}'><p>{html.escape(c['caption'])}</p>"
        f"<p>aligned {c['aligned']} (colours {c['colors_aligned']}, shapes {_fmt(c['shapes_right'])})"
        f" · motion {_fmt(c['motion_correct'])} · persist {_fmt(c['frames_all_objects'])}</p></div>"
        for c in clips)
    extra = {k: v for k, v in summary.items() if k not in ("generated", "reference_truth")}
    path.write_text(f"""<!doctype html><meta charset="utf-8"><title>kinema evaluation</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px}} .c{{display:inline-block;width:200px;vertical-align:top;font-size:11px}}
.c img{{width:192px;image-rendering:pixelated}}</style>
<h1>kinema evaluation</h1>
<table border=1><tr><th>metric</th><th>kinema</th><th>ground-truth render</th></tr>{rows}</table>
<pre>{html.escape(json.dumps(extra, indent=1))}</pre>
<img src="summary.png"><h2>samples</h2>{cells}
""")
    return path


def _fmt(v) -> str:
    if isinstance(v, dict):  # e.g. motion_by_kind
        return ", ".join(f"{html.escape(str(k))} {_fmt(x)}" for k, x in v.items()) or "–"
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def frames_grid(videos: list, path: str | Path, every: int = 4, max_cols: int = 8, scale: int = 1) -> Path:
    """A PNG with one row per video (uint8 (T, H, W, 3)): every ``every``-th frame side by side."""
    import numpy as np
    from PIL import Image

    rows = []
    max_cols = min(max_cols, max(len(v[::every]) for v in videos))
    for v in videos:
        fr = [f.numpy() if hasattr(f, "numpy") else np.asarray(f) for f in v[::every][:max_cols]]
        pad = [np.zeros_like(fr[0])] * (max_cols - len(fr))
        rows.append(np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0)), constant_values=255) for f in fr + pad], 1))
    img = Image.fromarray(np.concatenate(rows, 0))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    img.save(path, optimize=True)
    return path
