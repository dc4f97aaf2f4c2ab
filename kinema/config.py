"""Dataclass configs <-> YAML/JSON, strict.

Every model and training run is described by a dataclass. This module turns nested dicts (from
YAML, JSON or a checkpoint's config.json) into those dataclasses and back, rejecting unknown keys
and values of the wrong type, and applies dotted command-line overrides such as
``model.dim=256 train.lr=3e-4``.

    cfg = load_config(TrainConfig, "configs/lm/tiny.yaml", overrides=["train.steps=10"])
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kinema.errors import ConfigError

T = TypeVar("T")

__all__ = ["from_dict", "to_dict", "load_config", "save_config", "apply_overrides", "ConfigError"]


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as plain dicts/lists, ready for JSON or YAML."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type hint; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, _where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, _where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{_where}.{name}" if _where else name
        kwargs[name] = _coerce(value, hints[name], where)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{_where or cls.__name__}: {e}") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (values parsed as YAML scalars)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {} if p not in node else node[p]
                if not isinstance(node[p], dict):
                    raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() != "" else ""
    return data


def read_mapping(path: str | Path) -> dict:
    """A YAML or JSON file as a dict (safe loaders only)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Dataclass ``cls`` from a YAML/JSON file (or its defaults), then dotted overrides."""
    base = to_dict(cls()) if path is None else read_mapping(path)
    return from_dict(cls, apply_overrides(base, overrides or []))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (or JSON when the suffix is .json)."""
    from kinema.checkpoint import atomic_write_text

    d = to_dict(cfg)
    path = Path(path)
    text = json.dumps(d, indent=2) if path.suffix == ".json" else yaml.safe_dump(d, sort_keys=False)
    atomic_write_text(path, text)
