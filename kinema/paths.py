"""Where the embedded default model (kinema-tiny) lives inside the installed package."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "kinema-tiny"

COMPONENTS = ("video_tokenizer", "audio_codec", "text_tokenizer", "lm", "diffusion_decoder", "dit")


def default_component_dir(component: str) -> Path:
    """Directory of one component of the embedded default, e.g. ``default_component_dir("lm")``."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    return DEFAULT_MODEL / component
