"""The artifact store: where finished stage artifacts live, a local directory or any fsspec URI.

Stages always run on local files (trainers, tokenizers and parquet readers want paths), in a
local *working* store laid out as `<working>/<stage>/<key>/`. The store root is either

- a local directory (the default, `artifacts/`): the working store IS the store, nothing is
  copied; or
- a remote URI such as `s3://bucket/prefix` (through s3fs, or any fsspec filesystem): the
  working store is a local cache directory, a finished artifact is *published* to
  `<root>/<stage>/<key>/` and an upstream artifact is *fetched* into the cache before a stage
  reads it. Any worker that can reach the root can so run any stage.

Never half-written: publishing uploads every file first and `manifest.json` last, so a remote
directory without its manifest (an upload cut by a crash or a dropped connection) is never
taken as finished, and publishing it again replaces it. Fetching checks the digest of what it
downloaded against the manifest's.

Failures are told apart (`classify_store_error`): a connection that failed, timed out or was
throttled surfaces as `StoreUnavailableError` (transient: the orchestration layer retries it);
refused credentials, a permission denied or a bucket that does not exist surface at once as
`StoreAccessError`, naming what to fix (retrying cannot help).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from rlt_core import artifacts

logger = logging.getLogger(__name__)


class StoreUnavailableError(OSError):
    """The store could not be read or written (a transient failure: retry, then report)."""


class StoreAccessError(RuntimeError):
    """The store refused the request for a reason a retry cannot change (credentials,
    permissions, a missing bucket); the message says what to fix."""


# Connection-level failures of botocore / aiohttp / urllib3, by class name (none is imported).
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ConnectionError", "ProxyConnectionError", "HTTPClientError",
    "ResponseStreamingError", "ClientConnectorError", "ClientConnectionError",
    "ServerDisconnectedError", "ServerTimeoutError", "ClientOSError", "ClientPayloadError",
    "ProtocolError", "NewConnectionError", "MaxRetryError",
})  # fmt: skip
# S3 error codes that mean "try again later".
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "503", "500",
})  # fmt: skip
_CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "s3fs")


def classify_store_error(error: BaseException) -> bool | None:
    """True for a transient store failure, False for one a retry cannot fix, None for an
    error that is not the store's (it propagates as it is). Wrapped errors (s3fs re-raises
    botocore's as OSError) are judged by their cause."""
    seen: set[int] = set()
    current: BaseException | None = error
    verdicts = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdicts.append(_judge(current))
        current = current.__cause__ or current.__context__
    decided = [v for v in verdicts if v is not None]
    return decided[0] if decided else None


def _judge(error: BaseException) -> bool | None:
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, (PermissionError, FileNotFoundError)):
        return False
    if type(error).__module__.startswith(_CLIENT_MODULES):
        name = type(error).__name__
        if name == "ClientError":
            response = getattr(error, "response", {}) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code in _TRANSIENT_CODES or status >= 500 or status == 429
        return name in _TRANSIENT_NAMES or "Timeout" in name
    return None


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
        default `default_cache_dir(root)`)."""
        if not is_remote(root):
            local = Path(str(root).removeprefix("file://")).expanduser().resolve()
            return cls(str(local), local, storage_options)
        working = Path(cache_dir) if cache_dir else default_cache_dir(str(root))
        return cls(str(root).rstrip("/"), working.expanduser().resolve(), storage_options)

    @property
    def remote(self) -> bool:
        """True when artifacts are published to a remote root."""
        return is_remote(self.root)

    def _fs(self) -> tuple[Any, str]:
        return fsspec.core.url_to_fs(self.root, **(self.storage_options or {}))

    def uri_of(self, local: Path) -> str:
        """The store URI of a local artifact directory of the working store."""
        relative = Path(local).resolve().relative_to(self.working)
        if not self.remote:
            return str(self.working / relative)
        return f"{self.root}/{PurePosixPath(*relative.parts)}"

    def local_path(self, ref: artifacts.ArtifactRef) -> Path:
        """Where `ref` lives (or would be fetched to) in the working store."""
        if not self.remote:
            return Path(ref.uri)
        relative = ref.uri.removeprefix(self.root).strip("/")
        return self.working / relative

    def publish(self, local: str | Path) -> artifacts.ArtifactRef:
        """Make a finished local artifact available in the store; returns its store ref.

        Local store: the directory itself. Remote: files uploaded, manifest last; an artifact
        whose remote manifest already holds the same digest is not uploaded again.
        """
        local = Path(local)
        ref = artifacts.load_ref(local)  # refuses an unfinished directory
        if not self.remote:
            return ref
        uri = self.uri_of(local)
        with _translated(f"publishing {local} to {uri}"):
            fs, root_path = self._fs()
            path = f"{root_path}/{uri.removeprefix(self.root).strip('/')}"
            if self._remote_digest(fs, path) == ref.digest:
                return artifacts.ArtifactRef(uri=uri, digest=ref.digest)
            if fs.exists(path):
                fs.rm(path, recursive=True)  # an upload that was cut: start it over
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                if file.name != artifacts.MANIFEST:
                    fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")
            fs.put_file(str(local / artifacts.MANIFEST), f"{path}/{artifacts.MANIFEST}")
        logger.info("store: published %s", uri)
        return artifacts.ArtifactRef(uri=uri, digest=ref.digest)

    def fetch(self, ref: artifacts.ArtifactRef | dict[str, str]) -> Path:
        """A local, complete copy of the artifact `ref` (downloaded into the working store when
        missing); raises ValueError when what is there does not match the ref's digest."""
        ref = ref if isinstance(ref, artifacts.ArtifactRef) else artifacts.ArtifactRef(**ref)
        local = self.local_path(ref)
        if artifacts.is_complete(local) and artifacts.read_manifest(local)["digest"] == ref.digest:
            return local
        if not self.remote:
            raise FileNotFoundError(
                f"artifact {ref.uri} is missing or changed (expected digest {ref.digest[:12]}); "
                "run its stage again."
            )
        self._download(ref, local)
        return local

    def _download(self, ref: artifacts.ArtifactRef, local: Path) -> None:
        partial = local.with_name(f".{local.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        with _translated(f"fetching {ref.uri}"):
            fs, root_path = self._fs()
            path = f"{root_path}/{ref.uri.removeprefix(self.root).strip('/')}"
            if self._remote_digest(fs, path) != ref.digest:
                raise ValueError(
                    f"{ref.uri} is unfinished or holds another artifact than digest "
                    f"{ref.digest[:12]}; run its stage again."
                )
            partial.mkdir(parents=True)
            fs.get(f"{path}/", f"{partial}/", recursive=True)
        if artifacts.files_digest(partial) != ref.digest:
            raise ValueError(f"{ref.uri}: the downloaded files do not match digest {ref.digest}")
        shutil.rmtree(local, ignore_errors=True)
        partial.rename(local)

    @staticmethod
    def _remote_digest(fs: Any, path: str) -> str | None:
        manifest = f"{path}/{artifacts.MANIFEST}"
        if not fs.exists(manifest):
            return None
        return json.loads(fs.cat_file(manifest))["digest"]


@contextmanager
def _translated(what: str) -> Iterator[None]:
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
