"""The experiment flows on a real Prefect server: Table 9 ablation (also from its command
line), the section 4.5 reward rank and the section 4.4 countdown transfer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows import ablation
from flows.cli import app
from flows.countdown_transfer import countdown_transfer
from flows.full_pipeline import full_pipeline
from flows.reward_rank import reward_rank
from rlt_core import artifacts
from tests.e2e.conftest import E2E, FirstRun, latest_artifact
from tests.e2e.test_full_pipeline import overlapping
from tests.fixtures_openai import ChatEndpoint
from tests.fixtures_ray import RayNode

pytestmark = pytest.mark.e2e


def _runs(store: Path, stage: str) -> list[str]:
    """The keys of a stage's artifacts in a local store."""
    return [path.name for path in (store / stage).glob("*")]


def _report(result: dict) -> str:
    return (Path(result["report"]["uri"]) / "report.md").read_text()


def test_ablation_command_line_lambda_0_on_ray(
    e2e: E2E, ray_cluster: RayNode, first_run: FirstRun, tmp_path: Path
) -> None:
    first_run.seed(tmp_path)  # the full variant's stages as the pipeline left them
    # `python -m flows.ablation ARGS` is `typer.run(main)` (its --help runs as a command in
    # test_full_pipeline); here the same command in this process, a driver already on the
    # cluster, whose Ray workers have their imports done.
    command = ["--lambda", "0", "--store", str(tmp_path), "--runner", "ray",
               "--ray-address", ray_cluster.address]  # fmt: skip
    for override in e2e.overrides:
        command += ["--set", override]
    cli = typer.Typer()
    cli.command()(ablation.main)
    done = CliRunner().invoke(cli, command)
    assert done.exit_code == 0, f"{done.output[-3000:]}\n{done.exception!r}"
    # The two variants share one teacher_sft run: one task run, not two racing for its key.
    times = json.loads(latest_artifact("rlt-ablation-stage-times"))
    assert sum(row["stage"].startswith("teacher_sft") for row in times) == 1, times
    plan = CliRunner().invoke(app, ["plan", "--flow", "ablation", "--store", str(tmp_path),
                                    *(f"--set={o}" for o in e2e.overrides), "--json"])  # fmt: skip
    assert plan.exit_code == 0 and json.loads(plan.stdout)["run"] == 0, plan.output
    (report,) = (tmp_path / "report").glob("*/report.md")
    text = report.read_text()
    assert "**Table 9.**" in text and "| full (lambda = 3, alpha = 0.01) |" in text
    assert "| lambda = 0 | countdown (4) |" in text and "Figure 8" in text  # recipe, rows
    teachers = [
        artifacts.read_manifest(p)["config"]["reward"]["lambda"]
        for p in (tmp_path / "teacher_rl").iterdir()
    ]
    assert sorted(teachers) == [0.0, 3.0]
    assert len(list((tmp_path / "teacher_sft").iterdir())) == 1  # shared by both variants
    # Both teachers' reward curves in one figure, and each against teacher_sft on held-out
    # pairs, with the solution-copy share (Appendix D).
    assert "![Reward curves](reward_curves.png)" in text
    for label in ("full (lambda = 3, alpha = 0.01)", "lambda = 0"):
        assert f"| {label} | solution copy (4-gram share) |" in text
    assert len(list((tmp_path / "teacher_eval").iterdir())) == 2


def test_reward_rank_on_ray_trains_and_evaluates_the_rank_students_side_by_side(
    e2e: E2E, ray_cluster: RayNode, first_run: FirstRun, tmp_path: Path
) -> None:
    first_run.seed(tmp_path)  # the RLT teacher as the pipeline left it
    result = reward_rank(
        profile="tiny", overrides=e2e.overrides, store=str(tmp_path), num_ranks=3,
        runner="ray", ray_address=ray_cluster.address,
    )  # fmt: skip
    text = _report(result)
    assert "**Section 4.5.**" in text and "| Rank | Data | Countdown | Overall |" in text
    assert all(f"\n| {rank} | countdown (4) |" in text for rank in (1, 2, 3))
    # Tiny random students may all score the same, which leaves the correlation undefined.
    assert "Pearson r = " in text or "correlation undefined: every student scored" in text
    stages = [row["stage"] for row in result["stage_times"]]
    assert stages.count("rank_traces") == 1 and sum("rank " in s for s in stages) == 6
    # The rank students (each waits on rank_traces only) ran side by side on the 2 cores.
    students = [pair for pair in overlapping(result) if all("student_sft" in s for s in pair)]
    assert students, result["stage_times"]
    (ranked,) = (tmp_path / "rank_traces").iterdir()
    assert artifacts.read_manifest(ranked)["metrics"]["pairs"] == 8


def test_countdown_transfer_has_every_bar_of_figure_4_and_the_solved_overlap(
    e2e: E2E, first_run: FirstRun, tmp_path: Path
) -> None:
    first_run.seed(tmp_path)  # the full pipeline's stages as it left them
    seeded = {stage: set(_runs(tmp_path, stage)) for stage in ("student_sft", "student_rl")}
    result = countdown_transfer(profile="tiny", overrides=e2e.overrides, store=str(tmp_path))
    text = _report(result)
    assert "**Figure 4 (left).**" in text and "![Figure 4 (left)](figure_4.png)" in text
    rows = [  # (Model, Countdown training): the five bars; Data is the recipe and its rows
        "| RLT zero-shot | SFT on the RLT's countdown traces (zero-shot teacher) | countdown (",
        "| RLT student | none (RLT traces of the main corpus) | countdown (",
        "| corpus student | none (the corpus' own traces) | countdown (",
        "| CD RL | RL from ",
        "| CD RL from corpus student | RL from the corpus student | countdown RL (",
    ]
    assert all(row in text for row in rows), text
    assert "A = CD RL, B = corpus student" in text
    assert re.search(r"\n\| Countdown \| [1-9]\d* \| \d+ \| \d+ \| \d+ \| ", text), text
    assert "RLT (countdown, zero-shot)" in text
    # (b), (c), (d) and (e) are the full pipeline's own stage runs (tiny's countdown RL is
    # cold-started from the corpus student too): only the zero-shot branch is new.
    new = {stage: set(_runs(tmp_path, stage)) - seeded[stage] for stage in seeded}
    assert not new["student_rl"] and len(new["student_sft"]) <= 1, new


def test_table_2_gpt_row_runs_against_a_local_openai_compatible_server(
    e2e: E2E, first_run: FirstRun, chat_server: ChatEndpoint, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    first_run.seed(tmp_path)  # the pipeline's raw traces and everything else, as it left them
    seeded = {stage: set(_runs(tmp_path, stage)) for stage in ("student_sft", "student_rl")}
    monkeypatch.setenv("RLT_TEST_CHAT_KEY", chat_server.api_key)
    endpoint = [
        f"refine_traces.model={chat_server.model}",
        f"refine_traces.base_url={chat_server.url}",
        "refine_traces.api_key_env=RLT_TEST_CHAT_KEY",
        "refine_traces.max_tokens=160",
    ]
    result = full_pipeline(profile="tiny", overrides=[*e2e.overrides, *endpoint],
                           store=str(tmp_path))  # fmt: skip
    text = _report(result)
    assert "| RL[countdown] | RL cold-start (GPT) |" in text and "not run" not in text
    (refined,) = (tmp_path / "refine_traces").iterdir()
    manifest = (refined / "manifest.json").read_text()
    assert chat_server.url not in manifest and chat_server.api_key not in manifest
    assert json.loads(manifest)["metrics"]["kept"] > 0
    # Only the GPT branch ran: its student, its RL run (and their evaluation).
    new = {stage: set(_runs(tmp_path, stage)) - seeded[stage] for stage in seeded}
    assert len(new["student_sft"]) == len(new["student_rl"]) == 1, new
