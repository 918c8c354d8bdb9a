"""Row validation for corpora in the project's row shape (see `rlt_core.data.corpus`).

Every row gets at most one drop reason, the first that applies in this order:

1. the loader's own `load_issue` (e.g. `missing_tags:<|end_of_solution|>` for a Bespoke row
   whose assistant text lacks a tag, `malformed_conversation`);
2. `non_string`: id, question, solution or source is not a string, or thought or system is
   neither a string nor missing (None, or NaN: pandas >= 3 stores a missing string as NaN);
3. `empty_question`, then `empty_solution`: empty or whitespace only;
4. `duplicate_id`: an id already seen in an earlier valid row (the first is kept);
5. `duplicate`: the same normalised question and solution as an earlier valid row (the first is
   kept). Normalised = Unicode NFKC, whitespace runs collapsed to one space, ends stripped; case
   is kept, because in math `X` and `x` differ.

So `sum(report.dropped.values()) == report.total - report.kept`: nothing is dropped silently.
Strict mode raises `DataValidationError` when any row fails; lenient mode drops and counts.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from rlt_core.data.sources import require_columns

Mode = Literal["strict", "lenient"]
MODES: tuple[Mode, ...] = ("strict", "lenient")
CORPUS_COLUMNS = ("id", "question", "solution", "thought", "system", "source")
# Optional on input: a table without it gets None everywhere (the student's default prompt).
OPTIONAL_COLUMNS = ("system",)
LOAD_ISSUE_COLUMN = "load_issue"
MAX_IDS_SHOWN = 20

REASON_HELP = {
    "malformed_conversation": "`conversations` lacks a user or an assistant turn with a text value",
    "missing_tags": "the assistant text lacks these tags, so thought and solution cannot be split",
    "non_string": "id/question/solution/source must be strings; thought and system strings or null",
    "empty_question": "the question is empty or whitespace only",
    "empty_solution": "the solution is empty or whitespace only",
    "duplicate_id": "the id repeats an earlier row's id",
    "duplicate": "same question and solution (normalised) as an earlier row",
}


@dataclass(frozen=True)
class ValidationReport:
    """What validation kept and dropped: counts and row ids per reason."""

    total: int
    kept: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    dropped_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for a stage's manifest / outputs."""
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "dropped_ids": {reason: list(ids) for reason, ids in self.dropped_ids.items()},
        }


class DataValidationError(ValueError):
    """Rows failed validation in strict mode; `report` holds every reason and id."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(format_report(report))


def format_report(report: ValidationReport) -> str:
    """Human-readable failures: per reason its count, meaning and the first 20 row ids."""
    lines = [f"{report.total - report.kept} of {report.total} rows failed validation:"]
    for reason, count in report.dropped.items():
        ids = report.dropped_ids[reason]
        shown = ", ".join(ids[:MAX_IDS_SHOWN]) + (" ..." if len(ids) > MAX_IDS_SHOWN else "")
        meaning = REASON_HELP.get(reason.split(":", 1)[0], reason)
        lines.append(f"  - {reason} ({meaning}): {count} row(s): {shown}")
    lines.append(
        "Fix these rows in the source, or load with mode='lenient' to drop them (every drop is "
        "counted in the ValidationReport)."
    )
    return "\n".join(lines)


def validate_rows(df: pd.DataFrame, *, mode: Mode) -> tuple[pd.DataFrame, ValidationReport]:
    """Check corpus rows and keep the valid ones (rules and their order: module docstring).

    `df` has the corpus columns (`system` may be missing: None, the default prompt) and
    optionally `load_issue` (str or None per row). Returns the kept rows with exactly the
    corpus columns and a fresh index, and the report. Strict mode raises `DataValidationError`
    listing reasons and row ids when any row fails.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    required = [column for column in CORPUS_COLUMNS if column not in OPTIONAL_COLUMNS]
    require_columns(df, required, source="validate_rows", hint="Build rows with a corpus loader.")
    df = df.assign(**{column: None for column in OPTIONAL_COLUMNS if column not in df.columns})
    reasons = _first_reasons(df)
    ids = [str(value) for value in df["id"]]
    dropped: dict[str, int] = {}
    dropped_ids: dict[str, list[str]] = {}
    for row_id, reason in zip(ids, reasons, strict=True):
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            dropped_ids.setdefault(reason, []).append(row_id)
    keep = [reason is None for reason in reasons]
    report = ValidationReport(
        total=len(df),
        kept=sum(keep),
        dropped=dropped,
        dropped_ids={reason: tuple(row_ids) for reason, row_ids in dropped_ids.items()},
    )
    if mode == "strict" and report.kept < report.total:
        raise DataValidationError(report)
    kept = df.loc[keep, list(CORPUS_COLUMNS)].reset_index(drop=True)
    # pandas >= 3 stores a missing string as NaN; the contract says None (object column).
    for column in ("thought", "system"):
        kept[column] = pd.Series([none_if_missing(t) for t in kept[column]], dtype=object)
    return kept, report


def row_systems(df: pd.DataFrame) -> list[str | None]:
    """Each row's own student system prompt: its `system` text, None where it has none or the
    table has no `system` column (None means the default, `rlt_core.formats.student_system`)."""
    if "system" not in df.columns:
        return [None] * len(df)
    values = [none_if_missing(value) for value in df["system"]]
    return [value if isinstance(value, str) and value.strip() else None for value in values]


def none_if_missing(value: Any) -> Any:
    """None for a missing value (None or a float NaN, pandas' marker), else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def normalise_text(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, ends stripped (the duplicate key)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _first_reasons(df: pd.DataFrame) -> list[str | None]:
    rows = list(df[list(CORPUS_COLUMNS)].itertuples(index=False))
    issues = df[LOAD_ISSUE_COLUMN] if LOAD_ISSUE_COLUMN in df.columns else [None] * len(df)
    reasons = [
        issue if isinstance(issue, str) and issue else _row_reason(row)
        for issue, row in zip(issues, rows, strict=True)
    ]
    seen_ids: set[str] = set()
    seen_content: set[tuple[str, str]] = set()
    for position, row in enumerate(rows):
        if reasons[position] is not None:
            continue
        content = (normalise_text(row.question), normalise_text(row.solution))
        if row.id in seen_ids:
            reasons[position] = "duplicate_id"
        elif content in seen_content:
            reasons[position] = "duplicate"
        else:
            seen_ids.add(row.id)
            seen_content.add(content)
    return reasons


def _row_reason(row: Any) -> str | None:
    strings = (row.id, row.question, row.solution, row.source)
    if not all(isinstance(value, str) for value in strings):
        return "non_string"
    for optional in (row.thought, row.system):
        value = none_if_missing(optional)
        if value is not None and not isinstance(value, str):
            return "non_string"
    if not row.question.strip():
        return "empty_question"
    if not row.solution.strip():
        return "empty_solution"
    return None
