"""What may not be faked or go stale (issue 34): cache records read the way Prefect reads them,
identities that follow every byte, manifests trusted only when their files hash to them, and
failures judged on their own chain. Each test names the finding of the issue it covers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from rlt_core import artifacts, identity
from rlt_core.config import load_config
from rlt_core.failures import is_transient
from rlt_core.identity import input_identity
from rlt_core.stages.plan import stage_cache_key
from rlt_core.stages.specs import DATA
from tests.faults.test_flow_faults import data_flow

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def overrides(tiny_model_path: Path) -> list[str]:
    from tests.faults.test_flow_faults import DATA as DATA_OVERRIDES

    return [*DATA_OVERRIDES, f"teacher_sft.model={tiny_model_path}"]


def test_4_a_record_prefects_model_refuses_is_removed_not_decoded_by_its_fallback(
    prefect_api: str, overrides: list[str], tmp_path: Path
) -> None:
    # A record that Prefect's ResultRecord model refuses (here: an expiration that is no
    # date) is decoded by Prefect's fallback JSON decoder, which builds the `__class__` the
    # record names from its `data`: Prefect would serve `data` (a ref never checked), while
    # the record's `result` (what a json-only check reads) names the real artifact.
    store = tmp_path / "store"
    first = data_flow(str(store), overrides)["data"]
    key = stage_cache_key("data", load_config("tiny", overrides), {})
    path = store / ".prefect-results" / key
    record = json.loads(path.read_bytes())
    record["metadata"]["expiration"] = "never"
    record["__class__"] = "builtins.dict"
    record["data"] = {"uri": str(tmp_path / "elsewhere"), "digest": "0" * 64}
    path.write_text(json.dumps(record))
    # The check reads the record as Prefect's model does, so it removes it itself (a json-only
    # check passes it: its `result` names the real artifact with the real digest).
    from rlt_core.store import ArtifactStore
    from tasks.runtime import drop_unverified_record

    planted = path.read_bytes()
    drop_unverified_record(store / ".prefect-results", key, ArtifactStore.open(store))
    assert not path.exists()
    path.write_bytes(planted)
    second = data_flow(str(store), overrides)["data"]
    assert second["ref"] == first["ref"], "Prefect served the planted value"
    assert second["state"] == "Completed"  # the record was removed, the stage found its artifact
    assert "__class__" not in json.loads(path.read_bytes())  # its own record again


def test_5_a_same_size_edit_that_keeps_the_mtime_changes_the_identity_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cp -p, rsync -a, tar x and touch -d restore the mtime; no tool restores the ctime. What
    # crosses processes is the identity cache file: a new process starts with an empty memory
    # cache (emptied here), so it reads the stamp and digest the first one wrote there.
    monkeypatch.setenv("RLT_HOME", str(tmp_path / "home"))
    weights = tmp_path / "model" / "weights.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"A" * 4096)
    before = input_identity(weights.parent)
    assert json.loads((tmp_path / "home" / "identity-cache.json").read_text())  # written
    stat = weights.stat()
    weights.write_bytes(b"B" * 4096)  # the same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    monkeypatch.setattr(identity, "_MEMORY", {})  # as a new process starts
    assert input_identity(weights.parent) != before


def test_5_retrained_weights_keep_the_data_key_and_a_new_tokenizer_changes_it(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    model = tmp_path / "teacher"
    shutil.copytree(tiny_model_path, model)

    def data_key() -> str:
        cfg = load_config("tiny", [f"teacher_sft.model={model}"])
        return DATA.key(cfg, None, {}).digest

    before = data_key()
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)  # retrained weights
    assert data_key() == before  # data reads the tokenizer only
    (model / "tokenizer_config.json").write_text(
        (model / "tokenizer_config.json").read_text().replace("{", '{"model_max_length": 7, ', 1)
    )
    assert data_key() != before


def _artifact(root: Path) -> Path:
    out = root / "generate_traces" / "0123456789abcdef"
    out.mkdir(parents=True)
    (out / "traces.parquet").write_bytes(b"rows")
    artifacts.write_manifest(out, stage="generate_traces", config={}, upstream={}, metrics={})
    return out


def test_5_a_folder_with_another_tools_or_an_edited_manifest_is_hashed_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RLT_HOME", str(tmp_path / "home"))
    out = _artifact(tmp_path / "store")
    digest = artifacts.read_manifest(out)["digest"]
    assert input_identity(out / "traces.parquet") == f"{digest}:traces.parquet"  # trusted
    copy = tmp_path / "copy" / "generate_traces" / "0123456789abcdef"
    shutil.copytree(out, copy)
    (copy / "traces.parquet").write_bytes(b"edit")  # a copied artifact, edited
    with caplog.at_level(logging.WARNING):
        edited = input_identity(copy / "traces.parquet")
    assert not edited.startswith(digest) and "does not hold the files" in caplog.text
    other = tmp_path / "tool"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "another tool"}))  # no digest
    (other / "data.txt").write_text("x")
    identity = input_identity(other / "data.txt")  # no KeyError: the file's own sha256
    assert identity == hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "content",
    ["{not json", '["a list"]', '{"/x": 3, "/y": ["only one"]}', '{"/z": [1, 2]}'],
)
def test_5_a_malformed_identity_cache_is_ignored_with_a_warning(
    content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("RLT_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "identity-cache.json").write_text(content)
    file = tmp_path / "f.txt"
    file.write_text("x")
    with caplog.at_level(logging.WARNING):
        identity = input_identity(file)  # no crash
    assert len(identity) == 64 and "identity-cache.json" in caplog.text


def test_8_an_error_raised_while_handling_a_lost_connection_is_not_transient() -> None:
    def bad_input_found_during_a_retry() -> None:
        try:
            raise ConnectionResetError("connection reset by peer")
        except ConnectionResetError:
            raise ValueError("teacher_sft.max_length=-1 is refused")  # noqa: B904 (implicit)

    with pytest.raises(ValueError) as caught:
        bad_input_found_during_a_retry()
    assert isinstance(caught.value.__context__, ConnectionResetError)
    assert not is_transient(caught.value)  # its own chain has no lost connection
    wrapped = OSError("s3 said: slow down")
    wrapped.__cause__ = ConnectionResetError("reset")  # `raise OSError(...) from error`
    assert is_transient(wrapped)


@pytest.mark.parametrize(
    ("root", "options", "named"),
    [
        ("ftp://user:pass@host/rlt", None, "user:password@"),
        ("s3://bucket/rlt", {"client_kwargs": {"endpoint_url": "http://ak:sk@minio:9000"}},
         "client_kwargs.endpoint_url"),
        ("s3://bucket/rlt", {"s3_additional_kwargs": {"SSECustomerKey": "c2VjcmV0"}},
         "s3_additional_kwargs.SSECustomerKey"),
        ("s3://bucket/rlt", {"api_key": "k"}, "api_key"),
    ],
)  # fmt: skip
def test_8_credentials_anywhere_in_a_store_uri_or_its_options_are_refused(
    root: str, options: dict | None, named: str
) -> None:
    from rlt_core.store import StoreURIError, check_store_uri

    with pytest.raises(StoreURIError, match=re.escape(named)) as refused:
        check_store_uri(root, options)
    assert "pass" not in str(refused.value).replace("password", "")  # the secret is not echoed
    check_store_uri("s3://bucket/rlt", {"s3_additional_kwargs": {"SSEKMSKeyId": "arn:aws:kms"}})


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_7_a_link_inside_an_artifact_is_refused_before_its_manifest(
    kind: str, tmp_path: Path
) -> None:
    secret = tmp_path / "home" / ".aws"
    secret.mkdir(parents=True)
    (secret / "credentials").write_text("aws_secret_access_key = not-for-the-bucket")
    out = tmp_path / "store" / "evaluate" / "0123456789abcdef"
    out.mkdir(parents=True)
    (out / "results.json").write_text("{}")
    target = secret / "credentials" if kind == "file" else secret
    (out / "details").symlink_to(target)
    with pytest.raises(ValueError, match="details is a symbolic link"):
        artifacts.write_manifest(out, stage="evaluate", config={}, upstream={}, metrics={})
    assert not artifacts.is_complete(out)
