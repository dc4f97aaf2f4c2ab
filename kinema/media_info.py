"""``describe(path)``: one paragraph on what kinema.media sees in a file, for ``kinema info``.

Decodes every packet (without converting frames to RGB) so damage is found, not guessed: skipped
packets, early end of data, frames out of timestamp order, sparse timestamps, FFmpeg warnings.
"""
from __future__ import annotations

import math
from pathlib import Path

import av

from kinema.media import _guard, _open, _origin, _read_audio_window, _src_fps, _Stats, _stream, _video_frames


@_guard
def describe(path: str | Path) -> str:
    """One paragraph on what read_video sees: container, duration, streams, and any damage.

    Decodes every packet (without converting frames) so damage is found, not guessed.
    """
    with _open(path) as c:
        fmt = c.format.long_name or c.format.name
        dur = (c.duration or 0) / 1e6
        parts = [f"{path}: {fmt}, {dur:.2f} s."]
        notes: list[str] = []  # oddities that reading copes with
        damage: list[str] = []  # data that could not be decoded
        vs = _stream(c, "video")
        v_info = None
        if vs is not None:
            cc = vs.codec_context
            v_info = (cc.name, cc.width, cc.height, _src_fps(vs), vs.frames)
    if vs is not None:
        with _open(path) as c, av.logging.Capture() as logs:
            level = av.logging.get_level()
            av.logging.set_level(av.logging.WARNING)
            try:
                st = _Stats()
                for _ in _video_frames(c, _stream(c, "video"), st):
                    pass
            finally:
                av.logging.set_level(level)
        name, w, h, fps, declared = v_info
        span = (st.last_time - st.first_time + 1 / fps) if st.first_time is not None else 0.0
        parts.append(f"Video: {name} {w}x{h} at {fps:.3f} fps, {st.frames} frames decoded"
                     + (f" of {declared} declared" if declared and declared != st.frames else "")
                     + f" spanning {span:.2f} s.")
        if st.bad:
            damage.append(f"{st.bad} damaged video packet(s) skipped ({st.errors[0] if st.errors else ''})")
        if st.read_error:
            damage.append(f"reading stopped early: {st.read_error} (truncated or damaged file)")
        if st.out_of_order:
            notes.append(f"{st.out_of_order} video frame(s) decoded out of timestamp order (reordered)")
        if dur > 0 and st.frames and abs(span - dur) > max(0.5, 0.1 * dur):
            notes.append(f"the container declares {dur:.2f} s but the video decodes to {span:.2f} s")
        if st.frames and span * fps > st.frames * 1.2:
            notes.append(f"sparse timestamps: {st.frames} frames over {span * fps:.0f} frame slots (frames repeat)")
        warn = sorted({m.strip().splitlines()[0] for lvl, _, m in logs if lvl <= av.logging.WARNING})
        if warn:
            notes.append("FFmpeg warnings: " + "; ".join(warn[:3]))
    else:
        parts.append("No video stream.")
    with _open(path) as c:
        a = _stream(c, "audio")
        if a is not None:
            ast = _Stats()
            raw, rate = _read_audio_window(c, _origin(c), math.inf, ast)
            parts.append(f"Audio: {a.codec_context.name} {rate} Hz, {a.codec_context.channels} channel(s), "
                         f"{raw.shape[1] / rate:.2f} s decoded.")
            if ast.bad:
                damage.append(f"{ast.bad} damaged audio packet(s) replaced by silence ({ast.errors[0] if ast.errors else ''})")
            if ast.read_error:
                damage.append(f"audio reading stopped early: {ast.read_error}")
        else:
            parts.append("No audio stream.")
    if damage:
        parts.append("DAMAGED: " + "; ".join(damage) + ".")
    if notes:
        parts.append("Notes: " + "; ".join(notes) + ".")
    return " ".join(parts)
