"""Shared fixtures. Tests run on CPU, single-threaded math where it keeps them predictable."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def media_root() -> Path:
    """Real media for tests: $KINEMA_TEST_MEDIA, else ../shared/media next to the repository."""
    return Path(os.environ.get("KINEMA_TEST_MEDIA", REPO.parent / "shared" / "media"))


@pytest.fixture
def media_dir() -> Path:
    root = media_root()
    if not root.is_dir():
        pytest.skip(f"real media folder {root} absent")
    return root
