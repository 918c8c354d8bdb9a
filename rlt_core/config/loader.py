"""Load a profile (configs/profiles/<name>.yaml or a path), apply overrides, validate.

Resolution order, later wins: the dataclass defaults (the paper's values), the profile chain
(a profile may say `extends: <name or path>`; the parent is loaded first and the child's keys
are merged over it, section by section), then `key.path=value` overrides. Everything is
validated before any model loads; every problem is reported in one ConfigError.

The configs directory is `$RLT_CONFIG_DIR` when set, else `configs/` at the source checkout's
root (beside `rlt_core/`), else `./configs` in the working directory.
"""

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlt_core.config.errors import ConfigError, ConfigIssue, without_keys
from rlt_core.config.schema import PipelineConfig
from rlt_core.config.serialize import to_dict

CONFIG_DIR_ENV = "RLT_CONFIG_DIR"
_OVERRIDE_HELP = "write key.path=value, e.g. teacher_rl.batch_size=512"


def config_dir() -> Path:
    """Return the directory holding `profiles/` (see the module docstring for the order)."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if checkout.is_dir() else Path.cwd() / "configs"


def available_profiles() -> list[str]:
    """Names of the profiles in `config_dir()/profiles` (files starting with `_` excluded)."""
    folder = config_dir() / "profiles"
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def resolve_profile(profile: str | Path, near: Path | None = None) -> Path:
    """Return the YAML file of `profile`: a path, or a name looked up beside `near` then in
    `config_dir()/profiles`."""
    text = str(profile)
    if isinstance(profile, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        path = path if path.is_absolute() or near is None else near / path
        if path.is_file():
            return path
        raise ConfigError([ConfigIssue("profile", f"file {str(path)!r} not found; fix the path.")])
    for folder in ([near] if near else []) + [config_dir() / "profiles"]:
        if (folder / f"{text}.yaml").is_file():
            return folder / f"{text}.yaml"
    names = available_profiles()
    close = difflib.get_close_matches(text, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    message = (
        f"no profile named {text!r} in {config_dir() / 'profiles'} (available: "
        f"{', '.join(names) or 'none'}; set {CONFIG_DIR_ENV} to use another directory).{hint}"
    )
    raise ConfigError([ConfigIssue("profile", message)])


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `update` merged in: sections merge key by key, other values replace."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_profile(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Return the raw mapping of the profile at `path` with its `extends` chain merged in.

    `profile` defaults to the file's stem, so a child names itself, not its parent.
    """
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError([ConfigIssue("extends", f"profiles extend each other: {cycle}.")])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError([ConfigIssue("", f"{path} is not valid YAML: {error}")]) from error
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", f"{path} must hold key: value pairs at top level.")])
    raw.setdefault("profile", path.stem)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = resolve_profile(parent, near=path.parent)
    return deep_merge(read_profile(parent_path, (*chain, path.resolve())), raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set the value of one `key.path=value` override in `raw` (value parsed as YAML)."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        message = f"override {override!r} is not key.path=value; {_OVERRIDE_HELP}."
        raise ConfigError([ConfigIssue(key.strip(), message)])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        message = f"value {text!r} of override {override!r} is not valid YAML: {error}"
        raise ConfigError([ConfigIssue(key.strip(), message)]) from error
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            message = f"{child!r} is a value, not a section; override {where}=... instead."
            raise ConfigError([ConfigIssue(where, message)])
        node = child
    old = node.get(parts[-1])
    both_sections = isinstance(value, dict) and isinstance(old, dict)
    node[parts[-1]] = deep_merge(old, value) if both_sections else value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown_key(key: object, known: list[str], path: str) -> ConfigIssue:
    close = difflib.get_close_matches(str(key), known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}."
    return ConfigIssue(_join(path, key), f"unknown key; {fix}")


def _build_value(value: Any, hint: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Mapping and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, Mapping):
            raise ConfigError([ConfigIssue(path, f"{value!r} is not a mapping of name: recipe.")])
        built, issues = {}, []
        for name, entry in value.items():
            try:
                built[str(name)] = build(args[1], entry, _join(path, name))
            except ConfigError as error:
                issues.extend(error.issues)
        if issues:
            raise ConfigError(issues)
        return built
    return value


def build(cls: type, raw: Any, path: str = "") -> Any:
    """Build the config dataclass `cls` from the raw mapping `raw` found at key `path`.

    Unknown keys and every nested problem are collected; a section that fails is left at its
    default so the checks across sections still run (their issues about the failed section
    are dropped). The dataclass's `__post_init__` coerces types and checks values.
    """
    if not isinstance(raw, Mapping):
        message = f"{raw!r} is not a section; write key: value pairs under it."
        raise ConfigError([ConfigIssue(path, message)])
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs, issues, failed = {}, [], set()
    for key, value in raw.items():
        if key in getattr(cls, "RETIRED_KEYS", {}):
            issues.append(ConfigIssue(_join(path, key), cls.RETIRED_KEYS[key]))
            continue
        if key not in fields:
            issues.append(_unknown_key(key, list(fields), path))
            continue
        try:
            kwargs[fields[key].name] = _build_value(
                value, hints[fields[key].name], _join(path, key)
            )
        except ConfigError as error:
            issues.extend(error.issues)
            failed.add(str(key))
    try:
        config = cls(**kwargs)
    except ConfigError as error:
        issues += [issue.under(path) for issue in without_keys(error.issues, failed)]
    if issues:
        raise ConfigError(issues)
    return config


def load_config(profile: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Return the validated PipelineConfig of `profile` with `overrides` applied.

    `profile` is a name in configs/profiles (`paper-7b`, `paper-32b`, `tiny`) or a YAML path;
    `overrides` are `key.path=value` strings (`reward.lambda=0`, `student_sft.1k.num_epochs=2`,
    `evaluate.tasks=[aime24,math500]`). Raises ConfigError listing every problem.
    """
    source = f"profile {str(profile)!r}" + (f", overrides {list(overrides)}" if overrides else "")
    issues: list[ConfigIssue] = []
    try:
        raw = deep_merge(to_dict(PipelineConfig()), read_profile(resolve_profile(profile)))
        for override in overrides:
            try:
                apply_override(raw, override)
            except ConfigError as error:
                issues.extend(error.issues)
        config = build(PipelineConfig, raw)
    except ConfigError as error:
        raise ConfigError([*issues, *error.issues], source) from None
    if issues:
        raise ConfigError(issues, source)
    return config
