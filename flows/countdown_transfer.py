"""Section 4.4, zero-shot transfer to countdown, as the flow "rlt" (deployment
`rlt/countdown-transfer`): every bar of Figure 4 (left), on the countdown test set.

    (a) RLT zero-shot      the teacher trained with the RLT reward on the main corpus
                           (teacher_sft -> teacher_rl, the full pipeline's) explains the
                           countdown training pairs, never having trained on countdown; a
                           student is distilled from those traces (Table 5's `countdown` recipe)
    (b) RLT student        the full pipeline's student of the RLT's main-corpus traces (the
                           paper's RLT-7B: `experiments.transfer_student`, the 17K recipe), no
                           countdown training
    (c) corpus student     the full pipeline's student of the corpus' own traces (the paper's
                           Bespoke-7B, same recipe), no countdown training
    (d) CD RL              traditional RL on countdown from the base model (Table 6's
                           `countdown` recipe)
    (e) CD RL from (c)     the same RL from the cold-started corpus student

(b), (c) and every stage before them are the full pipeline's own stage runs (the same keys),
so a store where the pipeline ran serves them as cache hits. The report has the Figure 4 table
and bar chart and the overlap of the solved sets of (d) and (c), per question and both ways
(the paper: over 98.5%).

    python -m flows.countdown_transfer [--profile tiny] [--set key.path=value]
    rlt plan --flow countdown-transfer [--profile paper-7b]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from prefect import flow

from flows import common, options
from flows.full_pipeline import MODEL, distil
from flows.plan import Caller
from flows.runners import RunnerKind
from flows.tables import model_name, student_data, transfer_row
from rlt_core.config import load_config
from rlt_core.stages.specs import DATA, GENERATE_TRACES
from tasks import stages

RECIPE = "countdown"  # Table 5's and Table 6's countdown columns
# Figure 4 (left), in the order of its bars: the evaluate task runs are `evaluate[<label>]`.
ZERO_SHOT, RLT_STUDENT, CORPUS_STUDENT = "RLT zero-shot", "RLT student", "corpus student"
DIRECT_RL, CORPUS_RL = "CD RL", "CD RL from corpus student"
FIGURE_4 = (ZERO_SHOT, RLT_STUDENT, CORPUS_STUDENT, DIRECT_RL, CORPUS_RL)


def countdown_overrides(profile: str, overrides: Sequence[str] | None) -> list[str]:
    """The flow's own settings over the user's: countdown is the evaluation task; the student
    runs are the countdown recipe and `experiments.transfer_student` (so the fit check and
    `rlt plan` cover both); the RL runs the countdown recipe."""
    transfer = load_config(profile, list(overrides or ())).experiments.transfer_student
    sft_runs = ", ".join(dict.fromkeys((RECIPE, transfer)))
    return [
        f"student_sft_runs=[{sft_runs}]",
        f"student_rl_runs=[{RECIPE}]",
        "evaluate.tasks=[countdown]",
    ]


@flow(name="rlt", flow_run_name="countdown-transfer-{profile}")
def countdown_transfer(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    store: str = "artifacts",
    runner: RunnerKind = "sequential",
    ray_address: str | None = None,
    strict_env: bool = False,
) -> dict[str, Any]:
    """Figure 4 (left): RLT traces zero-shot on countdown vs the main corpus' students vs RL on
    countdown (section 4.4); `runner` / `ray_address`: where the stages run
    (`flows.runners`)."""
    overrides = [*(overrides or []), *countdown_overrides(profile, overrides)]
    title = f"RLT zero-shot transfer to countdown ({profile})"
    return common.run_flow(
        lambda run: countdown_dag(run, title=title), "rlt-countdown-transfer", profile,
        overrides, store, runner=runner, ray_address=ray_address, strict_env=strict_env,
    )  # fmt: skip


def countdown_dag(runner: Caller, *, title: str) -> dict[str, str]:
    """The DAG of section 4.4 on `runner` (its config carries `countdown_overrides`); the
    report."""
    data = runner(stages.data, "data")
    corpus = common.file_in(data, DATA.outputs.corpus)
    warm = runner(stages.teacher_sft, "teacher_sft", corpus=corpus)
    teacher = runner(stages.teacher_rl, "teacher_rl", teacher_sft=warm, corpus=corpus)
    zero_shot_traces = runner(
        stages.generate_traces,
        "generate_traces[countdown, zero-shot]",
        teacher=common.file_in(teacher, MODEL),
        corpus=common.file_in(data, DATA.outputs.countdown),
    )
    trained = figure_4_models(runner, data, teacher, zero_shot_traces)
    rows = []
    for label in FIGURE_4:
        evaluation = runner(
            stages.evaluate,
            f"evaluate[{label}]",
            model=common.file_in(trained[label], MODEL),
            eval_dir=common.file_in(data, DATA.outputs.eval),
        )
        rows.append(transfer_row(label, *_described(runner.cfg)[label], evaluation))
    by_label = {row["labels"]["Model"]: row for row in rows}
    return runner(
        stages.report,
        "report",
        title=title,
        tables={
            "figure_4": rows,
            "solved_overlap": [by_label[DIRECT_RL], by_label[CORPUS_STUDENT]],
        },
        lengths={
            "RLT (countdown, zero-shot)": {"traces": zero_shot_traces},
            "corpus": {"corpus": data},
        },
        curves={"RLT teacher": {"teacher_rl": teacher}},
    )


def figure_4_models(
    runner: Caller, data: Any, teacher: Any, zero_shot_traces: Any
) -> dict[str, Any]:
    """The five models of Figure 4 (left) by label: the student of the zero-shot traces, the
    full pipeline's own students of the main corpus (`full_pipeline.distil`: the same stage
    runs, so the same keys), and countdown RL from the base model and from the corpus
    student."""
    transfer = runner.cfg.experiments.transfer_student
    corpus_traces = runner(  # the full pipeline's generate_traces run
        stages.generate_traces, "generate_traces", teacher=common.file_in(teacher, MODEL),
        corpus=common.file_in(data, DATA.outputs.corpus),
    )  # fmt: skip
    students = distil(runner, data, corpus_traces)
    zero_shot = runner(
        stages.student_sft,
        f"student_sft[{RECIPE}, RLT countdown traces]",
        recipe=RECIPE,
        dataset=common.file_in(zero_shot_traces, GENERATE_TRACES.outputs.traces),
    )
    countdown = common.file_in(data, DATA.outputs.countdown)
    corpus_student = common.file_in(students["corpus", transfer], MODEL)
    starts = {DIRECT_RL: ("none", runner.cfg.student_rl[RECIPE].model),
              CORPUS_RL: ("corpus student", corpus_student)}  # fmt: skip
    rl = {
        label: runner(
            stages.student_rl,
            f"student_rl[{RECIPE}, cold start: {start}]",
            recipe=RECIPE,
            start_model=model,
            dataset=countdown,
        )  # fmt: skip
        for label, (start, model) in starts.items()
    }
    corpus_students = {RLT_STUDENT: students["RLT", transfer],
                       CORPUS_STUDENT: students["corpus", transfer]}  # fmt: skip
    return {ZERO_SHOT: zero_shot, **corpus_students, **rl}


def _described(cfg: Any) -> dict[str, tuple[str, str]]:
    """Each Figure 4 model's countdown training and what it trained on (the `Data` column)."""
    transfer = cfg.experiments.transfer_student
    base = model_name(cfg.student_rl[RECIPE].model)
    rl_data = f"{RECIPE} RL ({cfg.student_rl[RECIPE].num_train_samples or 'all'})"
    return {
        ZERO_SHOT: ("SFT on the RLT's countdown traces (zero-shot teacher)",
                    student_data(cfg, RECIPE)),
        RLT_STUDENT: ("none (RLT traces of the main corpus)", student_data(cfg, transfer)),
        CORPUS_STUDENT: ("none (the corpus' own traces)", student_data(cfg, transfer)),
        DIRECT_RL: (f"RL from {base}", rl_data),
        CORPUS_RL: ("RL from the corpus student", rl_data),
    }  # fmt: skip


main = options.flow_command(countdown_transfer, "Run the section 4.4 flow in this process.")


if __name__ == "__main__":
    typer.run(main)
