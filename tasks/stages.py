"""One Prefect task per stage: resolve the run, call ONE rlt_core entry point, return its ref.

Every task is cached by `StageCache` (config section + input digests + rlt_core code), persists
its result as JSON, and retries only transient failures (`is_transient`). Inputs are upstream
refs, `{"ref": ..., "file": ...}` for one table inside an artifact, or model references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from rlt_core.reports import report_from_refs
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


@task(name="data", **STAGE_TASK)
def data(run: Run) -> dict[str, str]:
    """The data stage (corpus, eval sets, countdown, LIMR, think lengths)."""
    return execute("data", run, {})


@task(name="teacher_sft", **STAGE_TASK)
def teacher_sft(run: Run, corpus: Input) -> dict[str, str]:
    """Teacher warm-up in the RLT format (Appendix A.1)."""
    return execute("teacher_sft", run, {"corpus": corpus})


@task(name="teacher_rl", **STAGE_TASK)
def teacher_rl(run: Run, teacher_sft: Input | None, corpus: Input) -> dict[str, str]:
    """GRPO with the RLT reward (section 3, Table 3)."""
    return execute("teacher_rl", run, {"teacher_sft": teacher_sft, "corpus": corpus})


@task(name="generate_traces", **STAGE_TASK)
def generate_traces(run: Run, teacher: Input, corpus: Input) -> dict[str, str]:
    """The teacher explains every pair; the student dataset (section 4.1, Appendix B.1)."""
    return execute("generate_traces", run, {"teacher": teacher, "corpus": corpus})


@task(name="rank_traces", **STAGE_TASK)
def rank_traces(run: Run, teacher: Input, corpus: Input) -> dict[str, str]:
    """Completions per pair ranked by the RLT reward into datasets (section 4.5)."""
    return execute("rank_traces", run, {"teacher": teacher, "corpus": corpus})


@task(name="student_sft", **STAGE_TASK)
def student_sft(run: Run, recipe: str, dataset: Input) -> dict[str, str]:
    """Student distillation with a Table 5 recipe."""
    return execute("student_sft", run, {"dataset": dataset}, recipe)


@task(name="student_rl", **STAGE_TASK)
def student_rl(run: Run, recipe: str, start_model: Input, dataset: Input) -> dict[str, str]:
    """Traditional RL with correctness rewards, cold start or not (Table 6)."""
    return execute("student_rl", run, {"start_model": start_model, "dataset": dataset}, recipe)


@task(name="evaluate", **STAGE_TASK)
def evaluate(run: Run, model: Input, eval_dir: Input) -> dict[str, str]:
    """Lighteval pass@1 of one model (Table 7)."""
    return execute("evaluate", run, {"model": model, "eval_dir": eval_dir})


@task(name="teacher_eval", **STAGE_TASK)
def teacher_eval(run: Run, teacher_sft: Input, teacher_rl: Input, pairs: Input) -> dict[str, str]:
    """teacher_sft vs teacher_rl on held-out pairs, scored with the RLT reward (project)."""
    inputs = {"teacher_sft": teacher_sft, "teacher_rl": teacher_rl, "pairs": pairs}
    return execute("teacher_eval", run, inputs)


@task(name="raw_traces", **STAGE_TASK)
def raw_traces(run: Run, model: Input, corpus: Input) -> dict[str, str]:
    """A traditionally RL-trained model's raw answers as a distillation set (Table 2)."""
    return execute("raw_traces", run, {"model": model, "corpus": corpus})


@task(name="report", cache_policy=NO_CACHE, retries=2, retry_condition_fn=is_transient)
def report(
    run: Run,
    title: str,
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    lengths: Mapping[str, Mapping[str, Any]] | None = None,
    curves: Mapping[str, Mapping[str, Any]] | None = None,
    held_out: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """The experiment tables (Tables 1, 2, 9, section 4.5), Figure 8, the teachers' reward
    curves and their held-out comparison as a report artifact
    (`rlt_core.reports.report_from_refs`). Not cached by Prefect: the report artifact caches
    itself on its inputs' digests."""
    store = open_store(run)
    tasks = run_config(run).evaluate.tasks
    out = report_from_refs(store, title=title, tasks=tasks, tables=tables, lengths=lengths,
                           curves=curves, held_out=held_out)  # fmt: skip
    return store.publish(out.uri).to_dict()
