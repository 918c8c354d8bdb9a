"""Section 4.5, reward vs student quality, as the flow "rlt" (deployment `rlt/reward-rank`).

data -> teacher_sft -> rank_traces (`num_ranks` completions per pair from the SFT teacher,
ranked by the RLT reward into one dataset per rank) -> one student_sft per rank -> evaluate ->
the Pearson correlation between rank and student score (the paper: 16 ranks).

    python -m flows.reward_rank [--num-ranks 16] [--profile tiny] [--set key.path=value]
    rlt plan --flow reward-rank [--json]   # what 16 ranks would run and why
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from prefect import flow

from flows import common, options
from flows.ablation import student_recipe
from flows.full_pipeline import MODEL
from flows.plan import Caller
from flows.runners import RunnerKind
from flows.tables import rank_row, student_data
from rlt_core.config.reward import KlEstimator
from rlt_core.stages.specs import DATA, RANK_TRACES
from tasks import stages


@flow(name="rlt", flow_run_name="reward-rank-{profile}")
def reward_rank(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    store: str = "artifacts",
    num_ranks: int = 16,
    recipe: str | None = None,
    runner: RunnerKind = "sequential",
    ray_address: str | None = None,
    strict_env: bool = False,
    kl_estimator: KlEstimator | None = None,
) -> dict[str, Any]:
    """Students distilled from each reward rank; the rank-score correlation of section 4.5.

    `runner` / `ray_address`: where the stages run (`flows.runners`); with `ray` the rank
    students and their evaluations run side by side. `kl_estimator` sets the r_KL estimator
    the ranks are made with (None: the profile's `reward.kl_estimator`, the paper's 'sampled';
    the completions ranked here are the SFT teacher's own samples, where it estimates a KL).
    """
    if num_ranks < 3:
        raise ValueError(f"num_ranks={num_ranks}: a correlation needs at least 3 ranks (paper: 16)")
    estimator = [f"reward.kl_estimator={kl_estimator}"] if kl_estimator else []
    overrides = [*(overrides or []), *estimator, *rank_overrides(num_ranks)]

    def dag(run: common.Runner) -> Any:
        used = run.cfg.reward.kl_estimator
        title = f"RLT reward rank vs student score ({profile}, {used} KL estimator)"
        return rank_dag(run, num_ranks, recipe, title=title)

    return common.run_flow(
        dag, "rlt-reward-rank", profile, overrides, store,
        runner=runner, ray_address=ray_address, strict_env=strict_env,
    )  # fmt: skip


def rank_overrides(num_ranks: int) -> list[str]:
    """One dataset per rank: `num_ranks` completions per pair."""
    return [f"generate_traces.num_candidates={num_ranks}"]


def rank_dag(runner: Caller, num_ranks: int, recipe: str | None, *, title: str) -> dict[str, str]:
    """The DAG of section 4.5 on `runner` (its config samples `num_ranks` per pair)."""
    recipe = student_recipe(runner, recipe, "reward_rank_student")
    data = runner(stages.data, "data")
    corpus = common.file_in(data, DATA.outputs.corpus)
    warm = runner(stages.teacher_sft, "teacher_sft", corpus=corpus)
    ranked = runner(
        stages.rank_traces, "rank_traces", teacher=common.file_in(warm, MODEL), corpus=corpus
    )
    rows = []
    for rank in range(1, num_ranks + 1):
        student = runner(
            stages.student_sft,
            f"student_sft[{recipe}, rank {rank}]",
            recipe=recipe,
            dataset=common.file_in(ranked, RANK_TRACES.outputs.rank(rank)),
        )
        evaluation = runner(
            stages.evaluate,
            f"evaluate[rank {rank}]",
            model=common.file_in(student, MODEL),
            eval_dir=common.file_in(data, DATA.outputs.eval),
        )
        rows.append(rank_row(rank, evaluation, student_data(runner.cfg, recipe)))
    return runner(stages.report, "report", title=title, tables={"ranked": rows})


main = options.flow_command(
    reward_rank,
    "Run the section 4.5 flow in this process.",
    options={
        "num_ranks": Annotated[
            int, typer.Option(help="completions per pair = datasets (paper: 16)")
        ],
        "kl_estimator": Annotated[
            KlEstimator | None,
            typer.Option(
                help="r_KL estimator of the ranks: sampled (the paper's), k3 or full; default: "
                "the profile's reward.kl_estimator"
            ),
        ],
    },
)


if __name__ == "__main__":
    typer.run(main)
