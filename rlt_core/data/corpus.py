"""Question-solution corpora in one row shape: the project's corpus contract.

Every corpus loader returns a pandas DataFrame with exactly these columns, in source order,
index 0..n-1, ids unique, no two rows with the same normalised question and solution:

| column   | type        | meaning                                                            |
|----------|-------------|--------------------------------------------------------------------|
| id       | str         | the source's own `id` column when it has one, else                 |
|          |             | `<source-name>-<row index, 6 digits>` (index in the raw table)     |
| question | str         | the problem (the user turn), not blank                             |
| solution | str         | the reference solution, not blank                                  |
| thought  | str or None | the corpus' own reasoning trace when it has one, else None; for     |
|          |             | Bespoke-Stratos-17k the R1 traces, i.e. the baseline traces of     |
|          |             | Table 1 (section 4.1)                                              |
| system   | str or None | the student system prompt the row comes with (Bespoke-Stratos'     |
|          |             | `system` field), else None: the default, the text the Bespoke-     |
|          |             | trained students know (`rlt_core.formats.student_system`)          |
| source   | str         | the source's short name (`sources.source_name`)                    |

`thought` and `system` are object columns so that a missing value stays None (pandas >= 3
would store it as NaN in a string column, and does so again when the rows come back from a
parquet file: map NaN to None there with `validation.none_if_missing`).

Schemas:

- `bespoke`: Bespoke-Stratos-17k (Appendix A.2, footnote 2): columns `system` and
  `conversations`, a list of `{"from": "user" | "assistant", "value": str}`. The user value is
  the question; the assistant value is in the student format of Figure 6 and is split with
  `rlt_core.formats.parse_student_text`. `system` is kept verbatim: it is the prompt the
  Bespoke-trained students (the reward's frozen student, Appendix A.1) were trained on, and it
  differs from the paper's Figure 6 by a letter ("analisying"); every later stage reads the
  row's own text.
- `question_solution`: any table with question and solution columns (names configurable), an
  optional thought column and an optional `system` column.

Rows that fail validation are dropped and counted, or raise in strict mode
(`rlt_core.data.validation`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from rlt_core.data.sources import read_table, require_columns, source_name
from rlt_core.data.validation import (
    CORPUS_COLUMNS,
    LOAD_ISSUE_COLUMN,
    Mode,
    ValidationReport,
    none_if_missing,
    validate_rows,
)
from rlt_core.formats import parse_student_text

logger = logging.getLogger(__name__)

Schema = Literal["bespoke", "question_solution"]
SCHEMAS: tuple[Schema, ...] = ("bespoke", "question_solution")
BESPOKE_COLUMNS = ("system", "conversations")


@dataclass(frozen=True)
class CorpusLoad:
    """The kept rows (corpus contract) and the validation report of one load."""

    rows: pd.DataFrame
    report: ValidationReport


@dataclass(frozen=True)
class BespokeTurns:
    """One Bespoke conversation split into the corpus fields; `issue` is a drop reason or None."""

    question: str | None
    thought: str | None
    solution: str | None
    issue: str | None


def load_corpus(
    source: str,
    *,
    schema: Schema,
    mode: Mode = "strict",
    question_column: str = "question",
    solution_column: str = "solution",
    thought_column: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> CorpusLoad:
    """Load a corpus from a local file/directory, an s3:// URI or a Hub id into the contract.

    `schema` picks the raw layout (module docstring); the column arguments apply to
    `question_solution` only (`thought_column=None`: no baseline traces). `mode="strict"` raises
    `DataValidationError` naming the failing row ids; `"lenient"` drops and counts them.
    """
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, got {schema!r}.")
    table = read_table(source, storage_options=storage_options)
    name = source_name(source)
    if schema == "bespoke":
        rows = bespoke_rows(table, name)
    else:
        rows = question_solution_rows(
            table,
            name,
            question_column=question_column,
            solution_column=solution_column,
            thought_column=thought_column,
        )
    kept, report = validate_rows(rows, mode=mode)
    logger.info("loaded %s (%s): kept %d of %d rows", source, schema, report.kept, report.total)
    if report.dropped:
        logger.warning("dropped rows from %s: %s", source, dict(report.dropped))
    return CorpusLoad(rows=kept, report=report)


def parse_bespoke_conversation(conversations: Any) -> BespokeTurns:
    """Split one Bespoke-Stratos `conversations` value into question, thought and solution.

    The first `user` turn is the question, the first `assistant` turn holds the Figure 6 tags.
    `issue` is `malformed_conversation` when a turn is missing, or `missing_tags:<tags>` naming
    the tags the assistant text lacks (comma-separated).
    """
    turns = list(conversations) if isinstance(conversations, list | tuple | np.ndarray) else []
    values = {}
    for turn in turns:
        if isinstance(turn, Mapping) and isinstance(turn.get("value"), str):
            values.setdefault(turn.get("from"), turn["value"])
    if "user" not in values or "assistant" not in values:
        return BespokeTurns(None, None, None, issue="malformed_conversation")
    parsed = parse_student_text(values["assistant"])
    if not parsed.complete:
        issue = "missing_tags:" + ",".join(parsed.missing)
        return BespokeTurns(values["user"], None, None, issue=issue)
    return BespokeTurns(values["user"], parsed.thought, parsed.solution, issue=None)


def bespoke_rows(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Raw Bespoke-Stratos rows -> corpus rows plus the `load_issue` column (not yet validated)."""
    require_columns(
        table,
        ["conversations"],
        source=name,
        hint="schema='bespoke' expects Bespoke-Stratos-17k rows (`system`, `conversations`); "
        "for a table with question/solution columns use schema='question_solution'.",
    )
    turns = [parse_bespoke_conversation(value) for value in table["conversations"]]
    return pd.DataFrame(
        {
            "id": row_ids(table, name),
            "question": [turn.question for turn in turns],
            "solution": [turn.solution for turn in turns],
            "thought": [turn.thought for turn in turns],
            "system": _systems(table),
            "source": name,
            LOAD_ISSUE_COLUMN: [turn.issue for turn in turns],
        },
        columns=[*CORPUS_COLUMNS, LOAD_ISSUE_COLUMN],
    )


def question_solution_rows(
    table: pd.DataFrame,
    name: str,
    *,
    question_column: str,
    solution_column: str,
    thought_column: str | None,
) -> pd.DataFrame:
    """A table with question/solution (and optional thought) columns -> corpus rows."""
    wanted = [question_column, solution_column] + ([thought_column] if thought_column else [])
    require_columns(
        table,
        wanted,
        source=name,
        hint="Name the table's columns with question_column=, solution_column= and "
        "thought_column= (None when the corpus has no reasoning traces).",
    )
    thoughts = (
        [none_if_missing(value) for value in table[thought_column]]
        if thought_column
        else [None] * len(table)
    )
    return pd.DataFrame(
        {
            "id": row_ids(table, name),
            "question": table[question_column].to_list(),
            "solution": table[solution_column].to_list(),
            "thought": thoughts,
            "system": _systems(table),
            "source": name,
        },
        columns=list(CORPUS_COLUMNS),
    )


def _systems(table: pd.DataFrame) -> list[Any]:
    """The table's `system` column (missing values None), or None for every row."""
    if "system" not in table.columns:
        return [None] * len(table)
    return [none_if_missing(value) for value in table["system"]]


def row_ids(table: pd.DataFrame, name: str) -> list[str]:
    """The table's own `id` column as strings when present, else `<name>-<index:06d>`."""
    if "id" not in table.columns:
        return [f"{name}-{index:06d}" for index in range(len(table))]
    missing = [index for index, value in enumerate(table["id"]) if none_if_missing(value) is None]
    if missing:
        raise ValueError(
            f"{name}: column 'id' is empty at row index(es) {missing[:20]}; ids must be present "
            "in every row. Fill them, or drop the 'id' column to get index-based ids."
        )
    return [str(value) for value in table["id"]]


def seeded_subset(
    df: pd.DataFrame, n: int, seed: int, *, allow_fewer: bool = False
) -> pd.DataFrame:
    """A reproducible n-row subset (e.g. the 1K subset of Table 1 / Table 5's 1K recipe).

    Each row is ranked by sha256(f"{seed}:{id}") and the n lowest are kept, returned in their
    original order with a fresh index. The choice depends only on the ids and the seed: not on
    row order, library versions or platform; and the subset for n is contained in the one for
    n + 1. n > len(df) raises unless `allow_fewer=True`, which returns all rows.
    """
    if n < 1:
        raise ValueError(f"subset size n must be at least 1, got {n}.")
    require_columns(df, ["id"], source="seeded_subset", hint="Load rows with load_corpus first.")
    if not df["id"].is_unique:
        raise ValueError("seeded_subset needs unique ids; validate the rows (validate_rows) first.")
    if n > len(df):
        if not allow_fewer:
            raise ValueError(
                f"asked for {n} rows but the corpus has {len(df)}. Lower n, or pass "
                "allow_fewer=True to take every row."
            )
        return df.reset_index(drop=True)
    keys = [hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest() for row_id in df["id"]]
    chosen = sorted(range(len(df)), key=keys.__getitem__)[:n]
    return df.iloc[sorted(chosen)].reset_index(drop=True)
