"""YAML + ``key=value`` loading for the focus-region configs (generation, DPO, online GRPO).

Every field is typed; values are coerced to the field's type (a YAML ``5e-6`` is a string to PyYAML)
and an unknown key, a bad value or a missing file is a ValueError naming the source and the key.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(name: str, value: Any, annotation: Any, source: str) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(annotation):
            return None
        raise ValueError(f"{source}: {name} may not be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _coerce(name, value, args[0], source)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(f"{name}[{i}]", v, args[0] if args else Any, source) for i, v in enumerate(items)]
    try:
        if annotation is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {name}: {e}") from None
    return value


def from_dict(cls: type[T], d: dict[str, Any], source: str) -> T:
    """``cls(**d)`` with every value coerced to its field's type; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, v, hints[k], source) for k, v in d.items()})


def load(cls: type[T], path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> T:
    """The YAML file at ``path`` (None: defaults) with ``overrides`` (``key=value`` strings, values parsed
    as YAML, or a dict) on top."""
    d: dict[str, Any] = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ValueError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a mapping of keys to values")
        d.update(loaded)
    if isinstance(overrides, dict):
        d.update({k: v for k, v in overrides.items() if v is not None})
    else:
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r}: expected key=value")
            d[key] = yaml.safe_load(value)
    return from_dict(cls, d, path or "config")
