"""Resolved configs as plain data: dict, YAML, and a stable digest for cache keys."""

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml


def to_dict(obj: Any) -> Any:
    """Return a config (or any nesting of configs, mappings, tuples) as plain dicts and lists.

    Keys are the YAML keys (`lambda`, not `lam`), so the result loads back unchanged.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            field.metadata.get("key", field.name): to_dict(getattr(obj, field.name))
            for field in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        return {str(key): to_dict(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(item) for item in obj]
    return obj


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
