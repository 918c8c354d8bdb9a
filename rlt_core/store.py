"""The artifact store: where finished stage artifacts live, a local directory or any fsspec URI.

Stages always run on local files (trainers, tokenizers and parquet readers want paths), in a
local *working* store laid out as `<working>/<stage>/<key>/`. The store root is either

- a local directory (the default, `artifacts/`): the working store IS the store, nothing is
  copied; or
- a remote URI such as `s3://bucket/prefix` (through s3fs, or any fsspec filesystem): the
  working store is a local cache directory, a finished artifact is *published* to
  `<root>/<stage>/<key>/` and an upstream artifact is *fetched* into the cache before a stage
  reads it. Any worker that can reach the root can so run any stage.

Never half-written, never destroyed: publishing uploads every file first and `manifest.json`
last, with a conditional write (S3's If-None-Match), so a remote directory without its manifest
(an upload cut by a crash or a dropped connection) is never taken as finished, and a finished
remote artifact is never removed or overwritten: a second run that finishes the same key later
adopts the published artifact instead. Fetching downloads into a directory of its own, checks
its digest against the manifest's and only then swaps it in. A ref is only ever resolved
inside its store (`ArtifactStore.relative`).

Failures are told apart (`classify_store_error`): a connection that failed, timed out or was
throttled surfaces as `StoreUnavailableError` (transient: the orchestration layer retries it);
refused credentials, a permission denied or a bucket that does not exist surface at once as
`StoreAccessError`, naming what to fix (retrying cannot help).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import fsspec

from rlt_core import artifacts
from rlt_core.failures import classify_store_error, is_transient
from rlt_core.remote_lease import LEASE_SECONDS, LEASES_DIR, RemoteLease

__all__ = [
    "ArtifactStore",
    "StoreAccessError",
    "StoreURIError",
    "StoreUnavailableError",
    "check_store_uri",
    "classify_store_error",
    "is_remote",
    "is_transient",
    "translated",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a stage name or a key: no "..", no "/"


class StoreUnavailableError(OSError):
    """The store could not be read or written (a transient failure: retry, then report)."""


class StoreAccessError(RuntimeError):
    """The store refused the request for a reason a retry cannot change (credentials,
    permissions, a missing bucket); the message says what to fix."""


class StoreURIError(ValueError):
    """A store URI or its options that cannot name a store (what, why and the fix)."""


# storage_options keys that hold secrets: they would be saved with the flow run's parameters
# and in the results block, so they are refused (credentials come from the environment).
_SECRET_OPTIONS = frozenset({
    "key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "session_token", "access_key", "secret_key", "client_secret",
})  # fmt: skip


def check_store_uri(root: str | Path, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise StoreURIError for a store root that cannot name a store, or options that hold
    credentials; checked before any stage runs (nothing is contacted here)."""
    text = str(root).strip()
    if not text:
        raise StoreURIError(
            "the store is empty: pass a directory (e.g. --store artifacts) or a URI such as "
            "s3://bucket/prefix."
        )
    scheme, sep, rest = text.partition("://")
    if not sep:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/?[^/]", text):
            raise StoreURIError(
                f"store {text!r} looks like a URI with its slashes missing; write "
                f"{text.split(':', 1)[0]}://{text.split(':', 1)[1].lstrip('/')} (or ./{text} "
                "for a local directory of that name)."
            )
        return
    if scheme != "file":
        try:
            fsspec.get_filesystem_class(scheme)
        except ValueError:
            raise StoreURIError(
                f"store {text!r}: {scheme!r} is not a storage protocol fsspec knows; use a "
                "local directory or s3://bucket/prefix (any fsspec protocol works, e.g. gs://)."
            ) from None
        except ImportError as error:
            raise StoreURIError(
                f"store {text!r} needs a package that is not installed ({error}); install it, "
                "or use a local directory or s3://bucket/prefix."
            ) from None
        if not rest.split("/", 1)[0]:
            raise StoreURIError(f"store {text!r} names no bucket or host: write {scheme}://NAME/…")
        if _has_userinfo(text):
            raise StoreURIError(
                f"store {_redacted(text)!r} holds credentials (user:password@): they would be "
                "saved in every artifact ref, the flow run's parameters and Prefect's results "
                "block. Remove them and give them through the environment or a profile."
            )
    secrets = sorted(_secret_paths(storage_options or {}))
    if secrets:
        raise StoreURIError(
            f"storage_options hold credentials ({', '.join(secrets)}): they would be saved with "
            "the flow run's parameters and in Prefect's results block. Give them to every "
            "worker through the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
            "AWS_SESSION_TOKEN) or name a profile: storage_options={'profile': 'NAME'}."
        )


def _secret_paths(options: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted names of the options that hold a credential: a secret-named option with a
    value (`_is_secret_name`), or a URL with user:password@ in it (an `endpoint_url`)."""
    found = set()
    for name, value in options.items():
        if isinstance(value, Mapping):
            found |= _secret_paths(value, f"{prefix}{name}.")
        elif value and (_is_secret_name(str(name)) or _has_userinfo(value)):
            found.add(f"{prefix}{name}")
    return found


def _is_secret_name(name: str) -> bool:
    """A key, secret, token, password or credential by its name (`SSECustomerKey`, `api_key`,
    `client_secret`), not an id (`SSEKMSKeyId`)."""
    lower = name.lower()
    words = ("secret", "password", "passwd", "credential", "token")
    return lower in _SECRET_OPTIONS or lower.endswith("key") or any(w in lower for w in words)


def _has_userinfo(value: Any) -> bool:
    """Whether `value` is a URL carrying a user name or password (`scheme://user:pw@host`)."""
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def _redacted(value: str) -> str:
    """`value` with the user:password part of its URL replaced by `***`."""
    return re.sub(r"://[^/@]*@", "://***@", value)


def is_remote(root: str | Path) -> bool:
    """True for a URI with a scheme other than `file://` (s3://, gs://, memory://, ...)."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def default_cache_dir(root: str) -> Path:
    """The local working store of a remote root: `$RLT_HOME/store-cache/<sha of root>`."""
    from rlt_core.models import default_models_dir

    name = hashlib.sha256(root.encode()).hexdigest()[:16]
    return default_models_dir().parent / "store-cache" / name


@dataclass(frozen=True)
class ArtifactStore:
    """A store root plus the local working store stages write into (module docstring).

    `storage_options` go to fsspec (e.g. `{"client_kwargs": {"endpoint_url": ...}}` for a
    non-AWS S3 endpoint); by default s3fs reads the standard AWS variables.
    """

    root: str
    working: Path
    storage_options: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        cache_dir: str | Path | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ArtifactStore:
        """The store at `root`: local (working = root) or remote (working = `cache_dir`, by
        default `default_cache_dir(root)`). StoreURIError for a root or options that cannot
        name a store (`check_store_uri`)."""
        check_store_uri(root, storage_options)
        if not is_remote(root):
            local = Path(str(root).removeprefix("file://")).expanduser().resolve()
            return cls(str(local), local, storage_options)
        working = Path(cache_dir) if cache_dir else default_cache_dir(str(root))
        return cls(str(root).rstrip("/"), working.expanduser().resolve(), storage_options)

    @property
    def remote(self) -> bool:
        """True when artifacts are published to a remote root."""
        return is_remote(self.root)

    def check_writable(self) -> None:
        """Write and remove a probe file at the root (and in the local working store), so a
        store that cannot be written fails before any stage runs, naming the store and the fix."""
        probe = f".rlt-write-check-{uuid.uuid4().hex[:8]}"
        try:
            self.working.mkdir(parents=True, exist_ok=True)
            (self.working / probe).write_text("")
            (self.working / probe).unlink()
        except OSError as error:
            raise StoreAccessError(
                f"the store's local directory {self.working} cannot be written ({error}); "
                "choose a directory you may write (--store DIR) or fix its permissions."
            ) from None
        if self.remote:
            with translated(f"writing a probe file to {self.root}"):
                fs, root_path = self._fs()
                fs.pipe_file(f"{root_path}/{probe}", b"")
                fs.rm(f"{root_path}/{probe}")

    def _fs(self) -> tuple[Any, str]:
        return fsspec.core.url_to_fs(self.root, **(self.storage_options or {}))

    def uri_of(self, local: Path) -> str:
        """The store URI of a local artifact directory of the working store."""
        relative = Path(local).resolve().relative_to(self.working)
        if not self.remote:
            return str(self.working / relative)
        return f"{self.root}/{PurePosixPath(*relative.parts)}"

    def published(self, stage: str, key: str) -> artifacts.ArtifactRef | None:
        """The finished artifact `<stage>/<key>` of the store root, or None."""
        uri = f"{self.root}/{stage}/{key}" if self.remote else str(self.working / stage / key)
        if not self.remote:
            local = Path(uri)
            return artifacts.load_ref(local) if artifacts.is_complete(local) else None
        with translated(f"reading {uri}"):
            fs, root_path = self._fs()
            digest = self._remote_digest(fs, f"{root_path}/{stage}/{key}")
        return artifacts.ArtifactRef(uri=uri, digest=digest) if digest else None

    @contextmanager
    def lease(self, name: str, *, ttl: float = LEASE_SECONDS) -> Iterator[None]:
        """Hold the remote lease `name` while the block runs: at most one holder on any node
        (`rlt_core.remote_lease`: a conditionally created object, renewed, taken over `ttl`
        seconds after a dead holder's last renewal). A local store needs none (a stage run's
        own lock covers one machine): a no-op."""
        if not self.remote:
            yield
            return
        fs, root_path = self._fs()
        lease = RemoteLease(fs, f"{root_path}/{LEASES_DIR}/{name}", name, ttl)
        with translated(f"taking the lease {name}"):
            lease.acquire()
        try:
            yield
        finally:
            lease.release()

    def relative(self, ref: artifacts.ArtifactRef) -> PurePosixPath:
        """`<stage>/<key>` of an artifact of this store; ValueError for a ref that is not one
        (another store or bucket, a path that climbs out with `..`, a file inside an
        artifact): nothing outside the store or its cache is ever read, written or removed
        for it."""
        prefix = (self.root if self.remote else str(self.working)).rstrip("/") + "/"
        relative = ref.uri.removeprefix(prefix) if ref.uri.startswith(prefix) else None
        parts = PurePosixPath(relative).parts if relative else ()
        if len(parts) != 2 or not all(_NAME.fullmatch(part) for part in parts):
            raise ValueError(
                f"artifact ref {ref.uri!r} is not an artifact of the store {self.root!r} (it "
                "must be <store>/<stage>/<key>): a ref from another store or bucket, or a "
                "tampered one, is refused. Run the flow with the store that made it."
            )
        return PurePosixPath(*parts)

    def local_path(self, ref: artifacts.ArtifactRef) -> Path:
        """Where `ref` lives (or would be fetched to) in the working store."""
        return self.working.joinpath(*self.relative(ref).parts)

    def holds(self, ref: artifacts.ArtifactRef) -> bool:
        """Whether the store holds the finished artifact `ref` names, with `ref`'s digest
        (what a cache hit is checked against). False for a ref outside this store."""
        try:
            relative = self.relative(ref)
        except ValueError:
            return False
        if not self.remote:
            local = self.working.joinpath(*relative.parts)
            return artifacts.is_complete(local) and read_digest(local) == ref.digest
        with translated(f"checking {ref.uri}"):
            fs, root_path = self._fs()
            return self._remote_digest(fs, f"{root_path}/{relative}") == ref.digest

    def publish(self, local: str | Path) -> artifacts.ArtifactRef:
        """Make a finished local artifact available in the store; returns its store ref.

        Local store: the directory itself. Remote: files uploaded, manifest last. A finished
        remote artifact is never removed or overwritten: when the key is already published
        (by another run, on any node) that artifact is adopted, whatever its digest, and this
        run's local copy is replaced by it, so every ref ever handed out stays fetchable.
        """
        local = Path(local)
        ref = artifacts.load_ref(local)  # refuses an unfinished directory
        if not self.remote:
            return ref
        uri = self.uri_of(local)
        with translated(f"publishing {local} to {uri}"):
            fs, root_path = self._fs()
            path = f"{root_path}/{uri.removeprefix(self.root).strip('/')}"
            published = self._remote_digest(fs, path)
            if published is None:
                for file in artifacts.artifact_files(local):
                    fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")
                published = self._put_manifest(fs, local, path)
        if published != ref.digest:
            logger.warning(
                "store: %s was published by another run first (digest %s); adopting it",
                uri, published[:12],
            )  # fmt: skip
            adopted = artifacts.ArtifactRef(uri=uri, digest=published)
            self.fetch(adopted)
            return adopted
        logger.info("store: published %s", uri)
        return artifacts.ArtifactRef(uri=uri, digest=ref.digest)

    def _put_manifest(self, fs: Any, local: Path, path: str) -> str:
        """Write the manifest only if none is there (a conditional write where the filesystem
        has one: S3's If-None-Match); the digest of the manifest that is there afterwards."""
        manifest = (local / artifacts.MANIFEST).read_bytes()
        target = f"{path}/{artifacts.MANIFEST}"
        try:
            fs.pipe_file(target, manifest, mode="create")
        except FileExistsError:  # another run published this key first
            return json.loads(fs.cat_file(target))["digest"]
        except TypeError:  # a filesystem without exclusive writes
            fs.pipe_file(target, manifest)
        return json.loads(manifest)["digest"]

    def fetch(self, ref: artifacts.ArtifactRef | dict[str, str]) -> Path:
        """A local, complete copy of the artifact `ref` (downloaded into the working store when
        missing); raises ValueError when what is there does not match the ref's digest, or
        for a ref that is not an artifact of this store (`relative`)."""
        ref = ref if isinstance(ref, artifacts.ArtifactRef) else artifacts.ArtifactRef(**ref)
        local = self.local_path(ref)
        if artifacts.is_complete(local) and read_digest(local) == ref.digest:
            return local
        if not self.remote:
            raise FileNotFoundError(
                f"artifact {ref.uri} is missing or changed (expected digest {ref.digest[:12]}); "
                "run its stage again."
            )
        self._download(ref, local)
        return local

    def _download(self, ref: artifacts.ArtifactRef, local: Path) -> None:
        """Download into a partial directory of this call's own, check it, then swap it in:
        a concurrent fetch of the same artifact never sees a half-written directory."""
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{local.name}.partial-", dir=local.parent))
        try:
            with translated(f"fetching {ref.uri}"):
                fs, root_path = self._fs()
                path = f"{root_path}/{self.relative(ref)}"
                if self._remote_digest(fs, path) != ref.digest:
                    raise ValueError(
                        f"{ref.uri} is unfinished or holds another artifact than digest "
                        f"{ref.digest[:12]}; run its stage again."
                    )
                fs.get(f"{path}/", f"{partial}/", recursive=True)
            if artifacts.files_digest(partial) != ref.digest:
                raise ValueError(
                    f"{ref.uri}: the downloaded files do not match digest {ref.digest}"
                )
            _swap_in(partial, local)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    @staticmethod
    def _remote_digest(fs: Any, path: str) -> str | None:
        manifest = f"{path}/{artifacts.MANIFEST}"
        if not fs.exists(manifest):
            return None
        return json.loads(fs.cat_file(manifest))["digest"]


def read_digest(local: Path) -> str | None:
    """The digest a finished local artifact's manifest records (None for a manifest that
    cannot be read)."""
    try:
        return str(artifacts.read_manifest(local)["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _swap_in(partial: Path, local: Path) -> None:
    """Put the complete directory `partial` at `local`: an old copy (another digest, or a
    partial one) is first renamed away, so `local` is only ever absent or whole."""
    if local.exists():
        if artifacts.is_complete(local) and read_digest(local) == read_digest(partial):
            return  # a concurrent fetch put the same artifact there first
        old = local.with_name(f".{local.name}.old-{uuid.uuid4().hex[:8]}")
        local.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        partial.rename(local)
    except OSError:
        if not (artifacts.is_complete(local) and read_digest(local) == read_digest(partial)):
            raise


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn store failures inside the block into StoreUnavailableError (transient) or
    StoreAccessError (not), with `what` and the fix (module docstring)."""
    try:
        yield
    except (ValueError, StoreUnavailableError, StoreAccessError):
        raise
    except Exception as error:
        transient = classify_store_error(error)
        if transient is None:
            raise
        detail = f"{type(error).__name__}: {error}"
        if transient:
            raise StoreUnavailableError(
                f"store unavailable while {what}: {detail}. The endpoint did not answer or asked "
                "to slow down; the stage's local files are kept, so a retry resumes."
            ) from error
        raise StoreAccessError(
            f"the store refused {what}: {detail}. A retry cannot fix this: check that the "
            "bucket in the store URI exists, that the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, or the profile in storage_options) are valid, and that they "
            "may read and write that prefix; the stage's local files are kept."
        ) from error
