"""Corpus loaders: Bespoke-Stratos and question/solution tables into the one row shape."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rlt_core.data.corpus import (
    BespokeTurns,
    load_corpus,
    parse_bespoke_conversation,
    seeded_subset,
)
from rlt_core.data.validation import CORPUS_COLUMNS, DataValidationError
from rlt_core.formats import END_SOLUTION, student_assistant_text

DATA = Path(__file__).parents[1] / "fixtures" / "data"
BESPOKE_DROPS = {
    "duplicate": ("bespoke_sample-000003",),
    "empty_question": ("bespoke_sample-000004",),
    f"missing_tags:{END_SOLUTION}": ("bespoke_sample-000005",),
}


@pytest.mark.parametrize("file", ["bespoke_sample.jsonl", "bespoke_sample.parquet"])
def test_bespoke_lenient_keeps_four_of_seven_and_counts_each_drop(file):
    load = load_corpus(str(DATA / file), schema="bespoke", mode="lenient")
    rows = load.rows
    assert list(rows.columns) == list(CORPUS_COLUMNS)
    # 7 rows: 3 = duplicate of 0, 4 = blank question, 5 = no end tag -> 0, 1, 2, 6 kept
    assert rows["id"].to_list() == [f"bespoke_sample-00000{k}" for k in (0, 1, 2, 6)]
    assert load.report.total == 7 and load.report.kept == 4
    assert dict(load.report.dropped_ids) == BESPOKE_DROPS
    first = rows.iloc[0]
    assert first["question"] == "Return your final response within \\boxed{}. What is 7 times 8?"
    assert first["thought"] == "Okay, 7 times 8. 7 times 4 is 28, doubled is 56."
    assert first["solution"] == "7 x 8 = 56, so the answer is \\boxed{56}."
    assert set(rows["source"]) == {"bespoke_sample"}


def test_bespoke_jsonl_and_parquet_load_identical_rows():
    jsonl = load_corpus(str(DATA / "bespoke_sample.jsonl"), schema="bespoke", mode="lenient")
    parquet = load_corpus(str(DATA / "bespoke_sample.parquet"), schema="bespoke", mode="lenient")
    pd.testing.assert_frame_equal(jsonl.rows, parquet.rows)


def test_bespoke_strict_raises_naming_every_bad_row():
    with pytest.raises(DataValidationError) as info:
        load_corpus(str(DATA / "bespoke_sample.jsonl"), schema="bespoke", mode="strict")
    message = str(info.value)
    for ids in BESPOKE_DROPS.values():
        assert ids[0] in message
    assert f"missing_tags:{END_SOLUTION}" in message


def test_parse_bespoke_conversation_round_trips_the_student_format():
    assistant = student_assistant_text("think", "answer")
    turns = [{"from": "user", "value": "Q?"}, {"from": "assistant", "value": assistant}]
    assert parse_bespoke_conversation(turns) == BespokeTurns("Q?", "think", "answer", None)


@pytest.mark.parametrize(
    "conversations",
    [
        [{"from": "user", "value": "Q?"}],  # no assistant turn
        [{"from": "assistant", "value": "A"}],  # no user turn
        "not a list",
        [{"from": "user", "value": None}, {"from": "assistant", "value": "A"}],
    ],
)
def test_malformed_conversations_are_flagged(conversations):
    assert parse_bespoke_conversation(conversations).issue == "malformed_conversation"


def test_missing_tags_are_all_named():
    assistant = "<|begin_of_thought|>\n\nno closing tags at all"
    turns = [{"from": "user", "value": "Q"}, {"from": "assistant", "value": assistant}]
    parsed = parse_bespoke_conversation(turns)
    assert parsed.issue == (
        "missing_tags:<|end_of_thought|>,<|begin_of_solution|>,<|end_of_solution|>"
    )
    assert parsed.solution is None and parsed.question == "Q"


def _custom_columns(**thought: str):
    """The question/solution fixture whose columns are named `problem` and
    `reference_solution` (and `trace`, when `thought_column="trace"` is given)."""
    return load_corpus(
        str(DATA / "qs_custom_columns.jsonl"),
        schema="question_solution",
        question_column="problem",
        solution_column="reference_solution",
        **thought,
    )


def test_question_solution_with_custom_column_names():
    load = _custom_columns(thought_column="trace")
    rows = load.rows
    assert rows["id"].to_list() == [f"qs_custom_columns-00000{k}" for k in range(5)]
    assert rows["question"][1] == "Name the chemical symbol of gold."
    assert rows["solution"][1] == "Au"
    assert rows["thought"].to_list()[:2] == ["12 + 30 = 42.", None]  # null trace -> None
    assert load.report.kept == 5


def test_question_solution_without_thought_column_has_no_thoughts():
    load = _custom_columns()
    assert load.rows["thought"].to_list() == [None] * 5


def test_wrong_column_names_say_how_to_map_them():
    with pytest.raises(ValueError) as info:
        load_corpus(str(DATA / "qs_custom_columns.jsonl"), schema="question_solution")
    message = str(info.value)
    assert "['question', 'solution']" in message  # missing
    assert "'problem'" in message and "'reference_solution'" in message  # present
    assert "question_column=" in message


def test_bespoke_schema_on_a_question_solution_table_points_to_the_other_schema():
    with pytest.raises(ValueError, match="schema='question_solution'"):
        load_corpus(str(DATA / "qs_custom_columns.jsonl"), schema="bespoke")


def test_shard_directory_keeps_the_source_ids():
    load = load_corpus(str(DATA / "qs_shards"), schema="question_solution")
    assert load.rows["id"].to_list() == ["shard-a", "shard-b", "shard-c"]
    assert set(load.rows["source"]) == {"qs_shards"}


def test_empty_source_id_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "question": "q", "solution": "s"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=r"column 'id' is empty at row index\(es\) \[1\]"):
        load_corpus(str(path), schema="question_solution")


def test_unknown_schema_is_an_error():
    with pytest.raises(ValueError, match="schema must be one of"):
        load_corpus(str(DATA / "qs_shards"), schema="alpaca")  # type: ignore[arg-type]


def test_bespoke_from_s3(s3_server, s3_bucket):
    uri = s3_server.upload(
        s3_bucket, "corpora/bespoke_sample.jsonl", str(DATA / "bespoke_sample.jsonl")
    )
    remote = load_corpus(
        uri, schema="bespoke", mode="lenient", storage_options=s3_server.storage_options
    )
    local = load_corpus(str(DATA / "bespoke_sample.jsonl"), schema="bespoke", mode="lenient")
    pd.testing.assert_frame_equal(remote.rows, local.rows)  # same ids: named after the file stem
    assert remote.report == local.report


def _corpus(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"r{k:03d}" for k in range(n)], "question": [f"q{k}" for k in range(n)]}
    )


def test_seeded_subset_is_reproducible_ordered_and_nested():
    df = _corpus(50)
    first = seeded_subset(df, 10, seed=0)
    assert first.equals(seeded_subset(df, 10, seed=0))
    assert first["id"].is_monotonic_increasing  # original order kept
    assert first.index.to_list() == list(range(10))
    assert not first["id"].equals(seeded_subset(df, 10, seed=1)["id"])
    assert set(first["id"]) < set(seeded_subset(df, 11, seed=0)["id"])  # n is inside n + 1


def test_seeded_subset_does_not_depend_on_row_order():
    df = _corpus(30)
    shuffled = df.sample(frac=1.0, random_state=7)
    assert set(seeded_subset(df, 8, 3)["id"]) == set(seeded_subset(shuffled, 8, 3)["id"])


def test_seeded_subset_size_limits():
    df = _corpus(5)
    with pytest.raises(ValueError, match="asked for 6 rows but the corpus has 5"):
        seeded_subset(df, 6, seed=0)
    assert seeded_subset(df, 6, seed=0, allow_fewer=True)["id"].to_list() == df["id"].to_list()
    with pytest.raises(ValueError, match="at least 1"):
        seeded_subset(df, 0, seed=0)
    with pytest.raises(ValueError, match="unique ids"):
        seeded_subset(pd.concat([df, df]), 2, seed=0)


def test_bespoke_rows_keep_their_system_prompt_verbatim():
    raw = pd.read_json(DATA / "bespoke_sample.jsonl", lines=True)
    reference = raw["system"][0]
    assert "such as analisying questions" in reference  # the data's text, not Figure 6's
    rows = load_corpus(str(DATA / "bespoke_sample.jsonl"), schema="bespoke", mode="lenient").rows
    assert rows["system"].to_list() == [reference] * len(rows)


def test_a_system_column_is_optional_and_kept_per_row(tmp_path):
    rows = [
        {"question": "Q1?", "solution": "A1", "system": "Be brief."},
        {"question": "Q2?", "solution": "A2", "system": None},
    ]
    with_system = tmp_path / "with.jsonl"
    pd.DataFrame(rows).to_json(with_system, orient="records", lines=True)
    loaded = load_corpus(str(with_system), schema="question_solution").rows
    assert loaded["system"].to_list() == ["Be brief.", None]
    without = tmp_path / "without.jsonl"
    pd.DataFrame(rows).drop(columns="system").to_json(without, orient="records", lines=True)
    assert load_corpus(str(without), schema="question_solution").rows["system"].to_list() == [
        None,
        None,
    ]
    # Read back from parquet (pandas stores the missing one as NaN), it is None again.
    loaded.to_parquet(tmp_path / "corpus.parquet")
    from rlt_core.data import row_systems

    assert row_systems(pd.read_parquet(tmp_path / "corpus.parquet")) == ["Be brief.", None]
