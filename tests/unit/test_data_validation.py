"""Row validation: every reason, its priority, strict errors that name ids, exact lenient counts."""

from __future__ import annotations

import pandas as pd
import pytest

from rlt_core.data.validation import (
    CORPUS_COLUMNS,
    DataValidationError,
    ValidationReport,
    normalise_text,
    validate_rows,
)


def _rows(*rows: tuple) -> pd.DataFrame:
    """Rows as (id, question, solution, thought[, load_issue]); source is always "t"."""
    records = []
    for row in rows:
        record = dict(zip(("id", "question", "solution", "thought"), row[:4], strict=True))
        record["source"] = "t"
        record["load_issue"] = row[4] if len(row) > 4 else None
        records.append(record)
    return pd.DataFrame.from_records(records)


def test_clean_rows_pass_unchanged_with_exactly_the_corpus_columns():
    df = _rows(("a", "q1", "s1", "t1"), ("b", "q2", "s2", None))
    kept, report = validate_rows(df, mode="strict")
    assert list(kept.columns) == list(CORPUS_COLUMNS)  # load_issue is gone
    assert kept["id"].to_list() == ["a", "b"] and kept["thought"].to_list() == ["t1", None]
    assert report == ValidationReport(total=2, kept=2, dropped={}, dropped_ids={})


def test_each_reason_is_counted_once_per_row_in_lenient_mode():
    df = _rows(
        ("a", "What is 1+1?", "2", None),
        ("b", "   ", "x", None),  # empty_question
        ("c", "q", " \n", None),  # empty_solution
        ("d", 3.0, "s", None),  # non_string question
        ("e", "q5", "s5", 1.5),  # non_string thought
        ("f", "q6", None, None, "missing_tags:<|end_of_solution|>"),  # loader's issue first
        ("a", "other", "other", None),  # duplicate_id of row "a"
        ("h", "What  is 1+1?\n", "2", "another trace"),  # duplicate of "a" after normalising
        ("i", "", "", None, "malformed_conversation"),  # issue wins over empty question
    )
    kept, report = validate_rows(df, mode="lenient")
    assert kept["id"].to_list() == ["a"]
    assert report.total == 9 and report.kept == 1
    assert dict(report.dropped) == {
        "empty_question": 1,
        "empty_solution": 1,
        "non_string": 2,
        "missing_tags:<|end_of_solution|>": 1,
        "duplicate_id": 1,
        "duplicate": 1,
        "malformed_conversation": 1,
    }
    assert report.dropped_ids["non_string"] == ("d", "e")
    assert report.dropped_ids["duplicate"] == ("h",)
    # 9 rows - 1 kept = 8 dropped = 1+1+2+1+1+1+1: nothing dropped silently
    assert sum(report.dropped.values()) == report.total - report.kept


def test_duplicate_keeps_the_first_valid_row_not_an_earlier_invalid_one():
    # "x" has the same content as "z" but is dropped for its loader issue, so "z" is kept.
    df = _rows(("x", "q", "s", None, "malformed_conversation"), ("z", "q", "s", None))
    kept, report = validate_rows(df, mode="lenient")
    assert kept["id"].to_list() == ["z"] and dict(report.dropped) == {"malformed_conversation": 1}


def test_case_is_kept_in_the_duplicate_key():
    df = _rows(("a", "Find X.", "X = 1", None), ("b", "Find x.", "x = 1", None))
    assert validate_rows(df, mode="strict")[1].kept == 2
    assert normalise_text("  a\t b\n\nc ") == "a b c"
    assert normalise_text("ｘ²") == "x2"  # NFKC folds full-width letters and superscripts


def test_strict_mode_names_reasons_and_row_ids():
    df = _rows(("a", "q", "s", None), ("b", " ", "s", None), ("c", "q", "s", None))
    with pytest.raises(DataValidationError) as info:
        validate_rows(df, mode="strict")
    message = str(info.value)
    assert "2 of 3 rows failed" in message
    assert "empty_question" in message and ": 1 row(s): b" in message
    assert "duplicate" in message and ": 1 row(s): c" in message
    assert "mode='lenient'" in message
    assert info.value.report.dropped_ids == {"empty_question": ("b",), "duplicate": ("c",)}
    assert isinstance(info.value, ValueError)


def test_strict_message_shows_the_first_20_ids_and_the_count():
    df = _rows(*[(f"r{k:02d}", "", "s", None) for k in range(25)])
    with pytest.raises(DataValidationError) as info:
        validate_rows(df, mode="strict")
    message = str(info.value)
    assert "25 row(s): r00, r01" in message and "r19 ..." in message
    assert "r20" not in message
    assert len(info.value.report.dropped_ids["empty_question"]) == 25  # the report keeps all


def test_report_to_dict_is_json_ready():
    df = _rows(("a", "q", "s", None), ("b", "", "s", None))
    _, report = validate_rows(df, mode="lenient")
    assert report.to_dict() == {
        "total": 2,
        "kept": 1,
        "dropped": {"empty_question": 1},
        "dropped_ids": {"empty_question": ["b"]},
    }


def test_bad_mode_and_missing_columns_are_errors():
    df = _rows(("a", "q", "s", None))
    with pytest.raises(ValueError, match="mode must be one of"):
        validate_rows(df, mode="loose")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['thought'\]"):
        validate_rows(df.drop(columns="thought"), mode="strict")
