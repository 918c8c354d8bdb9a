"""LIMR and the evaluation sets, from local copies in their real Hub schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlt_core.data.benchmarks import (
    gpqa_choice_row,
    load_eval_set,
    load_limr,
    plain_answer,
)

DATA = Path(__file__).parents[1] / "fixtures" / "data"


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("\\boxed{5}", "5"),
        (" $\\frac{1}{2}$ ", "\\frac{1}{2}"),
        ("$\\boxed{\\frac{3}{4}}$", "\\frac{3}{4}"),
        (204, "204"),
        ("033", "033"),
        ("\\boxed{1} or \\boxed{2}", "\\boxed{1} or \\boxed{2}"),  # box does not wrap it all
        ("\\boxed{a}{b}", "\\boxed{a}{b}"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_plain_answer(raw, plain):
    assert plain_answer(raw) == plain


def test_limr():
    rows = load_limr(str(DATA / "limr_sample.jsonl"))
    assert list(rows.columns) == ["id", "question", "answer"]
    assert rows["id"].to_list() == [f"limr_sample-00000{k}" for k in range(5)]
    assert rows["answer"].to_list() == ["55", "23", "17", "\\frac{3}{4}", "5"]
    assert rows["question"][0] == "Find the sum of the first 10 positive integers."


def test_aime24():
    rows = load_eval_set("aime24", str(DATA / "aime24_sample.jsonl"))
    assert list(rows.columns) == ["id", "question", "answer", "solution", "url", "year"]
    assert rows["id"].to_list() == ["900", "901", "902", "903", "904"]  # int ids as strings
    assert rows["answer"].to_list() == ["24", "24", "14", "401", "010"]  # "010" kept as text
    assert set(rows["year"]) == {"2024"}


def test_math500():
    rows = load_eval_set("math500", str(DATA / "math500_sample.jsonl"))
    assert rows["id"][0] == "test/prealgebra/900.json"
    assert rows["answer"].to_list() == ["7", "3", "\\frac{5}{6}", "6", "6"]
    assert rows["level"].to_list() == [1, 2, 2, 3, 1]
    assert rows["subject"][3] == "Counting & Probability"


def test_gpqa_diamond_multiple_choice():
    rows = load_eval_set("gpqa_diamond", str(DATA / "gpqa_diamond_sample.csv"), seed=0)
    extras = ["subdomain", "domain", "explanation"]
    assert list(rows.columns) == ["id", "question", "answer", "choices", "correct_answer", *extras]
    assert rows["id"].to_list() == [f"rec000{k}" for k in range(5)]
    for _, row in rows.iterrows():
        gold = "ABCD".index(row["answer"])
        assert row["choices"][gold] == row["correct_answer"]  # the gold letter points at it
        assert f"\n{row['answer']}) {row['correct_answer']}\n" in row["question"] + "\n"
    assert rows["correct_answer"][0] == "Neutron"  # stray whitespace of the raw cell stripped
    assert rows["question"][0].startswith("Which particle carries no electric charge?\n\nA) ")
    assert rows["domain"][1] == "Chemistry"


def test_gpqa_option_order_is_seeded_per_row():
    options = ["right", "w1", "w2", "w3"]
    first = gpqa_choice_row("rec1", "Q", options, seed=0)
    assert first == gpqa_choice_row("rec1", "Q", options, seed=0)
    assert sorted(first["choices"]) == sorted(options)
    # Over 40 seeds the gold letter must not be stuck on one position (4 letters: expected ~10
    # each; all 40 on one letter has probability 4 * 0.25**40).
    letters = {gpqa_choice_row("rec1", "Q", options, seed=s)["answer"] for s in range(40)}
    assert len(letters) > 1
    assert first["question"] == "Q\n\n" + "\n".join(
        f"{letter}) {text}" for letter, text in zip("ABCD", first["choices"], strict=True)
    )


def test_unknown_eval_set_and_wrong_schema_are_errors():
    with pytest.raises(ValueError, match="unknown evaluation set 'gsm8k'"):
        load_eval_set("gsm8k", str(DATA / "aime24_sample.jsonl"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['unique_id'"):
        load_eval_set("math500", str(DATA / "aime24_sample.jsonl"))


def test_blank_answer_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "limr.json"  # the real GAIR/LIMR file is a JSON array
    path.write_text('[{"prompt": "Q1", "answer": "1"}, {"prompt": "Q2", "answer": null}]')
    with pytest.raises(ValueError, match=r"row id\(s\) \['limr-000001'\]"):
        load_limr(str(path))
