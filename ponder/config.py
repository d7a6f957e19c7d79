"""Configs are dataclasses loaded from YAML; every bad field is named in the error."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ponder import PonderError

T = TypeVar("T")


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a)
            except PonderError as e:
                errors.append(str(e))
        raise PonderError(errors[0] if errors else f"config field {name!r}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise PonderError(f"config field {name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PonderError(f"config field {name!r} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(hint) or (Any,)
        return [_check_type(name, v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise PonderError(f"config field {name!r} must be a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 as a string
        except ValueError:
            pass
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool) or not isinstance(value, hint):
            raise PonderError(f"config field {name!r} must be {hint.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass, refusing unknown fields and wrong types by name."""
    if not isinstance(data, dict):
        raise PonderError(f"config must be a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PonderError(f"unknown config field {unknown[0]!r} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The field: value mapping of a YAML (or JSON) file, or a one-line error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise PonderError(f"{what} does not exist: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PonderError(f"{what} {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:  # an empty file would silently give every default
        raise PonderError(f"{what} {p} is empty")
    if not isinstance(data, dict):
        raise PonderError(f"{what} {p} must be a mapping of field: value, not {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    data: dict[str, Any] = read_mapping(path) if path is not None else {}
    data.update(overrides or {})
    return from_dict(cls, data)


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line, the value read as YAML."""
    if "=" not in text:
        raise PonderError(f"override must look like key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
