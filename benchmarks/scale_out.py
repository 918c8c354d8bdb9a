"""Figures: one flow on the `tiny` profile run with `--runner sequential` and with
`--runner ray` (a local Ray instance with this machine's cores), each into a fresh store, and
what the measured stage times would take on a node of more GPUs.

For each runner: the wall time of the flow call (Ray's start included), the sum of the stage
times and the stage wall time (first start to last end, from Prefect's task-run records).
Then a prediction: the flow's DAG (the upstream task runs Prefect recorded for each task run)
replayed with the measured durations by a greedy list scheduler that, like Ray, starts every
ready task whose GPUs and cores are free, on a node of `--gpus` GPUs and `--cpus` cores with
the resources of `--resources-profile` (paper-7b: a training run takes all 8 GPUs, an
evaluation one). Stage times of a CPU run are not GPU times; the prediction shows how much
of a DAG's work can overlap with a given node and resources, not absolute GPU hours.

Needs a Prefect API (PREFECT_API_URL), e.g. `prefect server start` in another shell; run on an
idle machine: two torch jobs on these 2 cores slow each other 6-8x.

Usage:
    python benchmarks/scale_out.py                               # full pipeline, ~15 min
    python benchmarks/scale_out.py --flow reward-rank --num-ranks 4
    python benchmarks/scale_out.py --runners ray --gpus 8 --set resources.student_sft.gpus=1
"""

from __future__ import annotations

import heapq
import tempfile
import time
from typing import Annotated, Any

import typer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rlt_core.config import load_config
from rlt_core.stages.specs import STAGES, spec_of


def run_flow(flow: str, runner: str, store: str, overrides: list[str], ranks: int) -> dict:
    """One flow run of `flow` on `runner` into `store`; its result, wall time and task runs."""
    from flows.full_pipeline import full_pipeline
    from flows.reward_rank import reward_rank

    start = time.perf_counter()
    if flow == "reward-rank":
        state = reward_rank(
            overrides=overrides, store=store, num_ranks=ranks, runner=runner, return_state=True
        )
    else:
        state = full_pipeline(overrides=overrides, store=store, runner=runner, return_state=True)
    wall = time.perf_counter() - start
    result = state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return {"result": result, "wall": wall, "task_runs": runs}


def dag(task_runs: list[Any]) -> list[dict[str, Any]]:
    """Each task run: its label, stage, measured seconds and upstream labels (from Prefect)."""
    labels = {run.id: run.name for run in task_runs}
    nodes = []
    for run in sorted(task_runs, key=lambda r: r.expected_start_time or r.created):
        upstream = {
            labels[item.id]
            for inputs in run.task_inputs.values()
            for item in inputs
            if getattr(item, "id", None) in labels
        }
        seconds = run.total_run_time.total_seconds()
        nodes.append(
            {"label": run.name, "task": _task_name(run), "seconds": seconds, "upstream": upstream}
        )
    return nodes


def _task_name(run: Any) -> str:
    """The stage a task run belongs to (its label starts with the stage name)."""
    for stage in STAGES:
        if run.name == stage or run.name.startswith((f"{stage}[", f"{stage} ")):
            return stage
    return run.name


def simulate(nodes: list[dict[str, Any]], cfg: Any, gpus: int, cpus: int) -> float:
    """Makespan of `nodes` on one node of `gpus` GPUs and `cpus` cores: greedy list
    scheduling in submission order, each task holding its stage's resources."""

    def need(node: dict[str, Any]) -> tuple[int, int]:
        if node["task"] in STAGES:
            given = spec_of(node["task"]).resources(cfg)
            return min(given.gpus, gpus), min(given.cpus, cpus)
        return 0, 1

    done: set[str] = set()
    running: list[tuple[float, str, tuple[int, int]]] = []
    pending = list(nodes)
    free, now = [gpus, cpus], 0.0
    while pending or running:
        for node in list(pending):
            g, c = need(node)
            if node["upstream"] <= done and g <= free[0] and c <= free[1]:
                free[0] -= g
                free[1] -= c
                heapq.heappush(running, (now + node["seconds"], node["label"], (g, c)))
                pending.remove(node)
        if not running:
            raise RuntimeError(f"cannot place {[n['label'] for n in pending]}")
        now, label, (g, c) = heapq.heappop(running)
        free[0] += g
        free[1] += c
        done.add(label)
    return now


def main(
    flow: Annotated[str, typer.Option(help="full-pipeline or reward-rank")] = "full-pipeline",
    num_ranks: Annotated[int, typer.Option(help="reward-rank: ranks")] = 4,
    runners: Annotated[list[str] | None, typer.Option(help="runners to measure")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key.path=value")] = None,
    gpus: Annotated[int, typer.Option(help="the predicted node's GPUs")] = 8,
    cpus: Annotated[int, typer.Option(help="the predicted node's cores")] = 96,
    resources_profile: Annotated[str, typer.Option(help="resources of the prediction")] = (
        "paper-7b"
    ),
) -> None:
    """Measure the flow on each runner, then predict it on a node of `gpus` GPUs."""
    console = Console()
    measured = {}
    for runner in runners or ["sequential", "ray"]:
        store = tempfile.mkdtemp(prefix=f"rlt-scale-{runner}-")
        console.print(f"[bold]{flow} on --runner {runner}[/] (store {store})")
        measured[runner] = run_flow(flow, runner, store, list(overrides or []), num_ranks)
    table = Table(title=f"{flow}, tiny profile, this machine")
    for column in ("runner", "flow call (s)", "sum of stage times (s)", "stage wall (s)"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for runner, run in measured.items():
        rows = run["result"]["stage_times"]
        table.add_row(
            runner, f"{run['wall']:.1f}", f"{rows[-2]['seconds']:.1f}", f"{rows[-1]['seconds']:.1f}"
        )
    console.print(table)

    runner, run = next(iter(measured.items()))
    nodes = dag(run["task_runs"])
    cfg = load_config(resources_profile, list(overrides or []))
    serial = sum(node["seconds"] for node in nodes)
    console.print(f"stage times of the {runner} run, DAG from Prefect's task inputs:")
    for node in nodes:
        given = spec_of(node["task"]).resources(cfg) if node["task"] in STAGES else None
        what = f"{given.gpus} GPU / {given.cpus} cores" if given else "1 core"
        console.print(f"  {escape(node['label']):<44} {node['seconds']:7.1f} s  ({what})")
    for count in sorted({1, gpus}):
        span = simulate(nodes, cfg, count, cpus)
        console.print(
            f"predicted on a node of {count} GPU(s), {cpus} cores, {resources_profile} "
            f"resources: {span:.1f} s (serial {serial:.1f} s, speed-up {serial / span:.2f}x)"
        )


if __name__ == "__main__":
    typer.run(main)
