"""The exceptions a user can cause. The CLI turns any of these into one line and a non-zero exit."""
from __future__ import annotations


class KinemaError(Exception):
    """Base class of every error kinema raises on purpose for bad input."""


class MediaError(KinemaError):
    """A media file is missing, empty, corrupt or not something FFmpeg can read."""


class ConfigError(KinemaError, ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


class CheckpointError(KinemaError):
    """A checkpoint directory is missing, incomplete, corrupt or of the wrong kind."""


class ResourceError(KinemaError, ValueError):
    """A request would not fit in memory; refused up front instead of being killed by the OS."""
