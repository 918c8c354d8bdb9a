"""Where a flow's stage tasks run: the `runner` flow parameter (`--runner` on the command line).

Every flow submits its stage tasks as Prefect futures as soon as it has wired them, and a
Prefect task runner decides what runs when (a task starts once the futures it takes are done):

- `sequential` (default): Prefect's thread-pool runner with one worker, so one stage at a time
  in the flow's process, with every core of the machine (the CPU `tiny` demo: 2 cores gain
  nothing from running stages side by side).
- `ray`: prefect-ray's `RayTaskRunner` on a Ray cluster (`ray_address`: `host:port` of a
  cluster started with `ray start --head`, `ray://host:10001`, or `auto`; none: Ray's own
  lookup, $RAY_ADDRESS or a cluster `ray start` began on this machine, else a new local one
  for the flow run). Each stage task is a Ray task that reserves the stage's
  `resources.<stage>` ({gpus, cpus}, `rlt_core.config.resources`): Ray runs independent stages
  side by side while they fit, gives each its GPUs (CUDA_VISIBLE_DEVICES) and the stage uses as
  many torch threads as cores it reserved (`tasks.runtime.placement`). A Ray worker lost in
  the middle of a stage (a killed process, a lost node) is rerun by Ray up to
  `RAY_TASK_RETRIES` times; the rerun resumes from the stage's checkpoints, and only a finished
  manifest ever makes an artifact.

`connect` checks the cluster against the run before any stage starts: a local store is
refused on a cluster of several nodes (their workers would write to disks the others cannot
read), and a stage that asks for more GPUs or cores than any node has is refused (Ray would
leave it pending forever).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from rlt_core.config import PipelineConfig
from rlt_core.stages.specs import SPECS, spec_of

RunnerKind = Literal["sequential", "ray"]
RUNNERS: tuple[str, ...] = ("sequential", "ray")
# Reruns of a stage task whose Ray worker died (Ray's system-failure retries); a stage that
# raises is never rerun by Ray (Prefect's own retries handle transient store failures).
RAY_TASK_RETRIES = 2
# A task that is not a stage (the report) reserves one core.
OTHER_TASK = {"num_cpus": 1, "num_gpus": 0}


class ScaleOutError(ValueError):
    """The chosen runner cannot run this flow here (what, why and how to fix it)."""


def check_runner(kind: str, ray_address: str | None) -> None:
    """Refuse an unknown runner, or a Ray address without the Ray runner, before anything."""
    if kind not in RUNNERS:
        raise ScaleOutError(
            f"runner={kind!r} is not a runner: use 'sequential' (one stage at a time, in the "
            "flow's process) or 'ray' (stages side by side on a Ray cluster)."
        )
    if ray_address and kind != "ray":
        raise ScaleOutError(
            f"ray_address={ray_address!r} is given, but runner={kind!r} does not use Ray: "
            "pass runner=ray (--runner ray) to run on that cluster, or drop the address."
        )


def task_runner(kind: str, ray_address: str | None = None) -> TaskRunner:
    """The (not yet started) Prefect task runner of `kind` (module docstring)."""
    check_runner(kind, ray_address)
    if kind == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_ray import RayTaskRunner

    # A task killed by Ray's memory monitor would be rerun without end (Ray's default): an
    # out-of-memory stage fails at once instead (task owners read this at ray.init; start an
    # external cluster with it too). Lost workers are still rerun (`RAY_TASK_RETRIES`).
    os.environ.setdefault("RAY_task_oom_retries", "0")
    init: dict[str, Any] = {"include_dashboard": False} if not ray_address else {}
    return RayTaskRunner(address=ray_address or None, init_kwargs=init)


def ray_options(cfg: PipelineConfig, task_name: str) -> dict[str, Any]:
    """The Ray `remote_options` of one task: its stage's GPUs and cores, rerun on worker loss."""
    if task_name in SPECS and spec_of(task_name).resources(cfg).nodes > 1:
        # A run over several nodes reserves them as a placement group when it starts
        # (tasks.multinode); the task itself only drives it.
        reserve = dict(OTHER_TASK)
    elif task_name in SPECS:
        given = spec_of(task_name).resources(cfg)
        reserve = {"num_cpus": given.cpus, "num_gpus": given.gpus}
    else:
        reserve = dict(OTHER_TASK)
    return {**reserve, "max_retries": RAY_TASK_RETRIES, "retry_exceptions": False}


def check_cluster(
    cfg: PipelineConfig, store_root: str, nodes: Iterable[Mapping[str, Any]], address: str | None
) -> None:
    """Refuse a run the Ray cluster (`ray.nodes()`) cannot hold (module docstring)."""
    alive = [node for node in nodes if node.get("Alive", node.get("alive"))]
    where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
    if len(alive) > 1 and "://" not in store_root:
        raise ScaleOutError(
            f"store {store_root!r} is a local directory, but {where} has {len(alive)} nodes: "
            "a stage on one node would write its artifact to that node's disk, where stages "
            "on the other nodes cannot read it. Use a store every node reaches, e.g. "
            "--store s3://bucket/prefix (with AWS_* credentials on every node), or run on "
            "one node."
        )
    biggest = {
        kind: max((float(node.get("Resources", {}).get(kind, 0)) for node in alive), default=0.0)
        for kind in ("GPU", "CPU")
    }
    for stage in SPECS:
        given = spec_of(stage).resources(cfg)
        if given.nodes > len(alive):
            raise ScaleOutError(
                f"resources.{stage}.nodes={given.nodes}, but {where} has {len(alive)} node(s): "
                f"its placement group (one bundle per node) would never be ready. Add nodes or "
                f"set --set resources.{stage}.nodes={len(alive)}."
            )
        for kind, asked in (("GPU", given.gpus), ("CPU", given.cpus)):
            if asked > biggest[kind]:
                unit = "GPUs" if kind == "GPU" else "CPU cores"
                field = "gpus" if kind == "GPU" else "cpus"
                raise ScaleOutError(
                    f"resources.{stage}.{field}={asked}, but the largest node of {where} has "
                    f"{biggest[kind]:g} {unit}: Ray would never start a {stage} run. Give it "
                    f"what one node has (--set resources.{stage}.{field}={int(biggest[kind])}) "
                    "or add a bigger node to the cluster."
                )


def connect(runner: TaskRunner, cfg: PipelineConfig, store_root: str) -> TaskRunner:
    """Start `runner` (a Ray runner connects to, or starts, its cluster) and, for Ray, check
    the cluster against the run (`check_cluster`); the runner is closed if that fails."""
    on_ray = type(runner).__name__ == "RayTaskRunner"
    spread = [s for s in SPECS if spec_of(s).resources(cfg).nodes > 1]
    if spread and not on_ray:
        raise ScaleOutError(
            f"resources.{spread[0]}.nodes={spec_of(spread[0]).resources(cfg).nodes}: a run "
            "over several machines is placed by Ray (a placement group of one bundle per "
            "node); run with --runner ray on a cluster of that many nodes, or set "
            f"resources.{spread[0]}.nodes=1"
        )
    runner.__enter__()
    if not on_ray:
        return runner
    import ray

    try:
        check_cluster(cfg, store_root, ray.nodes(), getattr(runner, "address", None))
    except BaseException:
        runner.__exit__(None, None, None)
        raise
    return runner
