"""What the flows share: starting a run, calling stage tasks with timing, publishing reports.

`start_run` validates the profile and overrides BEFORE any task runs (a bad key fails the flow
at once with the config's own message), opens the artifact store and picks where Prefect keeps
its cached task results: inside the store root (`<store>/.prefect-results`, a directory for a
local store, a saved RemoteFileSystem block for s3://), so that deleting a store also forgets
its cache and a remote store serves cache hits to every worker.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.filesystems import RemoteFileSystem

from rlt_core.config import PipelineConfig, load_config
from rlt_core.store import ArtifactStore
from tasks.runtime import Input

RESULTS_DIR = ".prefect-results"

# The command-line options every flow module's `main` shares (typer).
ProfileOption = Annotated[str, typer.Option(help="tiny, paper-7b, paper-32b or a YAML path")]
OverridesOption = Annotated[
    list[str] | None, typer.Option("--set", help="key.path=value; repeatable")
]
StoreOption = Annotated[str, typer.Option(help="artifact store: a directory or s3://...")]
RecipeOption = Annotated[str | None, typer.Option(help="student_sft recipe")]


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
            self.run["profile"], [*self.run["overrides"], *extra_overrides], self.run["store"],
            storage_options=self.run.get("storage_options"), cache_dir=self.run.get("cache_dir"),
        )  # fmt: skip
        variant.times = self.times  # one timing table for the whole flow run
        return variant


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
    markdown = (local / "report.md").read_text()
    figure = local / "think_lengths.png"
    if figure.is_file():
        uri = f"{report['uri']}/think_lengths.png"
        create_link_artifact(uri, link_text="Figure 8 (think lengths, PNG)", key=f"{key}-figure")
        markdown = markdown.replace("](think_lengths.png)", f"]({uri})")
    create_markdown_artifact(markdown, key=key, description="RLT experiment report")
    return markdown


def finish(runner: Runner, report: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Publish the report (`<prefix>-report`) and the stage times (`<prefix>-stage-times`) as
    Prefect artifacts; the flow's return value."""
    publish_report(runner, report, key=f"{prefix}-report")
    times = publish_times(runner, key=f"{prefix}-stage-times")
    return {"report": dict(report), "stage_times": times}
