"""The full pipeline on a real Prefect server: a first run, all cache hits, the plans of a
reward change and a new subset seed, and a served run with a changed teacher_rl whose process
is killed during teacher_rl, seen as Crashed and retried."""

from __future__ import annotations

import json
import os
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
from tests.e2e.conftest import E2E, FirstRun, latest_artifact

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


def test_first_run_on_ray_and_s3_then_sequential_cache_hits_then_planned_changes(
    e2e: E2E, first_run: FirstRun
) -> None:
    # The first run on the session's Ray cluster (2 cores; each tiny stage run reserves 1),
    # from an empty store on S3 (`first_run`: other tests start from copies of what it
    # trained).
    store, bucket = first_run.store, first_run.store.removeprefix("s3://")
    template = first_run.root / "template"  # what S3 held after it, fetched
    ray_run = first_run.result
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
    assert ray_run["report"]["uri"].startswith(f"{store}/report/")
    report = next((template / "report").glob("*/report.md")).read_text()
    assert "**Table 1.**" in report and "**Table 2.**" in report and "Figure 8" in report
    assert "| RLT-countdown | RLT |" in report and "| corpus-countdown | corpus" in report
    assert "| RL[countdown] | RL cold-start (raw) |" in report  # Table 2's RL-teacher baseline
    # Table 2's GPT row needs an endpoint, which tiny has none of: said, not a silent gap.
    assert "(GPT): not run: no endpoint configured" in report
    # The teacher's reward curves (in its artifact and the report) and its held-out comparison.
    (teacher_rl,) = (template / "teacher_rl").iterdir()
    assert (teacher_rl / "reward_curves.png").is_file()
    assert "![Reward curves](reward_curves.png)" in report
    assert "**Held-out teachers.**" in report and "| RLT teacher | r_RLT (Eq. 5) |" in report
    # In the Prefect UI the figures travel inside the artifacts (an s3:// or local path would
    # not load).
    published = latest_artifact("rlt-report")
    assert published.count("](data:image/png;base64,") == 2
    assert "s3://" not in published and str(first_run.root) not in published
    assert latest_artifact("rlt-report-reward-curves").startswith("data:image/png;base64,")

    with first_run.on_s3() as fs:

        def published_keys() -> set[str]:
            """`<stage>-<key>` of every artifact S3 holds (its manifest written last)."""
            manifests = fs.glob(f"{bucket}/*/*/{artifacts.MANIFEST}")
            return {"-".join(m.split("/")[-3:-1]) for m in manifests}

        def results() -> set[str]:
            """Prefect's cached task results, on S3 beside the artifacts."""
            return {path.rsplit("/", 1)[1] for path in fs.ls(f"{bucket}/.prefect-results")}

        # Every stage published on S3; one key per stage run: the artifact's folder name is
        # the Prefect cache key.
        published, cached = published_keys(), results()
        assert {key.split("-")[0] for key in published} == {
            "data", "teacher_sft", "teacher_rl", "generate_traces", "teacher_eval",
            "student_sft", "student_rl", "raw_traces", "evaluate", "report",
        }  # fmt: skip
        keys = {key for key in published if key.split("-")[0] in SPECS}  # the stage runs'
        assert len(keys) == 20 and keys <= cached

        # The same flow sequentially, from this machine: every key equals the Ray run's (all
        # cache hits, no new artifact and no new Prefect result).
        again = _states(full_pipeline(profile="tiny", overrides=e2e.overrides, store=store))
        assert {s for name, s in again.items() if name != "report"} == {"Cached"}
        fs.invalidate_cache()
        assert results() == cached
        assert {key for key in published_keys() if key.split("-")[0] in SPECS} == keys

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

        # A new subset seed, planned: the data stage does not draw subsets (cached), every stage
        # that does runs again (both SFT stages, the RL students, the RL-teacher baseline), and so
        # does what follows them. (A changed config run for real, and its cached and rerun stages,
        # is the served run's below: teacher_rl.max_steps.)
        reseeded = {
            row["label"]: row
            for row in _plan(store, [*e2e.overrides, "data.subset_seed=7"])["stages"]
        }
        assert reseeded["data"]["status"] == reseeded["evaluate[base]"]["status"] == "cached"
        for stage in ("teacher_sft", "student_sft[countdown, corpus traces]"):
            assert reseeded[stage]["reasons"] == ["config changed: subset_seed: 42 -> 7"], stage
        assert reseeded["teacher_rl"]["reasons"] == ["upstream teacher_sft runs first"]
        rerun = [
            row
            for label, row in reseeded.items()
            if label.startswith(("student_sft", "student_rl"))
        ]
        assert len(rerun) == 7 and {row["status"] for row in rerun} == {"run"}


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


def _serve(e2e: E2E, store: Path, log: Path) -> subprocess.Popen:
    """`python -m deployments.serve` in a process group of its own (its flow runs with it);
    runs without a heartbeat for 40 s turn Crashed."""
    command = [sys.executable, "-m", "deployments.serve", "--store", str(store),
               "--crash-after", "40", "--poll", "1"]  # fmt: skip
    with log.open("a") as out:
        return subprocess.Popen(command, cwd=ROOT, env=e2e.env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _wait_for_state(flow_run_id: object, done: set[str], seconds: float) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.type.value in done:
                return state.type.value
            assert time.monotonic() < deadline, f"flow run still {state.type.value} ({state.name})"
            time.sleep(1)


def test_served_run_killed_during_teacher_rl_crashes_then_a_ui_retry_resumes_it(
    e2e: E2E, first_run: FirstRun, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import AwaitingRetry

    store, log = tmp_path / "store", tmp_path / "serve.log"
    first_run.seed(store)  # a store after a first run: only the 3-step teacher's side trains
    seeded = {path: (path / "manifest.json").stat().st_mtime_ns for path in store.glob("*/*")}
    # Three RL steps with a checkpoint after each, so the kill lands inside teacher_rl.
    overrides = [*e2e.overrides, "teacher_rl.max_steps=3", "teacher_rl.save_steps=1"]
    serving = _serve(e2e, store, log)
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:  # the serve process has registered its deployments (their tag too)
                try:
                    deployment = client.read_deployment_by_name("rlt/full-pipeline")
                    if "rlt-heartbeat" in deployment.tags:
                        break
                except Exception:  # noqa: BLE001  (not registered yet)
                    pass
                assert serving.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(1)
        run = run_deployment("rlt/full-pipeline", timeout=0,
                             parameters={"overrides": overrides, "store": str(store)})  # fmt: skip
        deadline, checkpoint = time.monotonic() + 300, "checkpoints/checkpoint-1/trainer_state.json"
        while not list(store.glob(f".work/teacher_rl/*/{checkpoint}")):
            assert serving.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "teacher_rl wrote no checkpoint within 300 s"
            time.sleep(0.2)
        os.killpg(serving.pid, signal.SIGKILL)  # the serving process and its flow run die
        serving.wait()
        killed_at = time.monotonic()
        (work,) = store.glob(".work/teacher_rl/*")  # half done: its work area, nothing published
        killed = store / "teacher_rl" / work.name
        assert not artifacts.is_complete(killed)  # never taken as finished

        # Seen as dead: Crashed within the heartbeat period plus the automation's 40 s.
        assert _wait_for_state(run.id, {"CRASHED", "COMPLETED", "FAILED"}, 120) == "CRASHED"
        assert time.monotonic() - killed_at < 30 + 40 + 20
        serving = _serve(e2e, store, log)  # the deployments are served again ...
        with get_client(sync_client=True) as client:  # ... and the UI's Retry, as it sends it
            client.set_flow_run_state(run.id, AwaitingRetry(message="Retry from the UI"))
        assert _wait_for_state(run.id, {"COMPLETED", "FAILED", "CRASHED"}, 600) == "COMPLETED"
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGKILL)
            serving.wait()
    states = {row["stage"]: row["state"] for row in json.loads(latest_artifact("rlt-stage-times"))
              if row["state"]}  # fmt: skip
    # A changed teacher_rl config run for real: teacher_rl and what reads the new teacher run;
    # what does not read it is not trained again (data and teacher_sft from the killed try's
    # cache records; the baselines' students, which never see the teacher, found finished as
    # seeded).
    assert states["data"] == states["teacher_sft"] == "Cached"
    assert states["teacher_rl"] == states["generate_traces"] == "Completed"
    assert all((path / "manifest.json").stat().st_mtime_ns == seen for path, seen in seeded.items())
    new = [path.parent.name for path in store.glob("*/*") if path not in seeded]
    assert {"teacher_rl", "generate_traces", "teacher_eval"} <= set(new), new
    assert not {"data", "teacher_sft", "raw_traces"} & set(new), new
    assert new.count("student_sft") <= 1, new  # at most the student of the new traces
    train = artifacts.read_manifest(killed)["metrics"]["train"]
    assert train["resumed_from_step"] >= 1 and train["global_step"] == 3
