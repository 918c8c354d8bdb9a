"""refine_traces without a server: where it would send its requests, what its key holds, how
an answer becomes a student row or a counted drop, and the report's "not run" line. The
requests themselves go to a real server in tests/vllm/test_refine_traces_server.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rlt_core.config import ConfigError, load_config
from rlt_core.endpoint import Endpoint, endpoint_of
from rlt_core.reports import REPORT_JSON, REPORT_MD, Evaluated, run_report
from rlt_core.stages.refine_traces import parse_answer, read_raw_answers
from rlt_core.stages.specs import REFINE_TRACES
from tests.unit.test_reports import _evaluation


def _cfg(*overrides: str):
    return load_config("paper-7b", list(overrides)).refine_traces


@pytest.mark.parametrize(
    ("overrides", "environ", "expected"),
    [
        ((), {}, "no endpoint configured: set $OPENAI_API_KEY"),
        ((), {"OPENAI_API_KEY": "k"}, Endpoint(None, "k")),  # OpenAI's own API
        ((), {"OPENAI_BASE_URL": "http://h:1/v1"}, Endpoint("http://h:1/v1", "EMPTY")),
        (("refine_traces.base_url=http://p:2/v1",), {"OPENAI_BASE_URL": "http://h:1/v1"},
         Endpoint("http://p:2/v1", "EMPTY")),  # the profile's address wins
        (("refine_traces.api_key_env=MY_KEY",), {"OPENAI_API_KEY": "a", "MY_KEY": "b"},
         Endpoint(None, "b")),
        (("refine_traces.model=null",), {"OPENAI_API_KEY": "k"},
         "no endpoint configured: refine_traces.model is null"),
    ],
)  # fmt: skip
def test_the_endpoint_comes_from_the_profile_and_the_environment(
    overrides: tuple[str, ...], environ: dict[str, str], expected: object
) -> None:
    found = endpoint_of(_cfg(*overrides), environ)
    if isinstance(expected, str):
        assert isinstance(found, str) and found.startswith(expected)
    else:
        assert found == expected
    assert "secret" not in repr(Endpoint("http://h", "secret"))  # a key is never printed


def test_the_key_holds_model_prompts_and_sampling_but_not_where_or_how_requests_go() -> None:
    base = REFINE_TRACES.key_of({"cfg": _cfg()}, {})
    same = [
        "refine_traces.base_url=http://10.0.0.1:8000/v1", "refine_traces.api_key_env=OTHER",
        "refine_traces.concurrency=64", "refine_traces.max_retries=0",
        "refine_traces.timeout_s=5", "refine_traces.shard_size=7",
    ]  # fmt: skip
    for override in same:
        assert REFINE_TRACES.key_of({"cfg": _cfg(override)}, {}) == base, override
    for override in ("refine_traces.model=gpt-4.1", "refine_traces.temperature=0",
                     "refine_traces.max_tokens=8", "refine_traces.seed=1"):  # fmt: skip
        assert REFINE_TRACES.key_of({"cfg": _cfg(override)}, {}) != base, override
    config = REFINE_TRACES.key_config(cfg=_cfg())
    assert config["prompts"]["response_format"]["json_schema"]["strict"] is True
    assert "{question}" in config["prompts"]["user"] and "{response}" in config["prompts"]["user"]


def test_bad_values_are_refused_at_load_with_the_fix() -> None:
    with pytest.raises(ConfigError) as error:
        _cfg("refine_traces.base_url=localhost:8000", "refine_traces.api_key_env=MY-KEY",
             "refine_traces.concurrency=0", "refine_traces.model=' '")  # fmt: skip
    text = str(error.value)
    for key in ("base_url", "api_key_env", "concurrency", "model"):
        assert f"refine_traces.{key}" in text
    assert "set e.g. http://127.0.0.1:8000/v1" in text


@pytest.mark.parametrize(
    ("content", "finish", "reason"),
    [
        ('{"thought": "a\\n\\nb", "solution": "\\\\boxed{3}"}', "stop", "converted"),
        ('{"thought": "a", "solu', "length", "cut"),
        (None, "content_filter", "refused"),
        ("the thought is a", "stop", "not json"),
        ('["a", "b"]', "stop", "not json"),
        ('{"thought": " ", "solution": "x"}', "stop", "empty thought"),
        ('{"thought": "a", "solution": ""}', "stop", "empty solution"),
        ('{"thought": "a"}', "stop", "empty solution"),
    ],
)
def test_an_answer_is_a_student_row_or_a_counted_drop(
    content: str | None, finish: str, reason: str
) -> None:
    record: dict = {"thought": None, "solution": None}
    assert parse_answer(content, finish, record) == reason
    if reason == "converted":
        assert record == {"thought": "a\n\nb", "solution": "\\boxed{3}"}
    else:
        assert record == {"thought": None, "solution": None}


def test_raw_answers_are_checked_before_any_request(tmp_path: Path) -> None:
    path = tmp_path / "raw.parquet"
    pd.DataFrame({"id": [1, 2], "question": ["q", "q"], "response": ["a", " "]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"1 row\(s\) without an answer to convert, ids \['2'\]"):
        read_raw_answers(path)
    pd.DataFrame({"id": [1], "question": ["q"]}).to_parquet(path)
    with pytest.raises(ValueError, match="response"):
        read_raw_answers(path)


def test_a_row_the_flow_did_not_run_is_in_the_report_with_why(tmp_path: Path) -> None:
    rl = _evaluation(tmp_path, "rl", {"aime24": 0.1, "math500": 0.5, "gpqa_diamond": 0.3})
    why = "Table 2, RL[limr] with cold start RL cold-start (GPT): not run: no endpoint configured"
    ref = run_report(tmp_path / "store", title="t", tasks=("aime24", "math500", "gpqa_diamond"),
                     table2=[Evaluated({"Model": "RL[limr]", "Cold start": "—"}, rl)],
                     notes=[why])  # fmt: skip
    out = Path(ref.uri)
    assert f"**Not run.**\n\n- {why}\n" in (out / REPORT_MD).read_text()
    assert json.loads((out / REPORT_JSON).read_text())["not_run"] == [why]
