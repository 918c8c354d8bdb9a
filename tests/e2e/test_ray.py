"""The Ray runner's failure paths on a real Ray cluster (127.0.0.1): a Ray worker killed in the
middle of a training stage, and a local store refused on a cluster of several nodes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from prefect import flow

from flows import common
from flows.full_pipeline import full_pipeline
from flows.runners import ScaleOutError
from flows.times import stage_times
from rlt_core import artifacts
from rlt_core.stages.specs import DATA
from tasks import stages
from tests.e2e.conftest import E2E, FirstRun
from tests.fixtures_ray import RayNode, alive_nodes

pytestmark = pytest.mark.e2e


@flow(name="rlt-test-teacher")
def teacher_on_ray(overrides: list[str], store: str, ray_address: str) -> dict:
    """data -> teacher_sft -> teacher_rl through the flows' own Runner on the Ray runner."""
    with common.start_run("tiny", overrides, store, runner="ray", ray_address=ray_address) as run:
        data = run(stages.data, "data")
        corpus = common.file_in(data, DATA.outputs.corpus)
        warm = run(stages.teacher_sft, "teacher_sft", corpus=corpus)
        teacher = run(stages.teacher_rl, "teacher_rl", teacher_sft=warm, corpus=corpus)
        return {"teacher": run.result(teacher), "times": stage_times(run.submitted)}


def ray_worker_running(task_name: str) -> psutil.Process | None:
    """The Ray worker process executing a task named `task_name` (its title `ray::<name>`)."""
    for process in psutil.process_iter(["cmdline"]):
        if (process.info["cmdline"] or [""])[0].startswith(f"ray::{task_name}"):
            return process
    return None


def test_ray_worker_killed_during_teacher_rl_is_rerun_and_resumes(
    e2e: E2E, ray_cluster: RayNode, first_run: FirstRun, tmp_path: Path
) -> None:
    store = first_run.seed(tmp_path / "store", ("data", "teacher_sft"))
    # Three RL steps with a checkpoint after each, so the kill lands inside teacher_rl.
    overrides = [*e2e.overrides, "teacher_rl.max_steps=3", "teacher_rl.save_steps=1"]
    seen: dict = {}

    def kill_when_checkpointed() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if list(store.glob(".work/teacher_rl/*/checkpoints/checkpoint-1/trainer_state.json")):
                worker = ray_worker_running("teacher_rl")
                if worker is not None:
                    (work,) = store.glob(".work/teacher_rl/*")
                    os.kill(worker.pid, signal.SIGKILL)
                    seen["pid"] = worker.pid
                    seen["dir"] = store / "teacher_rl" / work.name
                    seen["complete_after_kill"] = artifacts.is_complete(seen["dir"])
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_checkpointed, daemon=True)
    killer.start()
    result = teacher_on_ray(overrides, str(store), ray_cluster.address)
    killer.join(timeout=5)
    assert "pid" in seen, "no Ray worker ran teacher_rl after its first checkpoint"
    assert not psutil.pid_exists(seen["pid"]) or psutil.Process(seen["pid"]).status() == "zombie"
    # Killed half way: no manifest, never taken as finished; Ray ran the task again, and the
    # rerun resumed from the checkpoint into the same artifact.
    assert seen["complete_after_kill"] is False
    states = {row["stage"]: row["state"] for row in result["times"] if row["state"]}
    assert states == {"data": "Completed", "teacher_sft": "Completed", "teacher_rl": "Completed"}
    assert Path(result["teacher"]["uri"]) == seen["dir"] and artifacts.is_complete(seen["dir"])
    train = artifacts.read_manifest(seen["dir"])["metrics"]["train"]
    assert train["resumed_from_step"] >= 1 and train["global_step"] == 3


def test_local_store_on_a_cluster_of_two_nodes_is_refused_before_any_stage(
    e2e: E2E, ray_cluster: RayNode, tmp_path: Path
) -> None:
    node = RayNode(cpus=0, address=ray_cluster.address)  # a second node joins the cluster
    try:
        assert alive_nodes(ray_cluster.address) == 2
        store = tmp_path / "store"
        with pytest.raises(ScaleOutError, match=r"has 2 nodes.*s3://"):
            full_pipeline(
                profile="tiny", overrides=e2e.overrides, store=str(store), runner="ray",
                ray_address=ray_cluster.address,
            )  # fmt: skip
        assert not store.exists()  # nothing written, no stage ran
    finally:
        node.stop()
