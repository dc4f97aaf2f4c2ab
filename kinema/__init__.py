"""kinema: video (with sound) generation by next-token prediction.

The public API (see DESIGN.md section 3)::

    import kinema
    pipe = kinema.Pipeline.from_pretrained()
    out = pipe("a red circle bouncing on a black background", seconds=4.0, seed=0)
    out.save("out.mp4")

Heavy modules are imported lazily so `import kinema` stays cheap.
"""
from __future__ import annotations

from kinema.errors import CheckpointError, ConfigError, KinemaError, MediaError, ResourceError

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "kinema.pipeline",
    "GenerationOutput": "kinema.pipeline",
    "Clip": "kinema.media",
    "read_video": "kinema.media",
    "write_video": "kinema.media",
    "save_pretrained": "kinema.checkpoint",
    "load_pretrained": "kinema.checkpoint",
}

__all__ = ["KinemaError", "MediaError", "ConfigError", "CheckpointError", "ResourceError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kinema' has no attribute {name!r}")
