"""Section 4.4, zero-shot transfer to countdown, as the flow "rlt" (deployment
`rlt/countdown-transfer`).

The teacher trained with the RLT reward on the main corpus (teacher_sft -> teacher_rl, cached
from the full pipeline) explains the countdown training pairs without ever having trained on
countdown; a student distilled from those traces (the `countdown` recipe of Table 5) is compared
with traditional RL on countdown from the base model (the `countdown` recipe of Table 6) and
with RL from the distilled student, all evaluated on the countdown test set.

    python -m flows.countdown_transfer [--profile tiny] [--set key.path=value]
"""

from __future__ import annotations

from typing import Any

import typer
from prefect import flow

from flows import common, options
from flows.full_pipeline import MODEL
from flows.plan import Caller
from flows.runners import RunnerKind
from flows.tables import transfer_row
from rlt_core.stages.specs import DATA, GENERATE_TRACES
from tasks import stages

RECIPE = "countdown"
COUNTDOWN_RUNS = [
    f"student_sft_runs=[{RECIPE}]",
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
    """RLT traces zero-shot on countdown vs direct RL on countdown (section 4.4); `runner` /
    `ray_address`: where the stages run (`flows.runners`)."""
    overrides = [*(overrides or []), *COUNTDOWN_RUNS]
    title = f"RLT zero-shot transfer to countdown ({profile})"
    return common.run_flow(
        lambda run: countdown_dag(run, title=title), "rlt-countdown-transfer", profile,
        overrides, store, runner=runner, ray_address=ray_address, strict_env=strict_env,
    )  # fmt: skip


def countdown_dag(runner: Caller, *, title: str) -> dict[str, str]:
    """The DAG of section 4.4 on `runner` (its config carries COUNTDOWN_RUNS); the report."""
    data = runner(stages.data, "data")
    corpus = common.file_in(data, DATA.outputs.corpus)
    countdown = common.file_in(data, DATA.outputs.countdown)
    warm = runner(stages.teacher_sft, "teacher_sft", corpus=corpus)
    teacher = runner(stages.teacher_rl, "teacher_rl", teacher_sft=warm, corpus=corpus)
    traces = runner(
        stages.generate_traces,
        "generate_traces[countdown, zero-shot]",
        teacher=common.file_in(teacher, MODEL),
        corpus=countdown,
    )
    student = runner(
        stages.student_sft,
        f"student_sft[{RECIPE}, RLT traces]",
        recipe=RECIPE,
        dataset=common.file_in(traces, GENERATE_TRACES.outputs.traces),
    )
    rl = runner.cfg.student_rl[RECIPE]
    direct = runner(
        stages.student_rl,
        f"student_rl[{RECIPE}, cold start: none]",
        recipe=RECIPE,
        start_model=rl.model,
        dataset=countdown,
    )
    after = runner(
        stages.student_rl,
        f"student_rl[{RECIPE}, cold start: RLT traces]",
        recipe=RECIPE,
        start_model=common.file_in(student, MODEL),
        dataset=countdown,
    )
    models = [  # (Model, Cold start, model input): the rows of the section 4.4 comparison
        ("RLT traces, SFT", "—", common.file_in(student, MODEL)),
        ("RL", "none", common.file_in(direct, MODEL)),
        ("RLT traces + RL", "RLT traces", common.file_in(after, MODEL)),
    ]
    rows = []
    for name, cold_start, model in models:
        evaluation = runner(
            stages.evaluate,
            f"evaluate[{name}]",
            model=model,
            eval_dir=common.file_in(data, DATA.outputs.eval),
        )
        rows.append(transfer_row(name, cold_start, evaluation))
    return runner(
        stages.report,
        "report",
        title=title,
        tables={"table_2": rows},
        lengths={"RLT (countdown, zero-shot)": {"traces": traces}, "corpus": {"corpus": data}},
        curves={"RLT teacher": {"teacher_rl": teacher}},
    )


main = options.flow_command(countdown_transfer, "Run the section 4.4 flow in this process.")


if __name__ == "__main__":
    typer.run(main)
