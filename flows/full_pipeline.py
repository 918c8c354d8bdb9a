"""The whole RLT DAG as the Prefect flow "rlt" (deployment `rlt/full-pipeline`).

    data -> teacher_sft -> teacher_rl -> generate_traces -> student_sft (RLT traces)
                                                         -> student_rl (cold start)
         -> student_sft (the corpus' own traces: the baseline of Table 1) -> student_rl
         -> student_rl from the base model (RL with no cold start, Table 2)
    every student, RL student and the base model -> evaluate -> report (Tables 1, 2, Figure 8)

Wiring only: each box is one task of `tasks.stages`, cached on its config, inputs and code, so
a second run with the same parameters is all cache hits and changing `reward.lambda` reruns
teacher_rl and what follows it but not data or teacher_sft.

    python -m flows.full_pipeline --profile tiny [--set key.path=value ...] [--store DIR]
"""

from __future__ import annotations

from typing import Any

import typer
from prefect import flow

from flows.common import (
    OverridesOption,
    ProfileOption,
    Runner,
    StoreOption,
    file_in,
    finish,
    start_run,
)
from rlt_core.stages.data import DATASET_FILES
from tasks import stages

TRACE_SOURCES = ("RLT", "corpus")  # Table 1: the teacher's traces vs the corpus' own R1 traces


def train_teacher(
    runner: Runner, data: dict[str, str], *, suffix: str = ""
) -> dict[str, dict[str, str]]:
    """teacher_sft (Appendix A.1) -> teacher_rl (Table 3) -> generate_traces (Appendix B.1).

    `suffix` tells the task runs of several variants apart in the UI (e.g. " [lambda = 0]").
    """
    corpus = file_in(data, "corpus.parquet")
    warm = runner(stages.teacher_sft, f"teacher_sft{suffix}", corpus=corpus)
    teacher = runner(stages.teacher_rl, f"teacher_rl{suffix}", teacher_sft=warm, corpus=corpus)
    traces = runner(
        stages.generate_traces,
        f"generate_traces{suffix}",
        teacher=file_in(teacher, "model"),
        corpus=corpus,
    )
    return {"teacher_sft": warm, "teacher_rl": teacher, "traces": traces}


def distil(
    runner: Runner, data: dict[str, str], traces: dict[str, str]
) -> dict[tuple[str, str], dict[str, str]]:
    """Students of every corpus recipe of `student_sft_runs`, on each trace source (Table 1)."""
    sources = {"RLT": file_in(traces, "traces.parquet"), "corpus": file_in(data, "corpus.parquet")}
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
    runner: Runner, data: dict[str, str], students: dict[tuple[str, str], dict[str, str]]
) -> dict[tuple[str, str], dict[str, str]]:
    """RL from each trace set's student and from the base model (Table 2)."""
    trained = {}
    for recipe in runner.cfg.student_rl_runs:
        rl = runner.cfg.student_rl[recipe]
        dataset = file_in(data, DATASET_FILES[rl.dataset])
        starts: dict[str, Any] = {"none": rl.model}  # "RL no cold-start"
        for source in TRACE_SOURCES:
            if (source, rl.cold_start) in students:
                starts[source] = file_in(students[source, rl.cold_start], "model")
        for source, start in starts.items():
            label = f"student_rl[{recipe}, cold start: {source}]"
            trained[source, recipe] = runner(
                stages.student_rl, label, recipe=recipe, start_model=start, dataset=dataset
            )
    return trained


def evaluate_all(
    runner: Runner, data: dict[str, str], models: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """Evaluate each model (label -> model input) on the profile's tasks (Table 7)."""
    eval_dir = file_in(data, "eval")
    return {
        label: runner(stages.evaluate, f"evaluate[{label}]", model=model, eval_dir=eval_dir)
        for label, model in models.items()
    }


def _short(model: str) -> str:
    return model.split(":")[-1].split("/")[-1]


def report_tables(
    runner: Runner,
    students: dict[tuple[str, str], dict[str, str]],
    trained: dict[tuple[str, str], dict[str, str]],
    evaluations: dict[str, dict[str, str]],
) -> dict[str, list[dict[str, Any]]]:
    """Table 1 (base model and each student) and Table 2 (each RL run) rows."""
    cfg = runner.cfg
    base = _short(cfg.student_sft[cfg.student_sft_runs[0]].model)
    table_1 = [{"labels": {"Model": base, "Traces": "—", "Student": base, "Data": "—"},
                "evaluation": evaluations["base"]}]  # fmt: skip
    for source, recipe in students:
        recipe_cfg = cfg.student_sft[recipe]
        labels = {
            "Model": f"{source}-{recipe}",
            "Traces": "RLT" if source == "RLT" else "corpus (R1 / search)",
            "Student": _short(recipe_cfg.model),
            "Data": f"{recipe} ({recipe_cfg.num_train_samples or 'all'})",
        }
        table_1.append({"labels": labels, "evaluation": evaluations[f"{source}-{recipe}"]})
    table_2 = [
        {
            "labels": {"Model": f"RL[{recipe}]", "Cold start": source},
            "evaluation": evaluations[f"rl-{source}-{recipe}"],
        }
        for source, recipe in trained
    ]
    return {"table_1": table_1, "table_2": table_2}


@flow(name="rlt", flow_run_name="full-pipeline-{profile}")
def full_pipeline(
    profile: str = "tiny", overrides: list[str] | None = None, store: str = "artifacts"
) -> dict[str, Any]:
    """The RLT pipeline end to end on `profile` (tiny, paper-7b, paper-32b or a YAML path).

    `overrides` are `key.path=value` strings (e.g. `reward.lambda=0`); `store` is the artifact
    store root, a local directory or `s3://bucket/prefix`.
    """
    runner = start_run(profile, overrides, store)
    data = runner(stages.data, "data")
    teacher = train_teacher(runner, data)
    students = distil(runner, data, teacher["traces"])
    trained = cold_start_rl(runner, data, students)
    base = runner.cfg.student_sft[runner.cfg.student_sft_runs[0]].model
    models: dict[str, Any] = {"base": base}
    models |= {f"{s}-{r}": file_in(ref, "model") for (s, r), ref in students.items()}
    models |= {f"rl-{s}-{r}": file_in(ref, "model") for (s, r), ref in trained.items()}
    evaluations = evaluate_all(runner, data, models)
    lengths = {"RLT": {"traces": teacher["traces"]}, "corpus": {"corpus": data}}
    tables = report_tables(runner, students, trained, evaluations)
    report = runner(
        stages.report, "report", title=f"RLT ({profile})", tables=tables, lengths=lengths
    )
    return finish(runner, report, "rlt")


def main(
    profile: ProfileOption = "tiny",
    overrides: OverridesOption = None,
    store: StoreOption = "artifacts",
) -> None:
    """Run the full pipeline flow in this process (against PREFECT_API_URL, if set)."""
    full_pipeline(profile=profile, overrides=overrides or [], store=store)


if __name__ == "__main__":
    typer.run(main)
