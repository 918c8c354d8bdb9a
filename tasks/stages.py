"""One Prefect task per stage, built from its declaration (`rlt_core.stages.specs`): resolve
the run, call ONE rlt_core entry point, return its ref.

`stage_task(spec)` makes the task: named after the stage, its parameters the run, the recipe
(a stage with a `recipe_section`) and the declared inputs by name, described by the
declaration's `summary`, tagged `rlt-stage` and `rlt-<runs>` (e.g. a Prefect concurrency limit
on `rlt-launch` keeps one training launch per machine). Every stage task is cached by
`StageCache` (config section + input digests + rlt_core code), persists its result as JSON,
and retries only transient failures (`is_transient`). Inputs are upstream refs,
`{"ref": ..., "file": ...}` for one table inside an artifact, or model references.

`task_of(name)` is the task of a declared stage, built once; `stages.<name>` (e.g.
`stages.teacher_rl`) is the same task, as the flows call it. A new stage needs nothing here.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from rlt_core.reports import report_from_refs
from rlt_core.stages.specs import SPECS, StageSpec, spec_of
from tasks.runtime import (
    Input,
    Run,
    StageCache,
    execute,
    is_transient,
    open_store,
    retry_delay_seconds,
    run_config,
)

STAGE_TASK: dict[str, Any] = {
    "cache_policy": StageCache(),
    "persist_result": True,
    "result_serializer": "json",
    "retries": 2,
    "retry_delay_seconds": retry_delay_seconds(),
    "retry_condition_fn": is_transient,
}


def stage_task(spec: StageSpec[Any]) -> Task[..., dict[str, str]]:
    """The cached Prefect task of one stage (module docstring)."""

    def run_stage(run: Run, **given: Any) -> dict[str, str]:
        recipe = given.pop("recipe", None)
        return execute(spec.name, run, given, recipe)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("run", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Run)]
    if spec.recipe_section is not None:
        parameters.append(inspect.Parameter("recipe", keyword, annotation=str))
    for given in spec.inputs:
        default = None if given.optional else inspect.Parameter.empty
        annotation = Input | None if given.optional else Input
        parameters.append(inspect.Parameter(given.name, keyword, default=default,
                                            annotation=annotation))  # fmt: skip
    # Prefect reads a task's parameters (the UI, its cache policy, Ray's upstream refs) from
    # its function's signature: the declared one, not `**given`.
    run_stage.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, str])  # type: ignore[attr-defined]
    run_stage.__name__ = run_stage.__qualname__ = spec.name
    run_stage.__doc__ = spec.summary
    return task(
        name=spec.name,
        description=spec.summary,
        tags={"rlt-stage", f"rlt-{spec.runs}"},
        **STAGE_TASK,
    )(run_stage)


_BUILT: dict[int, tuple[StageSpec[Any], Task[..., dict[str, str]]]] = {}


def task_of(stage: str) -> Task[..., dict[str, str]]:
    """The task of the declared stage `stage` (`stage_task`, built once per declaration)."""
    spec = spec_of(stage)
    built = _BUILT.get(id(spec))
    if built is None or built[0] is not spec:
        built = _BUILT[id(spec)] = (spec, stage_task(spec))
    return built[1]


def __getattr__(name: str) -> Task[..., dict[str, str]]:
    """`stages.<stage>`: the task of a declared stage (`task_of`)."""
    if name in SPECS:
        return task_of(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@task(name="report", cache_policy=NO_CACHE, retries=2, retry_condition_fn=is_transient)
def report(
    run: Run,
    title: str,
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    lengths: Mapping[str, Mapping[str, Any]] | None = None,
    curves: Mapping[str, Mapping[str, Any]] | None = None,
    held_out: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, str]:
    """The experiment tables (Tables 1, 2, 9, section 4.5), Figure 8, the teachers' reward
    curves and their held-out comparison as a report artifact, with `notes` (what the flow did
    not run, and why)
    (`rlt_core.reports.report_from_refs`). Not cached by Prefect: the report artifact caches
    itself on its inputs' digests."""
    store = open_store(run)
    tasks = run_config(run).evaluate.tasks
    out = report_from_refs(store, title=title, tasks=tasks, tables=tables, lengths=lengths,
                           curves=curves, held_out=held_out, notes=notes)  # fmt: skip
    return store.publish(out.uri).to_dict()
