"""LIMR (cold-start RL data, section 4.3, Table 6) and the evaluation sets (section 4.1, Table 7).

Every loader returns a DataFrame with `id` (str, unique), `question` (str), `answer` (str: the
gold as a plain value, "5" not "\\boxed{5}", which is what math-verify matches) and the
benchmark's extra columns. The default sources are the Hub datasets the paper uses; pass a local
file, a shard directory or an s3:// URI in the same schema instead (tests do).

| set          | default source                        | raw columns used                        |
|--------------|---------------------------------------|-----------------------------------------|
| LIMR         | GAIR/LIMR (train)                     | prompt, answer                          |
| aime24       | HuggingFaceH4/aime_2024 (train)       | id, problem, answer, solution, url,     |
|              |                                       | year                                    |
| math500      | HuggingFaceH4/MATH-500 (test)         | unique_id, problem, answer, solution,   |
|              |                                       | subject, level                          |
| gpqa_diamond | Idavidrein/gpqa, config gpqa_diamond  | Record ID, Question, Correct Answer,    |
|              | (train; gated on the Hub)             | Incorrect Answer 1..3, Subdomain, ...   |

GPQA is multiple choice: the four options are shuffled per row with a seeded, platform-independent
order (sha256 of seed, row id and option index), lettered A-D after the question, and `answer` is
the gold letter.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd

from rlt_core.data.corpus import row_ids
from rlt_core.data.sources import read_table, require_columns, source_name

EvalSet = Literal["aime24", "math500", "gpqa_diamond"]
EVAL_SETS: tuple[EvalSet, ...] = ("aime24", "math500", "gpqa_diamond")
LIMR_SOURCE = "GAIR/LIMR"
AIME24_SOURCE = "HuggingFaceH4/aime_2024"
MATH500_SOURCE = "HuggingFaceH4/MATH-500:test"
GPQA_DIAMOND_SOURCE = "Idavidrein/gpqa"
GPQA_DIAMOND_CONFIG = "gpqa_diamond"
GPQA_LETTERS = "ABCD"
GPQA_OPTION_COLUMNS = (
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)
GPQA_EXTRA_COLUMNS = {
    "Subdomain": "subdomain",
    "High-level domain": "domain",
    "Explanation": "explanation",
}

Options = Mapping[str, Any] | None


def plain_answer(value: Any) -> str:
    """The gold answer as a plain string: stripped, without wrapping `$...$` or `\\boxed{...}`.

    `"\\boxed{5}"` -> `"5"`, `"$\\frac{1}{2}$"` -> `"\\frac{1}{2}"`, `204` -> `"204"`, a missing
    value -> `""`; a box that does not wrap the whole answer (`"\\boxed{1} or \\boxed{2}"`) is
    kept as it is.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    if text.startswith("\\boxed{") and text.endswith("}") and _closes_at_end(text, len("\\boxed")):
        text = text[len("\\boxed{") : -1].strip()
    return text


def load_limr(source: str = LIMR_SOURCE, *, storage_options: Options = None) -> pd.DataFrame:
    """LIMR [29], the prompts of the post-cold-start RL phase (section 4.3, Table 6).

    Raw columns `prompt` and `answer`; ids are `<source-name>-<index:06d>` (LIMR has none).
    """
    table = read_table(source, storage_options=storage_options)
    _require(table, ["prompt", "answer"], source)
    rows = pd.DataFrame(
        {
            "id": row_ids(table, source_name(source)),
            "question": table["prompt"].to_list(),
            "answer": [plain_answer(value) for value in table["answer"]],
        }
    )
    return _checked(rows, "LIMR", source)


def load_eval_set(
    name: EvalSet, source: str | None = None, *, seed: int = 0, storage_options: Options = None
) -> pd.DataFrame:
    """One evaluation set of section 4.1 by name; `source=None` uses the paper's Hub dataset.

    `seed` only affects `gpqa_diamond` (the option order).
    """
    match name:
        case "aime24":
            return load_aime24(source or AIME24_SOURCE, storage_options=storage_options)
        case "math500":
            return load_math500(source or MATH500_SOURCE, storage_options=storage_options)
        case "gpqa_diamond":
            return load_gpqa_diamond(
                source or GPQA_DIAMOND_SOURCE, seed=seed, storage_options=storage_options
            )
    raise ValueError(f"unknown evaluation set {name!r}; choose one of {EVAL_SETS}.")


def load_aime24(source: str = AIME24_SOURCE, *, storage_options: Options = None) -> pd.DataFrame:
    """AIME 2024 [23] in the HuggingFaceH4/aime_2024 schema; extras: solution, url, year."""
    table = read_table(source, storage_options=storage_options)
    _require(table, ["id", "problem", "answer", "solution", "url", "year"], source)
    rows = pd.DataFrame(
        {
            "id": row_ids(table, source_name(source)),
            "question": table["problem"].to_list(),
            "answer": [plain_answer(value) for value in table["answer"]],
            "solution": table["solution"].to_list(),
            "url": table["url"].to_list(),
            "year": [str(value) for value in table["year"]],
        }
    )
    return _checked(rows, "aime24", source)


def load_math500(source: str = MATH500_SOURCE, *, storage_options: Options = None) -> pd.DataFrame:
    """MATH 500 [24, 25] in the HuggingFaceH4/MATH-500 schema; extras: solution, subject, level."""
    table = read_table(source, storage_options=storage_options)
    _require(table, ["unique_id", "problem", "answer", "solution", "subject", "level"], source)
    rows = pd.DataFrame(
        {
            "id": [str(value) for value in table["unique_id"]],
            "question": table["problem"].to_list(),
            "answer": [plain_answer(value) for value in table["answer"]],
            "solution": table["solution"].to_list(),
            "subject": table["subject"].to_list(),
            "level": [int(value) for value in table["level"]],
        }
    )
    return _checked(rows, "math500", source)


def load_gpqa_diamond(
    source: str = GPQA_DIAMOND_SOURCE, *, seed: int = 0, storage_options: Options = None
) -> pd.DataFrame:
    """GPQA Diamond [26] (Idavidrein/gpqa, config gpqa_diamond) as lettered multiple choice.

    Columns: id (`Record ID`, else index-based), question (text + options A-D), answer (gold
    letter), choices (the four options in shown order), correct_answer (gold text), and
    subdomain / domain / explanation when the table has them.
    """
    table = read_table(source, storage_options=storage_options, hub_config=GPQA_DIAMOND_CONFIG)
    _require(table, ["Question", *GPQA_OPTION_COLUMNS], source)
    ids = (
        [str(value) for value in table["Record ID"]]
        if "Record ID" in table.columns
        else row_ids(table, source_name(source))
    )
    records = [
        gpqa_choice_row(row_id, row["Question"], [row[c] for c in GPQA_OPTION_COLUMNS], seed)
        for row_id, (_, row) in zip(ids, table.iterrows(), strict=True)
    ]
    rows = pd.DataFrame.from_records(records)
    for raw, column in GPQA_EXTRA_COLUMNS.items():
        if raw in table.columns:
            rows[column] = table[raw].to_list()
    return _checked(rows, "gpqa_diamond", source)


def gpqa_choice_row(row_id: str, question: str, options: list[Any], seed: int) -> dict[str, Any]:
    """One GPQA row as multiple choice; `options[0]` is the correct answer (raw GPQA order).

    The options are sorted by sha256(f"{seed}:{row_id}:{k}") for raw position k, so the order
    is reproducible anywhere and independent of the other rows.
    """
    texts = [str(option).strip() for option in options]
    order = sorted(
        range(len(texts)),
        key=lambda k: hashlib.sha256(f"{seed}:{row_id}:{k}".encode()).hexdigest(),
    )
    shown = [texts[k] for k in order]
    lines = [f"{GPQA_LETTERS[i]}) {text}" for i, text in enumerate(shown)]
    return {
        "id": row_id,
        "question": str(question).strip() + "\n\n" + "\n".join(lines),
        "answer": GPQA_LETTERS[order.index(0)],
        "choices": shown,
        "correct_answer": texts[0],
    }


def _closes_at_end(text: str, open_at: int) -> bool:
    """True when the brace opened at `open_at` is closed by the last character of `text`."""
    depth = 0
    for position in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return position == len(text) - 1
    return False


def _require(table: pd.DataFrame, columns: list[str], source: str) -> None:
    require_columns(
        table,
        columns,
        source=source,
        hint="Give a copy of the benchmark in its original Hub schema (the module docstring of "
        "rlt_core.data.benchmarks lists the columns), or rename the columns to those names.",
    )


def _checked(rows: pd.DataFrame, name: str, source: str) -> pd.DataFrame:
    """Raise ValueError naming the row ids whose question or answer is blank, or repeated ids."""
    blank = [
        row_id
        for row_id, question, answer in zip(
            rows["id"], rows["question"], rows["answer"], strict=True
        )
        if not isinstance(question, str) or not question.strip() or not answer
    ]
    if blank:
        raise ValueError(
            f"{name} from {source!r}: blank question or answer in row id(s) {blank[:20]} "
            f"({len(blank)} in all). An evaluation set must be complete: fix the source."
        )
    repeated = rows["id"][rows["id"].duplicated()].to_list()
    if repeated:
        raise ValueError(
            f"{name} from {source!r}: repeated id(s) {repeated[:20]}; ids must be unique."
        )
    return rows
