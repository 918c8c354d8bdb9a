"""Faults seen from the orchestration layer, on a real Prefect server: a planted pickle
record, a deleted artifact behind a cached record, a transient failure inside a stage's child
process, and store URIs that cannot work. The flows here run the data stage (seconds, no
model) and a teacher_sft whose work is a stub injected into its child process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from prefect import flow
from typer.testing import CliRunner

from flows.cli import app
from flows.common import start_run
from flows.plan import start_plan
from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.stages.plan import stage_cache_key
from rlt_core.store import StoreAccessError, StoreURIError
from tasks import stages
from tests.fixtures_s3 import S3Endpoint

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
DATA = [
    "data.countdown_train_size=8",
    "data.countdown_test_size=4",
    "data.countdown_seed=1",
    "teacher_sft.num_train_samples=4",
]


@pytest.fixture
def overrides(tiny_model_path: Path) -> list[str]:
    """The tiny profile's data stage, measured in a tiny model's tokenizer."""
    return [*DATA, f"teacher_sft.model={tiny_model_path}"]


@flow(name="faults-data")
def data_flow(store: str, overrides: list[str], teacher: bool = False) -> dict:
    """data (and teacher_sft on its corpus): each task run's final state and the refs."""
    with start_run("tiny", overrides, store) as runner:
        data = runner(stages.data, "data")
        futures = {"data": data}
        if teacher:
            from flows.common import file_in

            futures["teacher_sft"] = runner(stages.teacher_sft, "teacher_sft",
                                            corpus=file_in(data, "corpus.parquet"))  # fmt: skip
        refs = {name: runner.result(future) for name, future in futures.items()}
        return {name: {"ref": refs[name], "state": f.state.name} for name, f in futures.items()}


class _Planted:
    """A pickled payload that makes a directory when it is unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (os.makedirs, (self.path,))


def _plant_pickle_record(path: Path, payload_dir: Path) -> bytes:
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    metadata = ResultRecordMetadata(serializer=PickleSerializer(), storage_key=str(path))
    content = ResultRecord(metadata=metadata, result=_Planted(payload_dir)).serialize()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return content


def test_a_planted_pickle_record_is_never_unpickled(
    prefect_api: str, overrides: list[str], tmp_path: Path
) -> None:
    from prefect._internal.result_records import ResultRecord

    store = tmp_path / "store"
    key = stage_cache_key("data", load_config("tiny", overrides), {})
    record = store / ".prefect-results" / key
    _plant_pickle_record(record, tmp_path / "payload")
    # What Prefect itself does with such a record (here one with another payload folder):
    ResultRecord.deserialize(_plant_pickle_record(tmp_path / "copy", tmp_path / "proof"))
    assert (tmp_path / "proof").is_dir()  # it runs the payload: a planted record is live
    result = data_flow(str(store), overrides)
    assert not (tmp_path / "payload").exists()  # never unpickled
    assert result["data"]["state"] == "Completed"  # computed, not served from the record
    assert b'"type":"json"' in record.read_bytes()  # replaced by the stage's own JSON record


def test_a_deleted_artifact_is_recomputed_and_the_plan_says_so_first(
    prefect_api: str, overrides: list[str], tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    first = data_flow(store, overrides)["data"]
    assert data_flow(store, overrides)["data"]["state"] == "Cached"  # a verified hit
    shutil.rmtree(first["ref"]["uri"])
    planner = start_plan("tiny", overrides, store)
    planner(stages.data, "data")
    assert [row.status for row in planner.rows] == ["run"]
    second = data_flow(store, overrides)["data"]
    assert second["state"] == "Completed" and artifacts.is_complete(second["ref"]["uri"])
    planner = start_plan("tiny", overrides, store)
    planner(stages.data, "data")
    assert [row.status for row in planner.rows] == ["cached"]


_INJECT = """
# Loaded by every Python process whose path starts with this folder: the stage children.
import os
from pathlib import Path

from rlt_core.owner import Outcome
from rlt_core.stages import specs

counter = Path(os.environ["RLT_FAULT_COUNTER"])


def stub(work, cfg, corpus, subset_seed, **options):
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if os.environ["RLT_FAULT"] == "transient" and attempt == 1:
        raise ConnectionResetError("connection reset by peer (injected on the first attempt)")
    if os.environ["RLT_FAULT"] == "config":
        raise ValueError("teacher_sft.max_length=-1: injected bad input")
    (work.out / "model").mkdir()
    (work.out / "model" / "weights.bin").write_bytes(b"stub")
    return Outcome({"attempt": attempt})


real = specs.StageSpec.entry_function
specs.StageSpec.entry_function = lambda self: stub if self.name == "teacher_sft" else real(self)
"""


@pytest.mark.parametrize(("fault", "attempts"), [("transient", 2), ("config", 1)])
def test_a_stage_childs_transient_failure_is_retried_and_bad_input_is_not(
    prefect_api: str,
    overrides: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    attempts: int,
) -> None:
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(_INJECT)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'inject'}{os.pathsep}{ROOT}")
    monkeypatch.setenv("RLT_STAGE_PROCESS", "subprocess")
    monkeypatch.setenv("RLT_FAULT", fault)
    monkeypatch.setenv("RLT_FAULT_COUNTER", str(tmp_path / "attempts"))
    store = str(tmp_path / "store")
    if fault == "transient":
        result = data_flow(store, overrides, teacher=True)
        assert result["teacher_sft"]["state"] == "Completed"
        assert artifacts.read_manifest(result["teacher_sft"]["ref"]["uri"])["metrics"] == {
            "attempt": 2
        }
    else:
        with pytest.raises(Exception, match="injected bad input"):
            data_flow(store, overrides, teacher=True)
    assert (tmp_path / "attempts").read_text() == str(attempts)


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("", "the store is empty"),
        ("s3:/bucket/runs", "slashes missing"),
        ("foo://bucket/runs", "not a storage protocol"),
        ("s3:///runs", "names no bucket"),
    ],
)
def test_bad_store_uris_fail_before_any_stage(
    store: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURIError, match=message):
        start_run("tiny", DATA, store)
    assert not list(tmp_path.iterdir())  # nothing written anywhere
    done = CliRunner().invoke(app, ["plan", "--store", store])
    assert done.exit_code == 2 and message in done.output


def test_plan_on_an_unreachable_endpoint_is_an_error_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    done = CliRunner().invoke(app, ["plan", "--store", "s3://bucket/runs"])
    s3fs.S3FileSystem.clear_instance_cache()
    assert done.exit_code == 2 and "store unavailable" in done.output, done.output


def test_credentials_in_storage_options_are_refused(tmp_path: Path) -> None:
    options = {"key": "AKIA...", "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}
    with pytest.raises(StoreURIError, match=r"hold credentials \(key\).*AWS_ACCESS_KEY_ID"):
        start_run("tiny", DATA, "s3://bucket/runs", storage_options=options)


def test_a_store_that_cannot_be_written_fails_before_any_stage(
    s3_server: S3Endpoint, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StoreAccessError, match="cannot be written"):
        start_run("tiny", DATA, str(tmp_path / "a-file" / "store"))
    missing = "s3://no-such-bucket-here/runs"
    with pytest.raises(StoreAccessError, match="no-such-bucket-here"):
        start_run("tiny", DATA, missing, storage_options=s3_server.storage_options,
                  cache_dir=str(tmp_path / "cache"))  # fmt: skip
