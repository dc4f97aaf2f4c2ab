"""Shared fixtures. Tests run on CPU, single-threaded math where it keeps them predictable."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts are not a package), registered in
    sys.modules so dataclasses and pickling inside it work."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def media_root() -> Path:
    """Real media for tests: $KINEMA_TEST_MEDIA, else ../shared/media next to the repository."""
    return Path(os.environ.get("KINEMA_TEST_MEDIA", REPO.parent / "shared" / "media"))


@pytest.fixture
def media_dir() -> Path:
    root = media_root()
    if not root.is_dir():
        pytest.skip(f"real media folder {root} absent")
    return root


def _run_killed_resumed_and_straight(cmd, a: Path, b: Path, env: dict, stop_args: tuple[str, ...], timeout: int = 600,
                                  after_kill=None):
    """Run ``cmd(b)`` straight through while ``cmd(a, *stop_args)`` is stopped after step 2 (exit 17)
    and ``cmd(a)`` resumes it; asserts the exits and the "resumed from ... at step 2" message.
    ``after_kill()`` runs between the stop and the resume (to check what the stopped run left)."""
    import subprocess

    straight = subprocess.Popen(cmd(b), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed = subprocess.run(cmd(a, *stop_args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        assert killed.returncode == 17, killed.stdout[-3000:] + killed.stderr[-3000:]
        if after_kill is not None:
            after_kill()
        resumed = subprocess.run(cmd(a), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout, resumed.stdout[-3000:]
        out, _ = straight.communicate(timeout=timeout)
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()
    assert straight.returncode == 0, out[-3000:]


@pytest.fixture
def killed_and_straight_runs():
    """``run(cmd, a, b, env, stop_args, timeout=, after_kill=)``: a run killed after step 2 and resumed in ``a``, the
    same run uninterrupted in ``b`` (in parallel); the test then compares what the two wrote."""
    return _run_killed_resumed_and_straight
