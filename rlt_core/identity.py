"""What identifies anything a stage reads: one function for every input and every reference.

A key must change when what a stage reads changes, not only when its name does
(`reference_identity`):

- a finished artifact (or a file or folder inside one): its digest (`<digest>:<path>` inside),
  wherever it lies (a cache, S3). A folder counts as one only when it is laid out as a store
  holds it (`<stage>/<key>/`, its manifest naming that stage, with a digest) and its files
  hash to that digest (`_enclosing_artifact`): another tool's `manifest.json`, or a copied and
  edited artifact, is hashed as plain files;
- any other local file or folder: the sha256 of its bytes, cached by the path and a stamp of
  every file under it (`$RLT_HOME/identity-cache.json`), so a 15 GB checkpoint is hashed once
  per change, not once per plan. The stamp is each file's name, size, mtime, inode and ctime,
  as Git's index keeps: a same-size edit that restores the mtime (`cp -p`, `rsync -a`,
  `tar x`, `touch -d`) still changes the ctime, which no user can set. A cache file of another
  shape is ignored with a warning;
- a model of which only the tokenizer is read (`TokenizerReference`): for a local folder, its
  tokenizer files (`tokenizer_identity`), so retrained weights beside them change nothing;
- `offline:<name>`: the name and the sha256 of the file it is built from (the pinned GGUF, or
  the file `RLT_SMOLLM2_GGUF` names);
- a remote object (`s3://...`, any fsspec URI): its ETag (or version id);
- a hub id `org/name` (a data set's `org/name:split`): the commit its revision (`main`)
  resolves to in the local hub cache, models and data sets alike (`org/name@<commit>`). A
  revision that is not in the cache is kept as written (`org/name@main`): the key then changes
  once the cache knows the commit. (The loaders take no `@revision` in a config yet.)

`input_identity` is the same rule for a stage input (a path or a reference), shared by the
stage and the orchestrator, so both compute one key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlt_core import artifacts
from rlt_core.config import Reference, TokenizerReference

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
OFFLINE_PREFIX = "offline:"
_MEMORY: dict[str, tuple[str, str]] = {}  # path -> (stamp, digest), this process


def input_identity(value: str | Path) -> str:
    """The identity of a stage input: a path (artifact, member, file, folder) or a reference."""
    return reference_identity(str(value))


def reference_identity(ref: str) -> str:
    """The identity of what `ref` names (module docstring)."""
    path = Path(ref).expanduser()
    if ref and path.exists():
        return _local_identity(path.resolve())
    if ref.startswith(OFFLINE_PREFIX):
        return _offline_identity(ref)
    if "://" in ref:
        return _remote_identity(ref)
    from rlt_core.data.sources import parse_hub_id  # the one parser of `org/name[:split][@rev]`

    hub = parse_hub_id(ref)
    if hub is None:
        return ref
    split = f":{hub.split}" if ":" in ref.split("@", 1)[0] else ""
    return _hub_identity(hub.repo_id, hub.revision) + split


def _local_identity(path: Path) -> str:
    found = _enclosing_artifact(path)
    if found is not None:
        artifact, digest = found
        return artifacts.member_identity(digest, str(path.relative_to(artifact)))
    return _content_digest(path)


def _content_digest(path: Path) -> str:
    """The sha256 of what `path` holds (`files_digest` for a folder), cached by its stamp."""
    stamp = _stamp(path)
    cached = _MEMORY.get(str(path)) or _disk_cache().get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = artifacts.files_digest(path) if path.is_dir() else _file_sha256(path)
    _remember(str(path), stamp, digest)
    return digest


def _enclosing_artifact(path: Path) -> tuple[Path, str] | None:
    """The finished artifact `path` is (or lies in) and its digest, or None. The nearest folder
    holding a manifest decides: it is an artifact when its manifest parses, names the stage
    of the folder above (`<stage>/<key>/`) and has a digest, and the files hash to that digest
    (checked once per change of their stamp). Anything else is not trusted: logged, and the
    path is hashed as plain files."""
    for folder in (path, *path.parents):
        file = folder / artifacts.MANIFEST
        if not file.is_file():
            continue
        try:
            manifest = json.loads(file.read_text())
        except (OSError, ValueError):
            manifest = None
        digest = manifest.get("digest") if isinstance(manifest, dict) else None
        if not isinstance(digest, str) or manifest.get("stage") != folder.parent.name:
            logger.warning("%s is not an artifact of a store (its manifest has no digest or "
                           "names another stage): hashed as plain files", folder)  # fmt: skip
            return None
        if _content_digest(folder) != digest:
            logger.warning("%s does not hold the files its manifest's digest names (edited or "
                           "copied in part): hashed as plain files", folder)  # fmt: skip
            return None
        return folder, digest
    return None


def _stamp(path: Path) -> str:
    """What changes when any byte under `path` may have: every file's name, size, mtime,
    inode and ctime (module docstring)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    lines = []
    for file in files:
        info = file.stat()
        name = file.relative_to(path) if file != path else ""
        lines.append(f"{name} {info.st_size} {info.st_mtime_ns} {info.st_ino} {info.st_ctime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# What a tokenizer is made of, by file name (transformers' tokenizer files and chat templates).
TOKENIZER_FILES = re.compile(
    r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|"
    r"chat_template\..*|spiece\.model|sentencepiece\..*\.model)$"
)


def tokenizer_identity(ref: str) -> str:
    """The identity of the tokenizer of the model `ref` names: for a local folder, the sha256 of
    its tokenizer files (names and bytes); else what `reference_identity` says of the model (a
    hub commit or an offline model names its tokenizer too)."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        return reference_identity(ref)
    files = sorted(p for p in path.iterdir() if p.is_file() and TOKENIZER_FILES.match(p.name))
    if not files:
        return reference_identity(ref)  # no tokenizer file to tell: the whole folder
    sha = hashlib.sha256()
    for file in files:
        sha.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        sha.update(file.read_bytes())
    return f"tokenizer:{sha.hexdigest()}"


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _cache_file() -> Path:
    from rlt_core.models import default_models_dir

    return default_models_dir().parent / "identity-cache.json"


def _disk_cache() -> dict[str, tuple[str, str]]:
    """The identity cache on disk: path -> (stamp, digest). A file that does not parse, or
    entries of another shape, are ignored (with a warning): hashing again is correct."""
    file = _cache_file()
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("%s is unreadable (%s): ignored, identities are hashed again", file, error)
        return {}
    if not isinstance(raw, dict):
        logger.warning("%s is not a mapping of paths: ignored", file)
        return {}
    entries = {
        path: (entry[0], entry[1])
        for path, entry in raw.items()
        if isinstance(entry, list | tuple) and len(entry) == 2
        and all(isinstance(part, str) for part in entry)
    }  # fmt: skip
    if len(entries) != len(raw):
        logger.warning("%s: %d entries of another shape ignored", file, len(raw) - len(entries))
    return entries


def _remember(path: str, stamp: str, digest: str) -> None:
    _MEMORY[path] = (stamp, digest)
    file = _cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        entries = {**_disk_cache(), path: (stamp, digest)}
        artifacts.write_atomic(file, lambda tmp: tmp.write_text(json.dumps(entries)))
    except OSError:
        pass  # a cache: hashing again next time is correct, only slower


def _offline_identity(ref: str) -> str:
    from rlt_core.models.smollm2 import GGUF_ENV_VAR, GGUF_SHA256, SMOLLM2_NAME

    if ref.removeprefix(OFFLINE_PREFIX) != SMOLLM2_NAME:
        return ref  # resolve_model names the known ones when it refuses this
    override = os.environ.get(GGUF_ENV_VAR)
    source = _local_identity(Path(override).expanduser().resolve()) if override else GGUF_SHA256
    return f"{ref}@{source}"


def _remote_identity(uri: str) -> str:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    info = fs.info(path)
    tag = info.get("VersionId") or info.get("ETag") or info.get("etag") or info.get("mtime")
    if tag is None and info.get("type") == "directory":
        tag = artifacts.digest_json(sorted(fs.find(path, detail=True).items(), key=str))[:16]
    return f"{uri}@{str(tag).strip(chr(34))}"


def _hub_identity(repo: str, revision: str | None) -> str:
    revision = revision or "main"
    if _COMMIT.match(revision):
        return f"{repo}@{revision}"
    from huggingface_hub import constants

    folder = repo.replace("/", "--")
    for kind in ("models", "datasets"):
        ref = Path(constants.HF_HUB_CACHE) / f"{kind}--{folder}" / "refs" / revision
        if ref.is_file():
            return f"{repo}@{ref.read_text().strip()}"
    return f"{repo}@{revision}"


def references(config: Any) -> dict[str, str]:
    """The identity of every reference in a key's config: each `Reference` (a value of a field
    marked `reference`, `rlt_core.config.key_dict`), by its dotted path."""
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        """Record the `Reference`s at or under `value`, found at dotted `path`."""
        if isinstance(value, TokenizerReference):
            found[path] = tokenizer_identity(value)
        elif isinstance(value, Reference):
            found[path] = reference_identity(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))

    walk(config, "")
    return found
