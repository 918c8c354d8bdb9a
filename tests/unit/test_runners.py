"""The flows' runner choice (`flows.runners`): Ray options from each stage's resources, and the
checks of a Ray cluster against a run, on `ray.nodes()` records; the deployments' runner
parameters. (The runners themselves run in tests/e2e, on a real Ray cluster.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows import runners
from flows.runners import ScaleOutError, check_cluster, ray_options
from rlt_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    """A `ray.nodes()` record, as Ray returns it (only the fields the check reads)."""
    resources = {"CPU": cpus, "memory": 1e9, **({"GPU": gpus} if gpus else {})}
    return {"Alive": alive, "Resources": resources, "NodeManagerAddress": "10.0.0.1"}


def test_each_stage_task_reserves_its_stage_resources_and_is_rerun_on_worker_loss() -> None:
    paper = load_config("paper-7b")
    assert ray_options(paper, "teacher_rl") == {
        "num_cpus": 32, "num_gpus": 8, "max_retries": 2, "retry_exceptions": False,
    }  # fmt: skip
    assert ray_options(paper, "evaluate")["num_gpus"] == 1
    assert ray_options(load_config("paper-32b"), "evaluate")["num_gpus"] == 4
    tiny = load_config("tiny", ["resources.student_sft.cpus=2"])
    assert ray_options(tiny, "student_sft")["num_cpus"] == 2
    assert ray_options(tiny, "report") == {
        "num_cpus": 1, "num_gpus": 0, "max_retries": 2, "retry_exceptions": False,
    }  # fmt: skip


def test_a_local_store_is_refused_on_a_cluster_of_several_nodes() -> None:
    tiny = load_config("tiny")
    with pytest.raises(ScaleOutError, match=r"has 2 nodes.*s3://bucket/prefix") as error:
        check_cluster(tiny, "/data/store", [node(8), node(8)], "10.0.0.1:6379")
    assert "10.0.0.1:6379" in str(error.value) and "/data/store" in str(error.value)
    check_cluster(tiny, "s3://bucket/runs", [node(8), node(8)], "10.0.0.1:6379")
    check_cluster(tiny, "/data/store", [node(8), node(8, alive=False)], None)  # one alive


def test_a_stage_larger_than_every_node_is_refused_with_the_override_that_fits() -> None:
    paper = load_config("paper-7b")
    nodes = [node(64, gpus=4), node(16, gpus=4)]
    with pytest.raises(ScaleOutError, match=r"resources.teacher_sft.gpus=8.*has 4 GPUs") as error:
        check_cluster(paper, "s3://b/p", nodes, "auto")
    assert "--set resources.teacher_sft.gpus=4" in str(error.value)
    check_cluster(paper, "s3://b/p", [node(64, gpus=8)], "auto")
    small = load_config("tiny", ["resources.evaluate.cpus=3"])
    with pytest.raises(ScaleOutError, match=r"resources.evaluate.cpus=3.*2 CPU cores"):
        check_cluster(small, "/store", [node(2)], None)


def test_a_run_over_several_nodes_needs_that_many_and_its_task_only_drives_it() -> None:
    two = load_config("paper-7b", ["resources.student_sft.nodes=2"])
    with pytest.raises(ScaleOutError, match=r"resources.student_sft.nodes=2.*has 1 node"):
        check_cluster(two, "s3://b/p", [node(64, gpus=8)], "auto")
    check_cluster(two, "s3://b/p", [node(64, gpus=8), node(64, gpus=8)], "auto")
    # the placement group reserves the nodes (tasks.multinode); the Prefect task does not
    assert ray_options(two, "student_sft")["num_gpus"] == 0
    assert ray_options(two, "teacher_sft")["num_gpus"] == 8


def test_a_run_over_several_nodes_is_refused_without_ray_before_any_stage() -> None:
    from flows.runners import connect, task_runner

    two = load_config("tiny", ["resources.teacher_sft.nodes=2"])
    with pytest.raises(ScaleOutError, match=r"resources.teacher_sft.nodes=2.*--runner ray"):
        connect(task_runner("sequential"), two, "/tmp/store")


def test_only_a_training_stage_spans_several_nodes() -> None:
    from rlt_core.config import ConfigError
    from rlt_core.stages.specs import check_config  # the declarations' rules of `resources`

    with pytest.raises(ConfigError, match=r"resources.evaluate.nodes: 2 nodes, but only a train"):
        check_config(load_config("paper-7b", ["resources.evaluate.nodes=2"]))
    with pytest.raises(ConfigError, match=r"resources.teacher_sft.nodes"):
        load_config("paper-7b", ["resources.teacher_sft.nodes=0"])


def test_unknown_runner_and_an_address_without_ray_are_refused() -> None:
    with pytest.raises(ScaleOutError, match="'sequential'.*'ray'"):
        runners.task_runner("dask")
    with pytest.raises(ScaleOutError, match="pass runner=ray"):
        runners.check_runner("sequential", "10.0.0.1:6379")
    assert type(runners.task_runner("sequential")).__name__ == "ThreadPoolTaskRunner"
    ray_runner = runners.task_runner("ray", "10.0.0.1:6379")  # not started: no connection yet
    assert type(ray_runner).__name__ == "RayTaskRunner" and ray_runner.address == "10.0.0.1:6379"


def test_every_deployment_names_a_flow_and_its_parameters() -> None:
    from deployments.serve import DEPLOYMENTS, deployments
    from flows.cli import FLOWS

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for entry in spec["deployments"]:
        path, name = entry["entrypoint"].split(":")
        flow = next(f for f in DEPLOYMENTS.values() if f.fn.__name__ == name)
        assert (ROOT / path).is_file()
        assert set(entry["parameters"]) <= set(flow.parameters.properties), entry["name"]
    assert {e["parameters"].get("runner", "sequential") for e in spec["deployments"]} == {
        "sequential", "ray",
    }  # fmt: skip
    assert set(DEPLOYMENTS) == set(FLOWS)
    served = deployments("tiny", "s3://bucket/runs", "ray", "auto")
    assert {d.parameters["runner"] for d in served} == {"ray"}
    assert {d.parameters["ray_address"] for d in served} == {"auto"}
    assert "ray_address" not in deployments("tiny", "s3://bucket/runs")[0].parameters


def test_outside_a_ray_task_a_stage_keeps_the_machine_and_inside_gets_its_share() -> None:
    from tasks.runtime import Placement, placement

    assert placement() is None  # the sequential runner: every core, every GPU it sees
    env = Placement(cpus=2, gpus=("3", "5")).env()
    assert env["CUDA_VISIBLE_DEVICES"] == "3,5" and env["OMP_NUM_THREADS"] == "2"
    assert Placement(cpus=1, gpus=()).env()["CUDA_VISIBLE_DEVICES"] == ""  # no GPU given


def test_the_retry_delay_of_a_transient_failure_is_a_setting(monkeypatch) -> None:
    from tasks import runtime, stages

    # Every stage task waits what the setting said when the tasks were defined (this
    # session's value: tests/conftest.py shortens it); the report task retries at once.
    for name in ("data", "teacher_sft", "teacher_rl", "evaluate", "raw_traces"):
        assert getattr(stages, name).retry_delay_seconds == runtime.retry_delay_seconds()
    monkeypatch.delenv("RLT_RETRY_DELAY_SECONDS", raising=False)
    assert runtime.retry_delay_seconds() == 5.0
    monkeypatch.setenv("RLT_RETRY_DELAY_SECONDS", "30")
    assert runtime.retry_delay_seconds() == 30.0
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("RLT_RETRY_DELAY_SECONDS", bad)
        with pytest.raises(ValueError, match=r"RLT_RETRY_DELAY_SECONDS=.*number >= 0"):
            runtime.retry_delay_seconds()
