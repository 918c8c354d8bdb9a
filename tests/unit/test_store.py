"""The artifact store on a local directory and on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from rlt_core import artifacts
from rlt_core.store import (
    ArtifactStore,
    StoreAccessError,
    StoreUnavailableError,
    classify_store_error,
    is_remote,
)
from tests.fixtures_s3 import MotoServer, S3Endpoint


def _artifact(working: Path, stage: str = "teacher_sft", key: str = "abc123") -> Path:
    """A finished artifact with a nested file, in `working`."""
    out = working / stage / key
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (out / "log.json").write_text(json.dumps({"loss": 0.5}))
    artifacts.write_manifest(out, stage=stage, config={}, upstream={}, metrics={"loss": 0.5})
    return out


def test_local_store_is_its_own_working_store(tmp_path: Path) -> None:
    store = ArtifactStore.open(tmp_path / "artifacts")
    assert not store.remote and store.working == (tmp_path / "artifacts").resolve()
    local = _artifact(store.working)
    ref = store.publish(local)
    assert ref == artifacts.load_ref(local) and store.fetch(ref) == local.resolve()
    assert store.fetch(ref.to_dict()) == local.resolve()
    (local / "log.json").write_text("changed")  # a tampered artifact is not taken
    artifacts.write_manifest(local, stage="x", config={}, upstream={}, metrics={})
    with pytest.raises(FileNotFoundError, match="missing or changed"):
        store.fetch(ref)


def test_unfinished_artifacts_are_never_published(tmp_path: Path) -> None:
    store = ArtifactStore.open(tmp_path)
    (tmp_path / "teacher_sft" / "half").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="did not finish"):
        store.publish(tmp_path / "teacher_sft" / "half")


def test_s3_publish_then_fetch_on_another_worker(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
):
    root = f"s3://{s3_bucket}/runs"
    options = s3_server.storage_options
    worker_a = ArtifactStore.open(root, cache_dir=tmp_path / "a", storage_options=options)
    assert is_remote(root) and worker_a.remote
    ref = worker_a.publish(_artifact(worker_a.working))
    assert ref.uri == f"{root}/teacher_sft/abc123"
    keys = sorted(
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    )
    assert keys == [
        "runs/teacher_sft/abc123/log.json",
        "runs/teacher_sft/abc123/manifest.json",
        "runs/teacher_sft/abc123/model/weights.bin",
    ]
    # A second worker with an empty cache downloads it, checks the digest, and reuses it after.
    worker_b = ArtifactStore.open(root, cache_dir=tmp_path / "b", storage_options=options)
    local = worker_b.fetch(ref)
    assert local == (tmp_path / "b" / "teacher_sft" / "abc123").resolve()
    assert (local / "model" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert artifacts.files_digest(local) == ref.digest
    assert worker_b.fetch(ref) == local
    assert worker_a.publish(worker_a.working / "teacher_sft" / "abc123") == ref  # idempotent


def test_s3_upload_cut_before_the_manifest_is_not_finished(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/runs"
    options = s3_server.storage_options
    store = ArtifactStore.open(root, cache_dir=tmp_path / "a", storage_options=options)
    local = _artifact(store.working)
    ref = artifacts.load_ref(local)
    # What a crash between the files and the manifest leaves behind: files, no manifest.
    s3_server.client().put_object(
        Bucket=s3_bucket, Key="runs/teacher_sft/abc123/log.json", Body=b"x"
    )
    other = ArtifactStore.open(root, cache_dir=tmp_path / "b", storage_options=options)
    remote_ref = artifacts.ArtifactRef(uri=f"{root}/teacher_sft/abc123", digest=ref.digest)
    with pytest.raises(ValueError, match="unfinished or holds another artifact"):
        other.fetch(remote_ref)
    assert not (tmp_path / "b" / "teacher_sft" / "abc123").exists()
    assert store.publish(local) == remote_ref  # publishing again replaces the cut upload
    assert other.fetch(remote_ref).is_dir()


def test_unreachable_s3_is_a_store_unavailable_error(tmp_path: Path, monkeypatch) -> None:
    server = MotoServer()
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    server.start()
    url = server.url
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="gone-soon")
    options = {
        "client_kwargs": {"endpoint_url": url},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    store = ArtifactStore.open("s3://gone-soon/runs", cache_dir=tmp_path, storage_options=options)
    local = _artifact(store.working)
    server.stop()  # the endpoint goes away before the upload
    with pytest.raises(StoreUnavailableError, match="store unavailable while publishing") as caught:
        store.publish(local)
    assert isinstance(caught.value, OSError)  # transient: the task layer retries it
    assert artifacts.is_complete(local)  # the local artifact is untouched


def test_a_missing_bucket_fails_at_once_and_says_what_to_fix(
    s3_server: S3Endpoint, tmp_path: Path
) -> None:
    options = s3_server.storage_options
    store = ArtifactStore.open(
        "s3://no-such-bucket/runs", cache_dir=tmp_path, storage_options=options
    )
    with pytest.raises(StoreAccessError, match="bucket in the store URI exists") as caught:
        store.publish(_artifact(store.working))
    assert not isinstance(caught.value, OSError)  # not retried by the task layer


def test_store_errors_are_told_apart_by_what_a_retry_can_fix() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "PutObject")

    def wrapped(cause: BaseException) -> OSError:  # as s3fs re-raises botocore's errors
        try:
            raise OSError("s3fs: request failed") from cause
        except OSError as error:
            return error

    transient = [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        wrapped(client_error("ServiceUnavailable", 503)),
        ConnectionResetError(),
        TimeoutError(),
    ]
    permanent = [
        client_error("InvalidAccessKeyId", 403),
        client_error("AccessDenied", 403),
        wrapped(client_error("SignatureDoesNotMatch", 403)),
        NoCredentialsError(),
        PermissionError("denied"),
        FileNotFoundError("no bucket"),
    ]
    assert [classify_store_error(e) for e in transient] == [True] * len(transient)
    assert [classify_store_error(e) for e in permanent] == [False] * len(permanent)
    assert classify_store_error(KeyError("not the store's")) is None
