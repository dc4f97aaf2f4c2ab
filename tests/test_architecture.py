"""DESIGN.md's import rule: tokenizers never import lm/decode; lm never imports tokenizers."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kinema"

FORBIDDEN = {
    "tokenizers": ("kinema.lm", "kinema.decode", "kinema.pipeline", "kinema.cli"),
    "lm": ("kinema.tokenizers", "kinema.decode", "kinema.pipeline", "kinema.cli"),
    "decode": ("kinema.pipeline", "kinema.cli"),
    "data": ("kinema.pipeline", "kinema.cli"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_import_rule():
    violations = []
    for sub, banned in FORBIDDEN.items():
        for f in (PKG / sub).rglob("*.py"):
            for name in _imports(f):
                if name.startswith(banned):
                    violations.append(f"{f.relative_to(PKG.parent)} imports {name}")
    assert not violations, "\n".join(violations)


def test_no_pickle_loading():
    """Model files are safetensors; any torch.load must say weights_only=True."""
    bad = []
    for f in PKG.rglob("*.py"):
        src = f.read_text()
        for i, line in enumerate(src.splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                bad.append(f"{f.name}:{i}")
            if "pickle.load" in line:
                bad.append(f"{f.name}:{i}")
    assert not bad, bad
