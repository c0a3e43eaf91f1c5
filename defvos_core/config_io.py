"""Build typed dataclass configs from dicts, YAML files and `key.sub=value` CLI overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated field type (dataclasses, tuples, optionals)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        non_none = [arg for arg in args if arg is not type(None)]
        return _convert(value, non_none[0], where)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [part for part in value.replace("x", ",").split(",") if part]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a sequence, got {value!r}")
        element = args[0] if args else str
        return tuple(_convert(item, element, where) for item in value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, args[0] if args else str, where) for item in value]
    if annotation is bool:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if annotation in (int, float, str):
        try:
            return annotation(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}") from error
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Instantiate dataclass `cls` from `values`; unknown keys are an error naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    kwargs = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Return a plain dict (tuples as lists) of a dataclass config, ready for YAML/JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "c=x"] into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` into a copy of `base`."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type[T], yaml_path: str | Path | None = None,
                overrides: list[str] | None = None, defaults: T | None = None) -> T:
    """Defaults (or `defaults`) <- YAML file <- CLI overrides, as an instance of `cls`."""
    values = to_dict(defaults if defaults is not None else cls())
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{path}: cannot read config ({error})") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        values = merge(values, loaded)
    if overrides:
        values = merge(values, parse_overrides(overrides))
    return from_dict(cls, values)
