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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.filesystems import RemoteFileSystem
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.options import (  # noqa: F401  (the flows' options, re-exported)
    JsonOption,
    OverridesOption,
    PlanOption,
    ProfileOption,
    RecipeOption,
    StoreOption,
)
from rlt_core.config import PipelineConfig, load_config
from rlt_core.reports import FIGURE_8, REPORT_MD
from rlt_core.stages.plan import PlanRow, StoreIndex, plan_stage
from rlt_core.stages.specs import STAGES
from rlt_core.store import ArtifactStore
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


@dataclass
class Runner:
    """Calls stage tasks for one run, with its result storage, and records time per stage."""

    run: dict[str, Any]
    cfg: PipelineConfig
    store: ArtifactStore
    storage: Path | RemoteFileSystem
    times: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, task: Any, label: str, **inputs: Any) -> dict[str, str]:
        """Run `task(run, **inputs)` as task run `label`; return its ref (raises if it failed)."""
        start = time.perf_counter()
        bound = task.with_options(result_storage=self.storage, task_run_name=label)
        state = bound(self.run, **inputs, return_state=True)
        ref = state.result()
        seconds = round(time.perf_counter() - start, 1)
        self.times.append({"stage": label, "state": state.name, "seconds": seconds})
        get_run_logger().info("%s: %s in %.1f s -> %s", label, state.name, seconds, ref["uri"])
        return ref

    def derive(self, extra_overrides: Sequence[str]) -> Runner:
        """A runner for the same store with more overrides (an ablation's variant)."""
        variant = start_run(
            **_variant(self.run, extra_overrides), cache_dir=self.run.get("cache_dir")
        )
        variant.times = self.times  # one timing table for the whole flow run
        return variant


def _variant(run: Mapping[str, Any], extra_overrides: Sequence[str]) -> dict[str, Any]:
    """The start_run / start_plan arguments of `run` with more overrides (a flow's variant)."""
    return {
        "profile": run["profile"],
        "overrides": [*run["overrides"], *extra_overrides],
        "store": run["store"],
        "storage_options": run.get("storage_options"),
    }


def start_run(
    profile: str,
    overrides: Sequence[str] | None,
    store: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
) -> Runner:
    """Validate the config, open the store and its result storage (module docstring)."""
    cfg = load_config(profile, list(overrides or ()))  # ConfigError before any task runs
    opened = ArtifactStore.open(
        store, cache_dir=cache_dir, storage_options=dict(storage_options or {}) or None
    )
    run = {
        "profile": profile,
        "overrides": list(overrides or ()),
        "store": opened.root,
        "cache_dir": str(opened.working) if opened.remote else None,
        "storage_options": dict(storage_options or {}) or None,
    }
    return Runner(run, cfg, opened, result_storage(opened))


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
) -> Planner:
    """A Planner over `store` (read only: nothing is created or written)."""
    cfg = load_config(profile, list(overrides or ()))  # ConfigError before anything else
    root = store if "://" in store else str(Path(store).expanduser().resolve())
    run = {
        "profile": profile,
        "overrides": list(overrides or ()),
        "store": root,
        "storage_options": dict(storage_options or {}) or None,
    }
    return Planner(run, cfg, StoreIndex(root, storage_options))


def file_in(ref: Mapping[str, str], name: str) -> Input:
    """A task input naming one file (or folder) inside an artifact."""
    return {"ref": dict(ref), "file": name}


def publish_times(runner: Runner, key: str) -> list[dict[str, Any]]:
    """The stage-time table as a Prefect table artifact (and the flow's log)."""
    total = round(sum(row["seconds"] for row in runner.times), 1)
    rows = [*runner.times, {"stage": "total", "state": "", "seconds": total}]
    create_table_artifact(rows, key=key, description="Time per stage of this flow run")
    return rows


def publish_report(runner: Runner, report: Mapping[str, str], key: str) -> str:
    """The report's markdown as a Prefect artifact, with a link artifact to its figure."""
    local = runner.store.fetch(report)
    markdown = (local / REPORT_MD).read_text()
    figure = local / FIGURE_8
    if figure.is_file():
        uri = f"{report['uri']}/{FIGURE_8}"
        create_link_artifact(uri, link_text="Figure 8 (think lengths, PNG)", key=f"{key}-figure")
        markdown = markdown.replace(f"]({FIGURE_8})", f"]({uri})")
    create_markdown_artifact(markdown, key=key, description="RLT experiment report")
    return markdown


def finish(runner: Runner, report: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Publish the report (`<prefix>-report`) and the stage times (`<prefix>-stage-times`) as
    Prefect artifacts; the flow's return value."""
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
    for column in ("stage run", "status", "key", "GPUs / CPUs", "why it runs"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "[green]cached[/]" if row["status"] == "cached" else "[yellow]run[/]"
        why = "\n".join(row["reasons"])
        given = f"{row['gpus']} / {row['cpus']}"
        table.add_row(escape(row["label"]), status, row["key"] or "—", given, escape(why))
    console = Console(width=max(Console().width, 140))
    console.print(table)
    cached = sum(r["status"] == "cached" for r in rows)
    console.print(f"{cached} cached, {len(rows) - cached} to run (the report is rebuilt after).")
    return rows
