"""Each experiment flow trains the students the paper reports: Table 9 and section 4.5 are on
the 17K data set (Table 5's `full` recipe) on the paper profiles, and `rlt plan` says which
recipe and how many rows every student run gets before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.ablation import ablation_dag
from flows.cli import app
from flows.plan import start_plan
from flows.reward_rank import rank_dag, rank_overrides
from rlt_core.config import ConfigError, load_config


def _students(planner) -> set[tuple[str | None, object]]:
    return {(row.recipe, row.train_rows) for row in planner.rows if row.stage == "student_sft"}


@pytest.mark.parametrize("profile", ["paper-7b", "paper-32b"])
def test_table_9_and_section_4_5_train_17k_students_on_the_paper_profiles(
    profile: str, tmp_path: Path
) -> None:
    full = load_config(profile).student_sft["full"].num_train_samples
    assert full == 16710  # Table 5's "Full fine-tuning" column
    ablation = start_plan(profile, [], str(tmp_path))
    ablation_dag(ablation, 0.0, None, None, title="plan")
    assert _students(ablation) == {("full", full)}
    ranks = start_plan(profile, rank_overrides(16), str(tmp_path))
    rank_dag(ranks, 16, None, title="plan")
    assert _students(ranks) == {("full", full)}
    assert sum(row.stage == "student_sft" for row in ranks.rows) == 16


def test_a_profile_or_the_flow_chooses_another_recipe_and_a_wrong_one_is_refused(
    tmp_path: Path,
) -> None:
    tiny = start_plan("tiny", [], str(tmp_path))  # tiny's one recipe, 8 rows
    ablation_dag(tiny, 0.0, None, None, title="plan")
    assert _students(tiny) == {("countdown", 8)}
    chosen = start_plan("paper-7b", ["experiments.ablation_student=1k"], str(tmp_path))
    ablation_dag(chosen, 0.0, None, None, title="plan")
    assert _students(chosen) == {("1k", 1000)}
    given = start_plan("paper-7b", [], str(tmp_path))
    ablation_dag(given, 0.0, None, "1k", title="plan")  # the flow's own `recipe` parameter
    assert _students(given) == {("1k", 1000)}
    with pytest.raises(ConfigError, match="experiments.ablation_student: 'ful' is not a stud.*"
                       "Did you mean 'full'"):  # fmt: skip
        load_config("paper-7b", ["experiments.ablation_student=ful"])
    with pytest.raises(ValueError, match="recipe='17k' is not a student_sft recipe"):
        ablation_dag(start_plan("paper-7b", [], str(tmp_path)), 0.0, None, "17k", title="p")


def test_rlt_plan_prints_each_students_recipe_and_rows(tmp_path: Path) -> None:
    command = ["plan", "--flow", "ablation", "--profile", "paper-7b", "--store", str(tmp_path)]
    shown = CliRunner().invoke(app, command)
    assert shown.exit_code == 0, shown.output
    assert "16,710" in shown.output and "training rows" in shown.output  # in the table
    as_json = CliRunner().invoke(app, [*command, "--json"])
    rows = json.loads(as_json.output)["stages"]
    students = {(r["recipe"], r["train_rows"]) for r in rows if r["stage"] == "student_sft"}
    assert students == {("full", 16710)}  # no 1K student in Table 9
