"""The whole RLT DAG as the Prefect flow "rlt" (deployment `rlt/full-pipeline`).

    data -> teacher_sft -> teacher_rl -> generate_traces -> student_sft (RLT traces)
                        -> teacher_eval (teacher_sft vs teacher_rl on held-out pairs)
                                                         -> student_rl (cold start)
         -> student_sft (the corpus' own traces: the baseline of Table 1) -> student_rl
         -> student_rl from the base model (RL with no cold start, Table 2)
            -> raw_traces (its raw answers) -> student_sft -> student_rl (Table 2's "RL
               cold-start (raw) + RL": a teacher trained with traditional RL)
               -> refine_traces (a chat model on an OpenAI-compatible endpoint reformats
                  them) -> student_sft -> student_rl (Table 2's "RL cold-start (GPT) + RL";
                  when no endpoint is configured, the report says it was not run and why)
    every student, RL student and the base model -> evaluate -> report (Tables 1, 2, Figure 8,
    the teacher's reward curves)

Wiring only: each box is one task of `tasks.stages`, cached on its config, inputs and code, so
a second run with the same parameters is all cache hits and changing `reward.lambda` reruns
teacher_rl and what follows it but not data or teacher_sft. File names come from the stages'
declarations (`rlt_core.stages.specs`), the report's tables from `rlt_core.reports`.

    python -m flows.full_pipeline --profile tiny [--set key.path=value ...] [--store DIR]
    python -m flows.full_pipeline --plan [--json] ...   # what would run and why (`rlt plan`)
"""

from __future__ import annotations

from typing import Any

import typer
from prefect import flow

from flows import common, options
from flows.plan import Caller, print_plan, start_plan
from flows.runners import RunnerKind
from flows.tables import (
    RL_GPT,
    RL_RAW,
    TRACE_SOURCES,
    pipeline_tables,
    rl_label,
    student_label,
)
from rlt_core.endpoint import endpoint_of
from rlt_core.stages.specs import DATA, GENERATE_TRACES, RAW_TRACES, TEACHER_RL
from tasks import stages

MODEL = TEACHER_RL.outputs.model  # every training stage's model folder (TrainedFiles)


def train_teacher(
    runner: Caller, data: dict[str, str], *, suffix: str = ""
) -> dict[str, dict[str, str]]:
    """teacher_sft (Appendix A.1) -> teacher_rl (Table 3) -> generate_traces (Appendix B.1),
    and teacher_eval: both teachers on held-out pairs, scored with the RLT reward (when an
    evaluation task has a table with solutions: `PipelineConfig.held_out_task`).

    `suffix` tells the task runs of several variants apart in the UI (e.g. " [lambda = 0]").
    """
    corpus = common.file_in(data, DATA.outputs.corpus)
    warm = runner(stages.teacher_sft, f"teacher_sft{suffix}", corpus=corpus)
    teacher = runner(stages.teacher_rl, f"teacher_rl{suffix}", teacher_sft=warm, corpus=corpus)
    traces = runner(
        stages.generate_traces,
        f"generate_traces{suffix}",
        teacher=common.file_in(teacher, MODEL),
        corpus=corpus,
    )
    held_out = None
    task = runner.cfg.held_out_task()
    if task is not None:  # a held-out table with solutions (else no teacher_eval)
        held_out = runner(
            stages.teacher_eval,
            f"teacher_eval{suffix}",
            teacher_sft=common.file_in(warm, MODEL),
            teacher_rl=common.file_in(teacher, MODEL),
            pairs=common.file_in(data, DATA.outputs.eval_table(task)),
        )
    return {"teacher_sft": warm, "teacher_rl": teacher, "traces": traces, "held_out": held_out}


def distil(
    runner: Caller, data: dict[str, str], traces: dict[str, str]
) -> dict[tuple[str, str], dict[str, str]]:
    """Students of every corpus recipe of `student_sft_runs`, on each trace source (Table 1)."""
    sources = {
        "RLT": common.file_in(traces, GENERATE_TRACES.outputs.traces),
        "corpus": common.file_in(data, DATA.outputs.corpus),
    }
    students = {}
    for recipe in runner.cfg.student_sft_runs:
        if runner.cfg.student_sft[recipe].dataset != "corpus":
            continue  # countdown recipes: flows.countdown_transfer
        for source, dataset in sources.items():
            label = f"student_sft[{recipe}, {source} traces]"
            students[source, recipe] = runner(
                stages.student_sft, label, recipe=recipe, dataset=dataset
            )
    return students


def cold_start_rl(
    runner: Caller, data: dict[str, str], students: dict[tuple[str, str], dict[str, str]]
) -> dict[tuple[str, str], dict[str, str]]:
    """RL from each trace set's student and from the base model (Table 2)."""
    trained = {}
    for recipe in runner.cfg.student_rl_runs:
        rl = runner.cfg.student_rl[recipe]
        dataset = common.file_in(data, DATA.outputs.dataset(rl.dataset))
        starts: dict[str, Any] = {"none": rl.model}  # "RL no cold-start"
        for source in TRACE_SOURCES:
            if (source, rl.cold_start) in students:
                starts[source] = common.file_in(students[source, rl.cold_start], MODEL)
        for source, start in starts.items():
            label = f"student_rl[{recipe}, cold start: {source}]"
            trained[source, recipe] = runner(
                stages.student_rl, label, recipe=recipe, start_model=start, dataset=dataset
            )
    return trained


def rl_teacher_baseline(
    runner: Caller, data: dict[str, str], trained: dict[tuple[str, str], Any]
) -> tuple[dict[tuple[str, str], Any], list[str]]:
    """Table 2's "RL cold-start (raw) + RL" and "RL cold-start (GPT) + RL" (section 4.3): the
    model RL trained from the base (`student_rl[..., cold start: none]`, a teacher trained
    with traditional RL) answers the corpus questions (`raw_traces`); a student is distilled
    from its raw answers with the cold-start recipe, then trained with RL again. For the GPT
    row the raw answers are first reformatted by a chat model on an OpenAI-compatible endpoint
    (`refine_traces`); with no endpoint configured that row is not run, and the returned notes
    say so (the report prints them)."""
    corpus = common.file_in(data, DATA.outputs.corpus)
    runs, notes = {}, []
    endpoint = endpoint_of(runner.cfg.refine_traces)
    for recipe in runner.cfg.student_rl_runs:
        rl = runner.cfg.student_rl[recipe]
        if rl.cold_start is None or ("none", recipe) not in trained:
            continue
        teacher = common.file_in(trained["none", recipe], MODEL)
        raw = runner(stages.raw_traces, f"raw_traces[{recipe}]", model=teacher, corpus=corpus)
        sources = {RL_RAW: (raw, "RL raw traces")}
        if isinstance(endpoint, str):
            notes.append(f"Table 2, RL[{recipe}] with cold start RL cold-start (GPT): not run: "
                         f"{endpoint}.")  # fmt: skip
        else:
            refined = runner(
                stages.refine_traces,
                f"refine_traces[{recipe}]",
                traces=common.file_in(raw, RAW_TRACES.outputs.traces),
            )
            sources[RL_GPT] = (refined, "RL GPT traces")
        for source, (traces, name) in sources.items():
            student = runner(
                stages.student_sft,
                f"student_sft[{rl.cold_start}, {name}]",
                recipe=rl.cold_start,
                dataset=common.file_in(traces, RAW_TRACES.outputs.traces),
            )
            runs[source, recipe] = runner(
                stages.student_rl,
                f"student_rl[{recipe}, cold start: {source}]",
                recipe=recipe,
                start_model=common.file_in(student, MODEL),
                dataset=common.file_in(data, DATA.outputs.dataset(rl.dataset)),
            )
    return runs, notes


def evaluate_all(
    runner: Caller, data: dict[str, str], models: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """Evaluate each model (label -> model input) on the profile's tasks (Table 7)."""
    eval_dir = common.file_in(data, DATA.outputs.eval)
    return {
        label: runner(stages.evaluate, f"evaluate[{label}]", model=model, eval_dir=eval_dir)
        for label, model in models.items()
    }


@flow(name="rlt", flow_run_name="full-pipeline-{profile}")
def full_pipeline(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    store: str = "artifacts",
    runner: RunnerKind = "sequential",
    ray_address: str | None = None,
    strict_env: bool = False,
) -> dict[str, Any]:
    """The RLT pipeline end to end on `profile` (tiny, paper-7b, paper-32b or a YAML path).

    `overrides` are `key.path=value` strings (e.g. `reward.lambda=0`); `store` is the artifact
    store root, a local directory or `s3://bucket/prefix`; `runner` is `sequential` (one
    stage at a time) or `ray` (independent stages side by side on the Ray cluster at
    `ray_address`, a local one if none; `flows.runners`).
    """
    return common.run_flow(
        lambda run: pipeline(run, title=f"RLT ({profile})"), "rlt", profile, overrides, store,
        runner=runner, ray_address=ray_address, strict_env=strict_env,
    )  # fmt: skip


def pipeline(runner: Caller, *, title: str) -> dict[str, str]:
    """The DAG of the full pipeline (module docstring) on `runner`; the report's ref."""
    data = runner(stages.data, "data")
    teacher = train_teacher(runner, data)
    students = distil(runner, data, teacher["traces"])
    trained = cold_start_rl(runner, data, students)
    baselines, notes = rl_teacher_baseline(runner, data, trained)
    trained |= baselines
    base = runner.cfg.student_sft[runner.cfg.student_sft_runs[0]].model
    models: dict[str, Any] = {"base": base}
    models |= {student_label(*run): common.file_in(ref, MODEL) for run, ref in students.items()}
    models |= {rl_label(*run): common.file_in(ref, MODEL) for run, ref in trained.items()}
    evaluations = evaluate_all(runner, data, models)
    lengths = {"RLT": {"traces": teacher["traces"]}, "corpus": {"corpus": data}}
    tables = pipeline_tables(runner.cfg, students, trained, evaluations)
    curves = {"RLT teacher": {"teacher_rl": teacher["teacher_rl"]}}
    held_out = {}
    if teacher["held_out"] is not None:
        held_out["RLT teacher"] = {"teacher_eval": teacher["held_out"]}
    return runner(stages.report, "report", title=title, tables=tables, lengths=lengths,
                  curves=curves, held_out=held_out, notes=notes)  # fmt: skip


def _plan_only(kwargs: dict[str, Any], *, plan: bool, as_json: bool) -> bool:
    """With --plan: print what the flow would run and why, and run nothing."""
    if not plan:
        return False
    planner = start_plan(
        kwargs["profile"], kwargs["overrides"], kwargs["store"], strict_env=kwargs["strict_env"]
    )
    pipeline(planner, title=f"RLT ({kwargs['profile']})")
    print_plan(planner, as_json=as_json)
    return True


main = options.flow_command(
    full_pipeline,
    "Run the full pipeline flow in this process (against PREFECT_API_URL, if set), or with "
    "--plan print what it would run and why, running nothing.",
    options={"plan": options.PlanOption, "as_json": options.JsonOption},
    before=_plan_only,
)


if __name__ == "__main__":
    typer.run(main)
