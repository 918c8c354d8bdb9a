"""A shared S3 store (moto's real server) under concurrent publishers, fetchers and lease
holders, and refs that try to leave their store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlt_core import artifacts
from rlt_core.artifacts import ArtifactRef
from rlt_core.store import ArtifactStore
from tests.fixtures_s3 import S3Endpoint

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]


def _artifact(working: Path, content: bytes, stage: str = "teacher_sft", key: str = "k1") -> Path:
    out = working / stage / key
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.bin").write_bytes(content)
    artifacts.write_manifest(out, stage=stage, config={}, upstream={}, metrics={})
    return out


def _store(root: str, cache: Path, endpoint: S3Endpoint) -> ArtifactStore:
    return ArtifactStore.open(root, cache_dir=cache, storage_options=endpoint.storage_options)


def test_a_second_publisher_of_a_key_adopts_the_first_artifact(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/runs"
    a, b = _store(root, tmp_path / "a", s3_server), _store(root, tmp_path / "b", s3_server)
    first = a.publish(_artifact(a.working, b"first run"))
    # The same key finished a second time elsewhere: training is not bitwise repeatable.
    second = b.publish(_artifact(b.working, b"second run, other bytes"))
    assert second == first  # adopted: the refs handed out for the first stay valid
    assert (b.working / "teacher_sft" / "k1" / "model" / "weights.bin").read_bytes() == b"first run"
    fresh = _store(root, tmp_path / "c", s3_server)
    assert (fresh.fetch(first) / "model" / "weights.bin").read_bytes() == b"first run"
    # A publisher that looked before the first manifest existed still cannot replace it: the
    # manifest is written with S3's If-None-Match.
    late = _artifact(tmp_path / "late", b"a third run")
    fs, path = b._fs()
    assert b._put_manifest(fs, late, f"{path}/teacher_sft/k1") == first.digest
    assert json.loads(fs.cat_file(f"{path}/teacher_sft/k1/manifest.json"))["digest"] == first.digest


def test_concurrent_fetches_of_one_artifact_into_one_cache(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/runs"
    source = _store(root, tmp_path / "source", s3_server)
    ref = source.publish(_artifact(source.working, os.urandom(1 << 20)))
    cache, results, errors = tmp_path / "node", [], []

    def fetch() -> None:
        try:
            results.append(_store(root, cache, s3_server).fetch(ref))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert artifacts.files_digest(results[0]) == ref.digest
    assert sorted(p.name for p in (cache / "teacher_sft").iterdir()) == ["k1"]  # no leftovers


def test_refs_outside_their_store_are_refused_and_nothing_outside_is_touched(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/runs"
    store = _store(root, tmp_path / "cache", s3_server)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    hostile = [
        f"{root}/../../outside",  # climbs out of the cache
        f"{root}/teacher_sft/../../../outside",
        "s3://another-bucket/runs/teacher_sft/k1",  # another bucket
        f"{root}/teacher_sft/k1/model",  # a file inside an artifact, not an artifact
    ]
    for uri in hostile:
        with pytest.raises(ValueError, match="is not an artifact of the store"):
            store.fetch(ArtifactRef(uri=uri, digest="0" * 64))
        assert not store.holds(ArtifactRef(uri=uri, digest="0" * 64))
    local = ArtifactStore.open(tmp_path / "local")
    with pytest.raises(ValueError, match="is not an artifact of the store"):
        local.fetch({"uri": str(tmp_path / "local" / ".." / "outside"), "digest": "0"})
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "mine"


_HOLDER = """
import sys, time
from rlt_core.store import ArtifactStore
store = ArtifactStore.open(sys.argv[1], cache_dir=sys.argv[2],
                           storage_options={"client_kwargs": {"endpoint_url": sys.argv[3]}})
with store.lease("teacher_sft-k1", ttl=float(sys.argv[4])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_remote_lease_has_one_holder_and_a_dead_holders_lease_expires(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [root, str(tmp_path / "holder"), s3_server.url, "4"]
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert holder.stdout.readline().decode().strip() == "held", holder.stderr.read().decode()
    store = _store(root, tmp_path / "waiter", s3_server)
    got: list[float] = []

    def wait_for_it() -> None:
        with store.lease("teacher_sft-k1", ttl=4):
            got.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(6)
    assert not got  # the holder is alive and renews its lease: the waiter waits
    killed = time.monotonic()
    holder.send_signal(signal.SIGKILL)  # dies holding it: nobody renews it any more
    holder.wait()
    waiter.join(timeout=30)
    assert got and got[0] - killed < 10  # taken over once it expired (ttl 4 s)
    leases = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="runs/.leases/")
    assert leases.get("KeyCount", 0) == 0  # released by the waiter
