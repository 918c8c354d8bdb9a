"""What the flows share: starting a run and calling stage tasks through it (`Runner`), the
inputs that name a file of an artifact (`file_in`), and finishing a run (`finish`). Planning
without running is `flows.plan`, the stage-time table `flows.times`, the report's Prefect
artifacts `flows.publish`.

`start_run` validates the profile and overrides BEFORE any task runs (a bad key fails the flow
at once with the config's own message), opens the artifact store and picks where Prefect keeps
its cached task results: inside the store root (`<store>/.prefect-results`, a directory for a
local store, a saved RemoteFileSystem block for s3://), so that deleting a store also forgets
its cache and a remote store serves cache hits to every worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.filesystems import RemoteFileSystem
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import TaskRunner
from prefect.utilities.callables import get_call_parameters

from flows import runners
from flows.publish import publish_report
from flows.times import publish_times
from rlt_core import fit
from rlt_core.artifacts import digest_json
from rlt_core.config import PipelineConfig, load_config
from rlt_core.stages.specs import SPECS, check_config, fit_profile, spec_of
from rlt_core.store import ArtifactStore, check_store_uri
from tasks.runtime import Input

RESULTS_DIR = ".prefect-results"


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
        """This run's `stage_run_id` of a call."""
        return stage_run_id(self.cfg, stage, inputs)

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


def stage_run_id(cfg: PipelineConfig, stage: str, inputs: Mapping[str, Any]) -> str | None:
    """What identifies a stage run before its inputs exist (a Runner submits it once, a
    Planner plans it once): the config its key holds and each input as given (a future by its
    task run, a ref by its digest); None for a task that is not a stage."""
    if stage not in SPECS:
        return None
    spec = spec_of(stage)
    recipe = inputs.get("recipe")
    config = spec.key_config(**spec.config_args(cfg, recipe))
    given = {name: _identity(value) for name, value in inputs.items() if name != "recipe"}
    return digest_json({"stage": stage, "recipe": recipe, "config": config, "inputs": given})


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
    check_config(cfg)  # and what the stages' declarations refuse in it
    if not fit.ignored():
        fit.check_fit(fit_profile(cfg))  # FitError: a stage run cannot fit its GPUs
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


def file_in(ref: Mapping[str, str] | PrefectFuture, name: str) -> Input:
    """A task input naming one file (or folder) inside an artifact (or the future of one:
    Prefect hands the task the finished ref)."""
    return {"ref": ref if isinstance(ref, PrefectFuture) else dict(ref), "file": name}


def finish(runner: Runner, report: PrefectFuture, prefix: str) -> dict[str, Any]:
    """Wait for every task run (`Runner.result`: a failed stage raises its error), then
    publish the report (`<prefix>-report`) and the stage times (`<prefix>-stage-times`) as
    Prefect artifacts; the flow's return value."""
    report = runner.result(report)
    publish_report(runner.store, report, key=f"{prefix}-report")
    times = publish_times(runner.submitted, key=f"{prefix}-stage-times", runner=runner.kind)
    return {"report": dict(report), "stage_times": times}


def run_flow(
    dag: Callable[[Runner], PrefectFuture],
    prefix: str,
    profile: str,
    overrides: Sequence[str] | None,
    store: str,
    *,
    runner: str = "sequential",
    ray_address: str | None = None,
    strict_env: bool = False,
) -> dict[str, Any]:
    """A flow's body: start the run (`start_run`), build its DAG on it (`dag(run)` returns the
    report's future) and `finish` it (artifacts `<prefix>-report`, `<prefix>-stage-times`)."""
    with start_run(
        profile, overrides, store, runner=runner, ray_address=ray_address, strict_env=strict_env
    ) as run:
        return finish(run, dag(run), prefix)
