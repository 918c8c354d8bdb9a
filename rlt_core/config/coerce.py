"""Coerce values read from YAML (or passed from Python) to a config field's type hint.

Supported hints: `bool`, `int`, `float`, `str`, `Literal[...]`, `X | None`, `tuple[X, ...]`,
`Mapping[str, X]` (stored read-only as a `MappingProxyType`) and config dataclasses. Coercion is
strict except where YAML needs help: an int is accepted for a float, and a float written as
`1e-6` (which PyYAML reads as a string) is parsed.
"""

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from rlt_core.config.errors import ConfigError, ConfigIssue


def _fail(path: str, value: Any, kind: str, example: str) -> ConfigError:
    return ConfigError([ConfigIssue(path, f"{value!r} is not {kind}; write {example}.")])


def _coerce_scalar(value: Any, hint: type, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, value, "a boolean", "true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, value, "an integer", "a whole number such as 16")
    if hint is float:
        return _coerce_float(value, path)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(path, value, "a string", "text, quoted if YAML would read it as another type")
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _coerce_float(value: Any, path: str) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise _fail(path, value, "a finite number", "a number such as 0.7 or 1.0e-6")
    return number


def _coerce_literal(value: Any, choices: tuple[Any, ...], path: str) -> Any:
    if value in choices and type(value) in {type(choice) for choice in choices}:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    allowed = ", ".join(repr(c) for c in choices)
    message = f"{value!r} is not one of {allowed}.{hint}"
    raise ConfigError([ConfigIssue(path, message)])


def _coerce_tuple(value: Any, item_hint: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise _fail(path, value, "a list", "a list such as [a, b]")
    return tuple(coerce(item, item_hint, f"{path}[{i}]") for i, item in enumerate(value))


def _coerce_mapping(value: Any, value_hint: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, value, "a mapping", "name: value pairs")
    items = {str(key): coerce(item, value_hint, f"{path}.{key}") for key, item in value.items()}
    return types.MappingProxyType(items)


def coerce(value: Any, hint: Any, path: str = "") -> Any:
    """Return `value` converted to the type `hint`, or raise ConfigError naming `path`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return _coerce_literal(value, args, path)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return coerce(value, inner, path)
    if origin is tuple:
        return _coerce_tuple(value, args[0], path)
    if origin in (Mapping, typing.Mapping, dict):
        return _coerce_mapping(value, args[1], path)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise _fail(path, value, f"a {hint.__name__}", f"a {hint.__name__} section")
    return _coerce_scalar(value, hint, path)


def normalize_fields(obj: Any) -> list[ConfigIssue]:
    """Coerce every field of the frozen dataclass `obj` in place; return the type problems.

    Runs from `__post_init__`, so `RewardConfig(lam=3)` stores `3.0` and a config built in
    Python digests the same as one loaded from YAML. A field of the wrong type is reset to its
    default so that the value checks of the other fields can still run and be reported.
    """
    hints = typing.get_type_hints(type(obj))
    issues: list[ConfigIssue] = []
    for field in dataclasses.fields(obj):
        key = field.metadata.get("key", field.name)
        try:
            value = coerce(getattr(obj, field.name), hints[field.name], key)
        except ConfigError as error:
            issues.extend(error.issues)
            value = field.default if field.default_factory is MISSING else field.default_factory()
        object.__setattr__(obj, field.name, value)
    return issues
