"""Reading raw tables: local files, fsspec URIs (s3://) and Hugging Face Hub ids.

`read_table` accepts, in this order of precedence:

- a URI with a scheme (`s3://bucket/key.parquet`, `file:///...`, `memory://...`): read through
  fsspec; s3fs takes credentials and the endpoint from the standard AWS variables
  (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, ...) or from
  `storage_options` (e.g. `{"client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}}`);
- an existing local path;
- a Hub id `org/name` or `org/name:split` (split `train` by default), loaded with
  `datasets.load_dataset` (a config such as GPQA's `gpqa_diamond` goes in `hub_config`).

A file is `.jsonl`, `.json` (a JSON array of records, or JSON lines), `.parquet` or `.csv`
(read as strings, empty cells stay ""). A directory is read as a set of `.parquet` shards (found
recursively, concatenated in sorted path order, so the row order is stable).

Values keep their JSON types (no dtype guessing: an answer "033" stays the string "033").
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd

ACCEPTED_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
DEFAULT_HUB_SPLIT = "train"

# `org/name`, `org/name:split`, either pinned with `@revision` (a commit, tag or branch); Hub
# names use letters, digits, `-`, `_` and `.`.
_HUB_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?::(?P<split>[\w.-]+))?(?:@(?P<revision>[\w.-]+))?$"
)


class SourceUnavailableError(OSError):
    """A Hub dataset that could not be loaded (offline, gated, misspelled, unknown split)."""


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face Hub dataset reference parsed from `org/name[:split]`."""

    repo_id: str
    split: str
    revision: str | None = None


def parse_hub_id(source: str) -> HubSource | None:
    """Return the Hub reference when `source` reads as `org/name[:split][@revision]`, else None.

    A string with a URI scheme or a known file extension is never a Hub id.
    """
    if "://" in source or _extension(source) in ACCEPTED_EXTENSIONS:
        return None
    match = _HUB_ID.match(source)
    if match is None:
        return None
    split = match["split"] or DEFAULT_HUB_SPLIT
    return HubSource(repo_id=match["repo"], split=split, revision=match["revision"])


def source_name(source: str) -> str:
    """A short, machine-independent name for a source, used in row ids and the `source` column.

    The file stem (`data/bespoke_sample.jsonl` -> `bespoke_sample`), the directory name of a
    shard directory, or the dataset name of a Hub id (`bespokelabs/Bespoke-Stratos-17k:train` ->
    `Bespoke-Stratos-17k`).
    """
    hub = parse_hub_id(source) if not _local_exists(source) else None
    if hub is not None:
        return hub.repo_id.split("/")[-1]
    path = source.split("://", 1)[-1].rstrip("/")
    name = PurePosixPath(path).name
    extension = _extension(name)
    return name[: -len(extension)] if extension in ACCEPTED_EXTENSIONS else name


def read_table(
    uri: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    hub_config: str | None = None,
) -> pd.DataFrame:
    """Read a table from a local path, an fsspec URI or a Hub id (see the module docstring).

    Raises FileNotFoundError for a missing path (named), ValueError for an unsupported
    extension (the accepted ones are listed) and SourceUnavailableError for a Hub id that
    cannot be loaded (with how to use a local copy instead).
    """
    if "://" not in uri and not _local_exists(uri):
        hub = parse_hub_id(uri)
        if hub is not None:
            return _read_hub(hub, hub_config)
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(
            f"no file or directory at {uri!r}. Check the path (relative paths are resolved from "
            f"the working directory), or give a Hub id as 'org/name[:split]'."
        )
    if fs.isdir(path):
        return _read_shard_dir(fs, path, uri)
    with fs.open(path, "rb") as handle:
        return _read_bytes(handle.read(), _extension(path), uri)


def is_text(value: Any) -> bool:
    """Whether a table cell holds non-blank text (not None, NaN or whitespace)."""
    return isinstance(value, str) and bool(value.strip())


def require_columns(df: pd.DataFrame, required: Iterable[str], *, source: str, hint: str) -> None:
    """Raise ValueError naming the missing and present columns when `df` lacks any of `required`.

    `hint` says how to map the table's own columns (e.g. which loader argument to set).
    """
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; the table has {list(df.columns)}. {hint}"
        )


def _extension(path: str) -> str:
    return PurePosixPath(path).suffix.lower()


def _local_exists(source: str) -> bool:
    return "://" not in source and fsspec.filesystem("file").exists(source)


def _read_bytes(data: bytes, extension: str, uri: str) -> pd.DataFrame:
    if extension == ".jsonl":
        return pd.DataFrame.from_records(_json_lines(data, uri))
    if extension == ".json":
        text = data.decode("utf-8").lstrip()
        records = json.loads(text) if text.startswith("[") else _json_lines(data, uri)
        return pd.DataFrame.from_records(records)
    if extension == ".parquet":
        return pd.read_parquet(io.BytesIO(data))
    if extension == ".csv":
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    raise ValueError(
        f"cannot read {uri!r}: unsupported extension {extension or '(none)'!r}. Accepted: "
        f"{', '.join(ACCEPTED_EXTENSIONS)}, or a directory of .parquet shards. Convert the file "
        "(e.g. pandas `to_parquet`) or rename it if its content already is one of these."
    )


def _json_lines(data: bytes, uri: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{uri!r} line {number} is not valid JSON ({exc.msg}); each line of a JSON-lines "
                "file must hold one complete JSON object."
            ) from exc
    return records


def _read_shard_dir(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> pd.DataFrame:
    shards = sorted(name for name in fs.find(path) if _extension(name) == ".parquet")
    if not shards:
        raise FileNotFoundError(
            f"directory {uri!r} holds no .parquet shards; a directory source must contain "
            "*.parquet files (found recursively). Point at a single file for other formats."
        )
    frames = []
    for shard in shards:
        with fs.open(shard, "rb") as handle:
            frames.append(pd.read_parquet(io.BytesIO(handle.read())))
    return pd.concat(frames, ignore_index=True)


def _read_hub(hub: HubSource, config: str | None) -> pd.DataFrame:
    import datasets  # heavy import, needed only for Hub ids

    try:
        dataset = datasets.load_dataset(hub.repo_id, config, split=hub.split, revision=hub.revision)
    except (OSError, ValueError) as exc:
        raise SourceUnavailableError(
            f"could not load Hub dataset {hub.repo_id!r} (config {config!r}, split "
            f"{hub.split!r}): {exc}. If the Hub is not reachable from here, save a copy where it "
            f"is (`datasets.load_dataset({hub.repo_id!r}, {config!r}, split={hub.split!r})"
            f".to_parquet('copy.parquet')`) and pass that local path or an s3:// URI instead. "
            "If you meant a local path, it does not exist."
        ) from exc
    return dataset.to_pandas()
