"""The full pipeline on a real Prefect server: a first run, all cache hits, a reward change,
and a flow process killed during teacher_rl."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.full_pipeline import full_pipeline
from rlt_core import artifacts
from rlt_core.config import ConfigError
from rlt_core.stages.specs import SPECS
from tests.e2e.conftest import E2E, latest_artifact
from tests.fixtures_ray import RayNode

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TEACHER_SIDE = ("data", "teacher_sft", "teacher_rl", "generate_traces")


def _states(result: dict) -> dict[str, str]:
    """Task run label -> final state (without the `total` and `wall` summary rows)."""
    return {row["stage"]: row["state"] for row in result["stage_times"] if row["state"]}


def overlapping(result: dict) -> list[tuple[str, str]]:
    """The pairs of task runs whose [start, end] intervals (Prefect's task-run records)
    overlap in time."""
    runs = [row for row in result["stage_times"] if row["state"] and row["start"] is not None]
    return [(a["stage"], b["stage"]) for i, a in enumerate(runs) for b in runs[i + 1 :]
            if a["start"] < b["end"] and b["start"] < a["end"]]  # fmt: skip


def test_first_run_on_ray_then_sequential_cache_hits_then_a_reward_change(
    e2e: E2E, ray_cluster: RayNode, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    # The first run on the test's Ray cluster (2 cores; each tiny stage run reserves 1).
    ray_run = full_pipeline(
        profile="tiny", overrides=e2e.overrides, store=store, runner="ray",
        ray_address=ray_cluster.address,
    )  # fmt: skip
    first = _states(ray_run)
    # 1 data + 3 teacher + teacher_eval + 2 students + 3 RL runs (no cold start, RLT, corpus)
    # + the RL teacher's baseline (raw_traces, its student, RL again) + 7 evaluations (base,
    # 2 students, 4 RL students) + the report.
    assert len(first) == 21
    assert {s for name, s in first.items() if name != "report"} == {"Completed"}
    # Independent stages ran side by side (never a stage and one it waits on).
    pairs = overlapping(ray_run)
    assert pairs, ray_run["stage_times"]
    assert ("data", "teacher_sft") not in pairs and ("teacher_sft", "teacher_rl") not in pairs
    wall = ray_run["stage_times"][-1]
    assert wall["stage"] == "wall" and wall["seconds"] < ray_run["stage_times"][-2]["seconds"]
    report = next((tmp_path / "store" / "report").glob("*/report.md")).read_text()
    assert "**Table 1.**" in report and "**Table 2.**" in report and "Figure 8" in report
    assert "| RLT-countdown | RLT |" in report and "| corpus-countdown | corpus" in report
    assert "| RL[countdown] | RL cold-start (raw) |" in report  # Table 2's RL-teacher baseline
    # The teacher's reward curves (in its artifact and the report) and its held-out comparison.
    (teacher_rl,) = (tmp_path / "store" / "teacher_rl").iterdir()
    assert (teacher_rl / "reward_curves.png").is_file()
    assert "![Reward curves](reward_curves.png)" in report
    assert "**Held-out teachers.**" in report and "| RLT teacher | r_RLT (Eq. 5) |" in report
    # In the Prefect UI the figures travel inside the artifacts (a local path would not load).
    published = latest_artifact("rlt-report")
    assert published.count("](data:image/png;base64,") == 2 and str(tmp_path) not in published
    assert latest_artifact("rlt-report-reward-curves").startswith("data:image/png;base64,")

    # One key per stage run: the artifact directory's name is the Prefect cache key.
    results = {p.name for p in (tmp_path / "store" / ".prefect-results").iterdir()}
    keys = {f"{d.parent.name}-{d.name}" for d in (tmp_path / "store").glob("*/*")
            if d.parent.name in SPECS}  # fmt: skip
    assert len(keys) == 20 and keys <= results

    # The same flow sequentially: every key equals the Ray run's (all cache hits, no new
    # artifact and no new Prefect result).
    again = _states(full_pipeline(profile="tiny", overrides=e2e.overrides, store=store))
    assert {s for name, s in again.items() if name != "report"} == {"Cached"}
    assert {p.name for p in (tmp_path / "store" / ".prefect-results").iterdir()} == results
    assert {f"{d.parent.name}-{d.name}" for d in (tmp_path / "store").glob("*/*")
            if d.parent.name in SPECS} == keys  # fmt: skip

    # `rlt plan` on the finished store: every stage cached; with another lambda, the stages
    # that read the reward run and say why, the ones after them wait on them.
    finished = _plan(store, e2e.overrides)
    assert len(finished["stages"]) == 20 and finished["run"] == 0
    planned = _plan(store, [*e2e.overrides, "reward.lambda=1"])
    rows = {row["label"]: row for row in planned["stages"]}
    assert rows["data"]["status"] == rows["teacher_sft"]["status"] == "cached"
    assert rows["teacher_rl"]["status"] == "run"
    assert rows["teacher_rl"]["reasons"] == ["config changed: reward.lambda: 3.0 -> 1.0"]
    assert rows["generate_traces"]["reasons"] == ["upstream teacher_rl runs first"]
    assert rows["evaluate[corpus-countdown]"]["status"] == "cached"

    changed = _states(
        full_pipeline(profile="tiny", overrides=[*e2e.overrides, "reward.lambda=1"], store=store)
    )
    # data and teacher_sft do not read the reward: cached. teacher_rl runs again, and so does
    # generate_traces (its teacher changed). The baseline students never see the teacher.
    assert changed["data"] == changed["teacher_sft"] == "Cached"
    assert changed["teacher_rl"] == changed["generate_traces"] == "Completed"
    assert changed["student_sft[countdown, corpus traces]"] == "Cached"
    assert changed["evaluate[corpus-countdown]"] == "Cached"
    teacher_rl = sorted((tmp_path / "store" / "teacher_rl").iterdir())
    assert len(teacher_rl) == 2 and all(artifacts.is_complete(p) for p in teacher_rl)
    lambdas = {artifacts.read_manifest(p)["config"]["reward"]["lambda"] for p in teacher_rl}
    assert lambdas == {3.0, 1.0}

    # A new subset seed: the data stage does not draw subsets (cached), every stage that does
    # runs again (both SFT stages, the RL students, the RL-teacher baseline), and what follows.
    reseeded = _states(
        full_pipeline(profile="tiny", overrides=[*e2e.overrides, "data.subset_seed=7"], store=store)
    )
    assert reseeded["data"] == reseeded["evaluate[base]"] == "Cached"
    assert reseeded["teacher_sft"] == reseeded["teacher_rl"] == "Completed"
    rerun = [name for name in reseeded if name.startswith(("student_sft", "student_rl"))]
    assert len(rerun) == 7 and {reseeded[name] for name in rerun} == {"Completed"}


def _plan(store: str, overrides: list[str]) -> dict:
    """`rlt plan --json` on `store` with `overrides`, in this process."""
    from typer.testing import CliRunner

    from flows.cli import app

    sets = [arg for override in overrides for arg in ("--set", override)]
    done = CliRunner().invoke(app, ["plan", "--store", store, "--json", *sets])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def test_bad_config_fails_before_any_task_runs(e2e: E2E, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reward.lambda"):
        full_pipeline(profile="tiny", overrides=["reward.lambda=-1"], store=str(tmp_path))
    assert not any(tmp_path.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "flows.ablation", "--help"],
        capture_output=True, text=True, cwd=ROOT, env=e2e.env(), check=True,
    )  # fmt: skip
    assert "--lambda" in done.stdout and "--alpha" in done.stdout


_KILLABLE = """
import json, sys
from flows.full_pipeline import full_pipeline
full_pipeline(profile="tiny", overrides=json.loads(sys.argv[1]), store=sys.argv[2])
"""


def test_flow_killed_during_teacher_rl_resumes_without_redoing_teacher_sft(
    e2e: E2E, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    # Three RL steps with a checkpoint after each, so the kill lands inside teacher_rl.
    overrides = [*e2e.overrides, "teacher_rl.max_steps=3", "teacher_rl.save_steps=1"]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, json.dumps(overrides), str(store)],
        cwd=ROOT, env=e2e.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(store.glob(".work/teacher_rl/*/checkpoints/checkpoint-1/trainer_state.json")):
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "teacher_rl wrote no checkpoint within 300 s"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (work,) = store.glob(".work/teacher_rl/*")  # half done: its work area, nothing published
    killed = store / "teacher_rl" / work.name
    assert not artifacts.is_complete(killed)  # never taken as finished
    (warm,) = store.glob("teacher_sft/*")
    warm_manifest = (warm / "manifest.json").stat().st_mtime_ns

    states = _states(full_pipeline(profile="tiny", overrides=overrides, store=str(store)))
    assert states["teacher_sft"] == "Cached" and states["teacher_rl"] == "Completed"
    assert (warm / "manifest.json").stat().st_mtime_ns == warm_manifest  # not redone
    train = artifacts.read_manifest(killed)["metrics"]["train"]
    assert train["resumed_from_step"] >= 1 and train["global_step"] == 3
