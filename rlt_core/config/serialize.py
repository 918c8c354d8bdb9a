"""Resolved configs as plain data: dict, YAML, and a stable digest for cache keys."""

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml


class Reference(str):
    """A config value that names something a stage reads (a model, a data set), as a stage's
    key config holds it (`key_dict`): the key then holds what it names, not only its name
    (`rlt_core.identity.references`). A `str` in every other respect (JSON, comparisons)."""

    __slots__ = ()


class TokenizerReference(Reference):
    """A `Reference` to a model of which a stage reads only the tokenizer: a local model folder
    is then keyed by its tokenizer files alone, so retrained weights beside the same tokenizer
    are the same input (`rlt_core.identity.tokenizer_identity`)."""

    __slots__ = ()


def to_dict(obj: Any) -> Any:
    """Return a config (or any nesting of configs, mappings, tuples) as plain dicts and lists.

    Keys are the YAML keys (`lambda`, not `lam`), so the result loads back unchanged.
    """
    return _plain(obj, references=False)


def key_dict(obj: Any) -> Any:
    """`to_dict` for a stage's key: the value of every field marked `reference` in its
    metadata (each string under it, when it is a mapping) is a `Reference`. Which fields name
    a model or a data set is declared on the field, so a field of the same name elsewhere is
    just a string."""
    return _plain(obj, references=True)


def _plain(obj: Any, *, references: bool) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for field in dataclasses.fields(obj):
            value = _plain(getattr(obj, field.name), references=references)
            if references and field.metadata.get("reference"):
                value = _as_reference(value)
            out[field.metadata.get("key", field.name)] = value
        return out
    if isinstance(obj, Mapping):
        return {str(key): _plain(value, references=references) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(item, references=references) for item in obj]
    return obj


def _as_reference(value: Any) -> Any:
    """A reference field's plain value with its names marked (non-empty strings, at any
    depth of mappings)."""
    if isinstance(value, str):
        return Reference(value) if value else value
    if isinstance(value, dict):
        return {key: _as_reference(item) for key, item in value.items()}
    return value


def to_yaml(obj: Any) -> str:
    """Return the resolved config as YAML, in field order; `load_config` reads it back."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


def config_digest(obj: Any) -> str:
    """Return the sha256 hex digest of the canonical JSON of `obj` (a config or plain data).

    Canonical: sorted keys, no whitespace, UTF-8. Field types are normalised when a config is
    built (ints become floats in float fields), so a config built in Python and the same
    config loaded from YAML digest alike.
    """
    text = json.dumps(
        to_dict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
