"""Reward ablations (Table 9, Appendix D) as the flow "rlt" (deployment `rlt/ablation`).

For the full reward and each ablated one (lambda = 0 drops the KL term r_KL; alpha = 0 drops the
min/max terms of Eq. 3-4): teacher_rl -> generate_traces -> student_sft -> evaluate, then
Table 9 with the think lengths of each variant's traces, every variant's reward curves in one
figure, and each variant's teacher against teacher_sft on held-out pairs (teacher_eval: the
RLT reward and the solution-copy share, Appendix D's drift without r_KL). data and
teacher_sft do not read the reward, so every variant shares them (cache hits), and the
full-reward variant is the full pipeline's own teacher when that already ran.

    python -m flows.ablation --lambda 0 [--alpha 0] [--profile tiny] [--set key.path=value]
    rlt plan --flow ablation [--json]   # what the defaults (--lambda 0) would run and why
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from prefect import flow

from flows import common, options
from flows.full_pipeline import MODEL, train_teacher
from flows.plan import Caller
from flows.runners import RunnerKind
from flows.tables import ablation_row, student_data
from rlt_core.stages.specs import DATA, GENERATE_TRACES
from tasks import stages


def variants(base: Caller, lam: float | None, alpha: float | None) -> dict[str, Caller]:
    """The full reward and each requested ablation, by their Table 9 label."""
    reward = base.cfg.reward
    runs = {f"full (lambda = {reward.lam:g}, alpha = {reward.alpha:g})": base}
    if lam is not None:
        runs[f"lambda = {lam:g}"] = base.derive([f"reward.lambda={lam}"])
    if alpha is not None:
        runs[f"alpha = {alpha:g}"] = base.derive([f"reward.alpha={alpha}"])
    return runs


def student_recipe(runner: Caller, recipe: str | None, experiment: str) -> str:
    """The student_sft recipe of an experiment flow's students: `recipe` when the flow is given
    one, else the profile's `experiments.<experiment>` (the paper's: `full`, the 17K recipe
    of Table 5). ConfigError-style ValueError for a recipe the profile does not have."""
    chosen = recipe or getattr(runner.cfg.experiments, experiment)
    if chosen not in runner.cfg.student_sft:
        raise ValueError(
            f"recipe={chosen!r} is not a student_sft recipe of this profile "
            f"({', '.join(runner.cfg.student_sft)}): pass one of those, or set "
            f"experiments.{experiment}."
        )
    return chosen


@flow(name="rlt", flow_run_name="ablation-{profile}")
def ablation(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    store: str = "artifacts",
    lam: float | None = 0.0,
    alpha: float | None = None,
    recipe: str | None = None,
    runner: RunnerKind = "sequential",
    ray_address: str | None = None,
    strict_env: bool = False,
) -> dict[str, Any]:
    """Table 9: students of the full and the ablated rewards' teachers, side by side.

    `lam` / `alpha`: the ablated values (None skips that ablation); `recipe`: the student_sft
    recipe (default: the profile's `experiments.ablation_student`, the paper's 17K recipe
    `full`); `runner` / `ray_address`: where the
    stages run (`flows.runners`; with `ray` the variants' teachers train side by side).
    """
    if lam is None and alpha is None:
        raise ValueError("nothing to ablate: give lam (e.g. 0) and/or alpha (e.g. 0)")
    title = f"RLT reward ablations ({profile})"
    return common.run_flow(
        lambda base: ablation_dag(base, lam, alpha, recipe, title=title), "rlt-ablation",
        profile, overrides, store, runner=runner, ray_address=ray_address, strict_env=strict_env,
    )  # fmt: skip


def ablation_dag(
    base: Caller, lam: float | None, alpha: float | None, recipe: str | None, *, title: str
) -> dict[str, str]:
    """The DAG of the ablation flow on `base` (one teacher per reward variant); the report."""
    recipe = student_recipe(base, recipe, "ablation_student")
    students = student_data(base.cfg, recipe)  # the Data column: the same for every variant
    data = base(stages.data, "data")
    rows, lengths, curves, held_out = [], {}, {}, {}
    for label, runner in variants(base, lam, alpha).items():
        teacher = train_teacher(runner, data, suffix=f" [{label}]")
        student = runner(
            stages.student_sft,
            f"student_sft[{recipe}, {label}]",
            recipe=recipe,
            dataset=common.file_in(teacher["traces"], GENERATE_TRACES.outputs.traces),
        )
        evaluation = runner(
            stages.evaluate,
            f"evaluate[{label}]",
            model=common.file_in(student, MODEL),
            eval_dir=common.file_in(data, DATA.outputs.eval),
        )
        rows.append(ablation_row(label, evaluation, teacher["traces"], students))
        lengths[label] = {"traces": teacher["traces"]}
        curves[label] = {"teacher_rl": teacher["teacher_rl"]}
        if teacher["held_out"] is not None:
            held_out[label] = {"teacher_eval": teacher["held_out"]}
    return base(stages.report, "report", title=title, tables={"table_9": rows}, lengths=lengths,
                curves=curves, held_out=held_out)  # fmt: skip


def _one_ablation(kwargs: dict[str, Any]) -> bool:
    if kwargs["lam"] is None and kwargs["alpha"] is None:
        raise typer.BadParameter("give --lambda and/or --alpha (e.g. --lambda 0)")
    return False


main = options.flow_command(
    ablation,
    "Run the Table 9 ablation flow in this process: `--lambda 0` and/or `--alpha 0`.",
    options={
        "lam": Annotated[
            float | None, typer.Option("--lambda", help="ablated lambda (Eq. 5), e.g. 0")
        ],
        "alpha": Annotated[float | None, typer.Option(help="ablated alpha (Eq. 3-4), e.g. 0")],
    },
    defaults={"lam": None},  # on the command line an ablation is named, never implied
    before=_one_ablation,
)


if __name__ == "__main__":
    typer.run(main)
