"""What the flows share: starting a run, calling stage tasks with timing, publishing reports.

`start_run` validates the profile and overrides BEFORE any task runs (a bad key fails the flow
at once with the config's own message), opens the artifact store and picks where Prefect keeps
its cached task results: inside the store root (`<store>/.prefect-results`, a directory for a
local store, a saved RemoteFileSystem block for s3://), so that deleting a store also forgets
its cache and a remote store serves cache hits to every worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId
from prefect.filesystems import RemoteFileSystem
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import TaskRunner
from prefect.utilities.callables import get_call_parameters
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows import runners
from flows.options import (  # noqa: F401  (the flows' options, re-exported)
    JsonOption,
    OverridesOption,
    PlanOption,
    ProfileOption,
    RayAddressOption,
    RecipeOption,
    RunnerOption,
    StoreOption,
    StrictEnvOption,
)
from rlt_core.artifacts import digest_json
from rlt_core.config import PipelineConfig, load_config
from rlt_core.figures import data_uri, inline_images
from rlt_core.reports import FIGURE_8, REPORT_MD, REWARD_CURVES
from rlt_core.stages.plan import PlanRow, StoreIndex, plan_stage
from rlt_core.stages.specs import STAGES, spec_of
from rlt_core.store import ArtifactStore, check_store_uri
from tasks.runtime import Input, input_digest

RESULTS_DIR = ".prefect-results"
STAGE_NAMES = frozenset(STAGES)

# The command-line options every flow module's `main` shares (typer).


def result_storage(store: ArtifactStore) -> Path | RemoteFileSystem:
    """Where Prefect persists the stage tasks' JSON results for this store (module docstring)."""
    if not store.remote:
        return store.working / RESULTS_DIR
    block = RemoteFileSystem(
        basepath=f"{store.root}/{RESULTS_DIR}", settings=dict(store.storage_options or {})
    )
    name = "rlt-results-" + hashlib.sha256(store.root.encode()).hexdigest()[:12]
    block.save(name, overwrite=True)
    return block


def store_root(store: str) -> str:
    """The store's root as every process names it: a URL as given, a directory absolute."""
    return store if "://" in store else str(Path(store).expanduser().resolve())


@dataclass
class Runner:
    """Submits stage tasks for one flow run to its task runner (`flows.runners`), with its
    result storage, and keeps every future so the flow can wait on them and time them.

    A call returns the task's Prefect future at once; passing it (or `file_in` of it) to a
    later call makes that task wait for it, so the flow's DAG function wires the whole DAG
    before anything finishes and independent stages run together when the runner allows.
    Use it as a context manager: leaving it shuts the task runner down (a Ray runner
    disconnects from, or stops, its cluster).
    """

    run: dict[str, Any]
    cfg: PipelineConfig
    store: ArtifactStore
    storage: Path | RemoteFileSystem
    tasks: TaskRunner
    kind: str = "sequential"
    submitted: list[tuple[str, PrefectFuture]] = field(default_factory=list)
    once: dict[str, PrefectFuture] = field(default_factory=dict)  # stage runs submitted

    def __call__(self, task: Any, label: str, **inputs: Any) -> PrefectFuture:
        """Submit `task(run, **inputs)` as task run `label`; its future. A stage run that this
        flow run has already submitted (the same stage, config and inputs: an ablation's
        variants share their teacher_sft) is not submitted twice: its future is returned."""
        same = self._submission(task.name, inputs)
        if same is not None and same in self.once:
            return self.once[same]
        bound = task.with_options(result_storage=self.storage, task_run_name=label)
        parameters = get_call_parameters(bound.fn, (self.run,), inputs)
        if self.kind == "ray":
            from prefect_ray.context import remote_options

            with remote_options(**runners.ray_options(self.cfg, task.name)):
                future = self.tasks.submit(bound, parameters)
        else:
            future = self.tasks.submit(bound, parameters)
        self.submitted.append((label, future))
        if same is not None:
            self.once[same] = future
        return future

    def _submission(self, stage: str, inputs: Mapping[str, Any]) -> str | None:
        """What identifies a stage run before its inputs exist: the config its key holds and
        each input as given (a future by its task run, a ref by its digest); None for a task
        that is not a stage."""
        if stage not in STAGE_NAMES:
            return None
        spec = spec_of(stage)
        recipe = inputs.get("recipe")
        config = spec.key_config(**spec.config_args(self.cfg, recipe))
        given = {name: _identity(value) for name, value in inputs.items() if name != "recipe"}
        return digest_json({"stage": stage, "recipe": recipe, "config": config, "inputs": given})

    def derive(self, extra_overrides: Sequence[str]) -> Runner:
        """A runner for the same store and task runner with more overrides (an ablation's
        variant); its futures join this run's."""
        variant = start_run(
            **_variant(self.run, extra_overrides),
            cache_dir=self.run.get("cache_dir"),
            task_runner=self.tasks,
            runner=self.kind,
        )
        variant.submitted = self.submitted  # one wait and one timing table for the flow run
        variant.once = self.once  # and one task run per stage run
        return variant

    def result(self, future: PrefectFuture) -> dict[str, str]:
        """Wait for every submitted task; `future`'s ref. Raises the first failed stage's own
        error (in submission order, so the root cause, not a stage that waited on it)."""
        wait([f for _, f in self.submitted])
        for label, submitted in self.submitted:
            state = submitted.state
            if state.is_failed() or state.is_crashed():
                get_run_logger().error("%s: %s", label, state.message)
                submitted.result()  # raises the stage's exception
        return future.result()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.tasks.__exit__(*exc_info)


def _identity(value: Any) -> Any:
    """A stage input as `Runner._submission` compares it."""
    if isinstance(value, PrefectFuture):
        return f"future:{value.task_run_id}"
    if isinstance(value, Mapping):
        return {name: _identity(item) for name, item in value.items()}
    return value


def _variant(run: Mapping[str, Any], extra_overrides: Sequence[str]) -> dict[str, Any]:
    """The start_run / start_plan arguments of `run` with more overrides (a flow's variant)."""
    return {
        "profile": run["profile"],
        "overrides": [*run["overrides"], *extra_overrides],
        "store": run["store"],
        "storage_options": run.get("storage_options"),
    }


def with_strict_env(overrides: Sequence[str] | None, strict_env: bool) -> list[str]:
    """The overrides, with `strict_env=true` when the flow's `strict_env` parameter is set."""
    return [*(overrides or ()), "strict_env=true"] if strict_env else list(overrides or ())


def start_run(
    profile: str,
    overrides: Sequence[str] | None,
    store: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
    runner: str = "sequential",
    ray_address: str | None = None,
    task_runner: TaskRunner | None = None,
    strict_env: bool = False,
) -> Runner:
    """Validate the config and the runner, start the task runner (`runner`, `ray_address`:
    `flows.runners`; a Ray cluster is checked against the run), then open the store and its
    result storage (module docstring). Nothing is written before every check has passed.
    `strict_env` keys every stage on the package versions too (`PipelineConfig.strict_env`)."""
    overrides = with_strict_env(overrides, strict_env)
    cfg = load_config(profile, list(overrides or ()))  # ConfigError before any task runs
    runners.check_runner(runner, ray_address)
    check_store_uri(store, storage_options)  # StoreURIError before anything starts
    root = store_root(store)
    tasks = task_runner or runners.connect(runners.task_runner(runner, ray_address), cfg, root)
    try:
        opened = ArtifactStore.open(
            store, cache_dir=cache_dir, storage_options=dict(storage_options or {}) or None
        )
        opened.check_writable()  # StoreAccessError before any stage runs
        storage = result_storage(opened)
    except BaseException:
        if task_runner is None:
            tasks.__exit__(None, None, None)
        raise
    run = {
        "profile": profile,
        "overrides": list(overrides or ()),
        "store": opened.root,
        # A remote store's local cache: this process' for its own stages; under Ray each
        # node's default ($RLT_HOME/store-cache), as this path may not exist on other nodes.
        "cache_dir": str(opened.working) if opened.remote and runner != "ray" else None,
        "storage_options": dict(storage_options or {}) or None,
    }
    return Runner(run, cfg, opened, storage, tasks, runner)


@dataclass
class Planner:
    """Stands in for a Runner to plan a flow without running it (`rlt plan`): each stage call
    is looked up in the store (`rlt_core.stages.plan.plan_stage`) and answered with the cached
    artifact's ref, or with a pending ref that makes its downstream stages wait on it."""

    run: dict[str, Any]
    cfg: PipelineConfig
    index: StoreIndex
    rows: list[PlanRow] = field(default_factory=list)

    def __call__(self, task: Any, label: str, **inputs: Any) -> dict[str, str]:
        """The ref `task` would return, without running it; records the plan row."""
        if task.name not in STAGE_NAMES:  # the report: assembled after the stages, uncached
            return {"uri": "", "digest": "", "pending": label}
        recipe = inputs.pop("recipe", None)
        upstream, pending = {}, []
        for name, value in inputs.items():
            ref = value.get("ref", value) if isinstance(value, Mapping) else None
            if ref is not None and "pending" in ref:
                pending.append(ref["pending"])
            elif value is not None:
                upstream[name] = input_digest(value)
        row = plan_stage(label, task.name, self.cfg, recipe, upstream, pending, self.index)
        self.rows.append(row)
        if row.status == "cached":
            return {"uri": str(row.uri), "digest": str(row.digest)}
        return {"uri": "", "digest": "", "pending": label}

    def derive(self, extra_overrides: Sequence[str]) -> Planner:
        """A planner for the same store with more overrides (an ablation's variant)."""
        variant = start_plan(**_variant(self.run, extra_overrides))
        variant.index, variant.rows = self.index, self.rows  # one plan for the whole flow
        return variant


def start_plan(
    profile: str,
    overrides: Sequence[str] | None,
    store: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    strict_env: bool = False,
) -> Planner:
    """A Planner over `store` (read only: nothing is created or written)."""
    overrides = with_strict_env(overrides, strict_env)
    cfg = load_config(profile, list(overrides or ()))  # ConfigError before anything else
    check_store_uri(store, storage_options)
    root = store_root(store)
    run = {
        "profile": profile,
        "overrides": list(overrides or ()),
        "store": root,
        "storage_options": dict(storage_options or {}) or None,
    }
    return Planner(run, cfg, StoreIndex(root, storage_options))


def file_in(ref: Mapping[str, str] | PrefectFuture, name: str) -> Input:
    """A task input naming one file (or folder) inside an artifact (or the future of one:
    Prefect hands the task the finished ref)."""
    return {"ref": ref if isinstance(ref, PrefectFuture) else dict(ref), "file": name}


def stage_times(runner: Runner) -> list[dict[str, Any]]:
    """Per task run of the flow: its final state, its run time and when it started and ended
    (seconds after the first start), from Prefect's task-run records; then the sum of the
    stage times (`total`) and the flow's stage wall time (`wall`: first start to last end),
    which is shorter than the sum when stages ran side by side. Cached runs take 0 s."""
    ids = [future.task_run_id for _, future in runner.submitted]
    with get_client(sync_client=True) as client:
        found = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=ids)), limit=max(len(ids), 1)
        )
    records = {record.id: record for record in found}
    starts = [r.start_time for r in found if r.start_time and r.end_time]
    origin = min(starts) if starts else None
    rows = []
    for label, future in runner.submitted:
        record = records.get(future.task_run_id)
        start = record.start_time if record and record.end_time else None
        row: dict[str, Any] = {"stage": label, "state": future.state.name, "seconds": 0.0}
        row["start"] = row["end"] = None
        if start is not None and origin is not None:
            row["seconds"] = round((record.end_time - start).total_seconds(), 1)
            row["start"] = round((start - origin).total_seconds(), 1)
            row["end"] = round((record.end_time - origin).total_seconds(), 1)
        rows.append(row)
    total = round(sum(row["seconds"] for row in rows), 1)
    wall = max((row["end"] for row in rows if row["end"] is not None), default=0.0)
    summary = {"state": "", "start": None, "end": None}
    return [*rows, {"stage": "total", "seconds": total, **summary},
            {"stage": "wall", "seconds": wall, **summary}]  # fmt: skip


def publish_times(runner: Runner, key: str) -> list[dict[str, Any]]:
    """The stage-time table (`stage_times`) as a Prefect table artifact and in the log."""
    rows = stage_times(runner)
    create_table_artifact(rows, key=key, description="Time per stage of this flow run")
    total, wall = rows[-2]["seconds"], rows[-1]["seconds"]
    logger = get_run_logger()
    for row in rows[:-2]:
        logger.info("%s: %s, %.1f s", row["stage"], row["state"], row["seconds"])
    logger.info(
        "%d task runs: %.1f s of stage time in %.1f s of wall time (%s runner)",
        len(rows) - 2, total, wall, runner.kind,
    )  # fmt: skip
    return rows


def publish_report(runner: Runner, report: Mapping[str, str], key: str) -> str:
    """The report's markdown as a Prefect artifact (`key`), its figures inlined as data URIs so
    they render in the Prefect UI for a local and an `s3://` store alike, and each figure also
    as an image artifact (`<key>-figure-8`, `<key>-reward-curves`), which the opt-in React UI
    (/v2) renders too (its markdown drops data URIs; scripts/ui_figures.py checks both)."""
    local = runner.store.fetch(report)
    markdown = inline_images((local / REPORT_MD).read_text(), local)
    for name, suffix, text in (
        (FIGURE_8, "figure-8", "Figure 8: think-token lengths per trace source"),
        (REWARD_CURVES, "reward-curves", "teacher_rl reward terms per GRPO step"),
    ):
        if (local / name).is_file():
            create_image_artifact(data_uri(local / name), key=f"{key}-{suffix}", description=text)
    create_markdown_artifact(markdown, key=key, description="RLT experiment report")
    return markdown


def finish(runner: Runner, report: PrefectFuture, prefix: str) -> dict[str, Any]:
    """Wait for every task run (`Runner.result`: a failed stage raises its error), then
    publish the report (`<prefix>-report`) and the stage times (`<prefix>-stage-times`) as
    Prefect artifacts; the flow's return value."""
    report = runner.result(report)
    publish_report(runner, report, key=f"{prefix}-report")
    times = publish_times(runner, key=f"{prefix}-stage-times")
    return {"report": dict(report), "stage_times": times}


Caller = Runner | Planner  # what the flows' DAG functions call stages through


def print_plan(planner: Planner, *, as_json: bool = False) -> list[dict[str, Any]]:
    """Print the plan's rows (a table, or JSON with `as_json`) and return them as dicts."""
    rows = [row.to_dict() for row in planner.rows]
    if as_json:
        summary = {
            "profile": planner.run["profile"],
            "overrides": planner.run["overrides"],
            "store": planner.run["store"],
            "stages": rows,
            "cached": sum(r["status"] == "cached" for r in rows),
            "run": sum(r["status"] == "run" for r in rows),
        }
        print(json.dumps(summary, indent=2))
        return rows
    table = Table(title=f"rlt plan: {planner.run['profile']} on {planner.run['store']}")
    for column in ("stage run", "status", "key", "GPUs / CPUs", "why it runs (cached: made with)"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "[green]cached[/]" if row["status"] == "cached" else "[yellow]run[/]"
        why = "\n".join(row["reasons"])
        if row["environment"]:  # cached under other package versions: kept (lenient default)
            why = "made with " + ", ".join(row["environment"])
        given = f"{row['gpus']} / {row['cpus']}"
        table.add_row(escape(row["label"]), status, row["key"] or "—", given, escape(why))
    console = Console(width=max(Console().width, 140))
    console.print(table)
    cached = sum(r["status"] == "cached" for r in rows)
    console.print(f"{cached} cached, {len(rows) - cached} to run (the report is rebuilt after).")
    return rows
