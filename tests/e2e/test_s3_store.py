"""The pipeline with its artifact store on a real S3 endpoint (moto's server on 127.0.0.1) that
goes away mid-run. (The whole pipeline on S3, on Ray, then again from the cache, is the e2e
session's first run: tests/e2e/test_full_pipeline.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import s3fs

from flows.full_pipeline import full_pipeline
from rlt_core import artifacts
from rlt_core.store import StoreUnavailableError
from tests.e2e.conftest import E2E
from tests.fixtures_s3 import S3Endpoint, TcpProxy

pytestmark = pytest.mark.e2e


def _latest_run_count(name: str) -> int:
    """How many times the newest task run called `name` ran (1 + its retries)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    return task_run.run_count


def _manifests(client, bucket: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listing if o["Key"].endswith("/manifest.json"))


def test_s3_stopped_mid_run_retries_then_fails_with_no_corrupt_artifact(
    e2e: E2E, s3_server: S3Endpoint, tmp_path: Path, monkeypatch
) -> None:
    # The flow reaches moto through a relay that the test cuts mid-run; the test itself keeps
    # talking to moto directly, so it can look at what S3 holds after the failure.
    relay = TcpProxy(int(s3_server.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast: botocore retries ~25 s otherwise
    monkeypatch.setenv("RLT_HOME", str(tmp_path / "rlt-home"))
    # fsspec reuses filesystem instances made with the same arguments: drop the ones an
    # earlier test built against moto directly, so the flow's S3 traffic goes through the relay.
    s3fs.S3FileSystem.clear_instance_cache()
    client = s3_server.client()
    client.create_bucket(Bucket="flaky")
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            full_pipeline(profile="tiny", overrides=e2e.overrides, store="s3://flaky/runs")
            outcome["error"] = None
        except BaseException as error:  # noqa: BLE001  (the test inspects it)
            outcome["error"] = error

    flow_thread = threading.Thread(target=run)
    flow_thread.start()
    deadline = time.monotonic() + 300
    try:
        cache = tmp_path / "rlt-home" / "store-cache"
        while not list(cache.glob("*/.work/teacher_sft/*")):  # teacher_sft is training
            assert flow_thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        relay.stop()  # S3 becomes unreachable while teacher_sft trains
        flow_thread.join(timeout=600)
    finally:
        relay.stop()
        s3fs.S3FileSystem.clear_instance_cache()  # later tests must not reuse the relay's
    error = outcome["error"]
    assert isinstance(error, StoreUnavailableError), repr(error)
    assert "store unavailable while" in str(error) and "teacher_sft" in str(error)
    assert _latest_run_count("teacher_sft") == 3  # the first try and Prefect's 2 retries
    # Nothing half-written is taken as finished: locally teacher_sft is complete (its files are
    # kept for a retry), and S3 holds no teacher_sft manifest.
    (local,) = (tmp_path / "rlt-home" / "store-cache").glob("*/teacher_sft/*")
    assert artifacts.is_complete(local)
    assert [key for key in _manifests(client, "flaky") if "/teacher_sft/" in key] == []
