"""Value checks shared by the stage configs; each returns the problems it finds (never raises).

The configs call `finalize` from `__post_init__`: types first (`normalize_fields`), then the
value checks, then one ConfigError with every problem. Messages name the key, the bad value,
why it is wrong (the field's help text, which cites the paper) and the fix.
"""

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlt_core.config.coerce import normalize_fields
from rlt_core.config.errors import ConfigError, ConfigIssue, without_keys

# Hub ids `org/name` (datasets may add `:split`, as rlt_core.data.sources reads them).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*?(@[\w.-]+)?$")  # [@revision]
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+?(:[\w.-]+)?(@[\w.-]+)?$")
OFFLINE_REF = re.compile(r"^offline:[A-Za-z0-9][\w.-]*$")
LOCAL_PREFIXES = ("/", "./", "../", "~")
DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


def finalize(obj: Any, value_issues: Callable[[], list[ConfigIssue]]) -> None:
    """Normalise the field types of `obj`, run its value checks, raise every problem at once."""
    issues = normalize_fields(obj)
    issues += without_keys(value_issues(), {issue.key for issue in issues})
    if issues:
        raise ConfigError(issues)


def _key_and_help(obj: Any, name: str) -> tuple[str, str]:
    field = {f.name: f for f in dataclasses.fields(obj)}[name]
    return field.metadata.get("key", name), field.metadata.get("help", "")


def bad(obj: Any, name: str, rule: str, fix: str) -> ConfigIssue:
    """An issue for field `name` of `obj`: its value breaks `rule`; `fix` says what to set."""
    key, help_text = _key_and_help(obj, name)
    why = f" ({help_text})" if help_text else ""
    return ConfigIssue(key, f"{getattr(obj, name)!r} {rule}{why}; {fix}.")


def positive(obj: Any, *names: str) -> list[ConfigIssue]:
    """Issues for the fields among `names` that are not > 0 (None is allowed)."""
    return [
        bad(obj, n, "must be > 0", "set a positive value")
        for n in names
        if getattr(obj, n) is not None and getattr(obj, n) <= 0
    ]


def non_negative(obj: Any, *names: str) -> list[ConfigIssue]:
    """Issues for the fields among `names` that are < 0."""
    return [bad(obj, n, "must be >= 0", "set 0 or more") for n in names if getattr(obj, n) < 0]


def probability(obj: Any, *names: str) -> list[ConfigIssue]:
    """Issues for the fields among `names` outside [0, 1]."""
    return [
        bad(obj, n, "must be a probability in [0, 1]", "set a value between 0 and 1")
        for n in names
        if not 0.0 <= getattr(obj, n) <= 1.0
    ]


def sampling(obj: Any) -> list[ConfigIssue]:
    """Checks of the generation fields shared by every sampling stage (Tables 3, 4, 6, 7)."""
    issues = positive(obj, "temperature", "repetition_penalty", "top_k")
    issues += probability(obj, "top_p", "min_p")
    if obj.top_p == 0.0:
        issues.append(bad(obj, "top_p", "keeps no token", "set top_p in (0, 1], e.g. 1.0"))
    return issues


def _is_local(reference: str) -> bool:
    return reference.startswith(LOCAL_PREFIXES)


def model_reference(obj: Any, name: str) -> list[ConfigIssue]:
    """Check a model reference: hub id `org/name`, existing local path, or `offline:<name>`."""
    reference = getattr(obj, name)
    if OFFLINE_REF.match(reference) or (not _is_local(reference) and HUB_ID.match(reference)):
        return []
    if _is_local(reference):
        if Path(reference).expanduser().exists():
            return []
        return [bad(obj, name, "is a local path that does not exist", "fix the path")]
    rule = "is neither a hub id 'org/name', a local path nor 'offline:<name>'"
    fix = "write e.g. Qwen/Qwen2.5-7B-Instruct, ./checkpoints/teacher or offline:smollm2-135m"
    return [bad(obj, name, rule, fix)]


def data_source(source: str, path: str) -> list[ConfigIssue]:
    """Check a dataset source at key `path`: `scheme://` URI, existing local path, or hub id."""
    if "://" in source:
        return []
    if _is_local(source) or source.lower().endswith(DATA_EXTENSIONS):
        if Path(source).expanduser().exists():
            return []
        message = f"{source!r} is a local path that does not exist; fix the path."
        return [ConfigIssue(path, message)]
    if HUB_DATASET.match(source):
        return []
    message = (
        f"{source!r} is neither a hub id 'org/name[:split]', a URI such as 's3://bucket/x.jsonl'"
        " nor a local path (starting with /, ./, ../ or ~); write e.g."
        " bespokelabs/Bespoke-Stratos-17k or ./data/corpus.jsonl."
    )
    return [ConfigIssue(path, message)]
