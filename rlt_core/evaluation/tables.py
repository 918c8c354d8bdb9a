"""The evaluation score tables: per-task pass@1 of evaluate artifacts as the paper's tables lay
them out (task columns in the paper's order, an unweighted Overall, percentages).

Beside evaluation, below the stages: the evaluate stage writes its own one-row table with
them, and `rlt_core.reports` assembles the paper's Tables 1, 2 and 9 from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlt_core import artifacts

# Column titles of the benchmarks, in the paper's order (section 4.1, Appendix C).
TASK_TITLES = {
    "aime24": "AIME24",
    "math500": "MATH500",
    "gpqa_diamond": "GPQA Diamond",
    "livecodebench": "LiveCodeBench",
    "olympiadbench": "OlympiadBench",
    "countdown": "Countdown",
}


@dataclass(frozen=True)
class ReportRow:
    """One evaluated model of a table: its label columns and its per-task scores (fractions)."""

    labels: Mapping[str, str]
    scores: Mapping[str, float]
    extra: Mapping[str, float | int | str] = field(default_factory=dict)


def read_scores(evaluation: str | Path) -> dict[str, float]:
    """The per-task pass@1 (fractions) of a finished evaluate artifact (its manifest metrics).

    Raises FileNotFoundError for an unfinished artifact (no manifest).
    """
    metrics = artifacts.read_manifest(evaluation)["metrics"]
    scores = metrics.get("scores", metrics)
    return {task: float(value) for task, value in scores.items() if task in TASK_TITLES}


def overall(scores: Mapping[str, float], tasks: Sequence[str]) -> float:
    """The unweighted mean over `tasks` (the paper's "Overall" column); NaN if one is missing."""
    values = [scores.get(task, math.nan) for task in tasks]
    return float(np.mean(values)) if values else math.nan


def percent(value: float) -> str:
    """A fraction as a percentage with one decimal; "—" for a missing one."""
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def score_table(
    rows: Sequence[ReportRow],
    *,
    label_columns: Sequence[str],
    tasks: Sequence[str],
    extra_columns: Sequence[str] = (),
) -> str:
    """A markdown table: the label columns, one column per task, Overall, then the extras.

    Scores print as percentages with one decimal; a missing score prints as "—".
    """
    header = [*label_columns, *(TASK_TITLES.get(t, t) for t in tasks), "Overall", *extra_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.labels.get(column, "") for column in label_columns]
        cells += [percent(row.scores.get(task, math.nan)) for task in tasks]
        cells.append(percent(overall(row.scores, tasks)))
        cells += [str(row.extra.get(column, "")) for column in extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
