"""Section 4.5, reward vs student quality, as the flow "rlt" (deployment `rlt/reward-rank`).

data -> teacher_sft -> rank_traces (`num_ranks` completions per pair from the SFT teacher,
ranked by the RLT reward into one dataset per rank) -> one student_sft per rank -> evaluate ->
the Pearson correlation between rank and student score (the paper: 16 ranks).

    python -m flows.reward_rank [--num-ranks 16] [--profile tiny] [--set key.path=value]
    python -m flows.reward_rank --plan [--json]   # what would run and why
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from prefect import flow

from flows.ablation import student_recipe
from flows.common import (
    Caller,
    JsonOption,
    OverridesOption,
    PlanOption,
    ProfileOption,
    RecipeOption,
    StoreOption,
    file_in,
    finish,
    print_plan,
    start_plan,
    start_run,
)
from flows.full_pipeline import MODEL
from rlt_core.stages.specs import DATA, RANK_TRACES
from tasks import stages


@flow(name="rlt", flow_run_name="reward-rank-{profile}")
def reward_rank(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    store: str = "artifacts",
    num_ranks: int = 16,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Students distilled from each reward rank; the rank-score correlation of section 4.5."""
    if num_ranks < 3:
        raise ValueError(f"num_ranks={num_ranks}: a correlation needs at least 3 ranks (paper: 16)")
    runner = start_run(profile, overrides, store).derive(rank_overrides(num_ranks))
    title = f"RLT reward rank vs student score ({profile})"
    report = rank_dag(runner, num_ranks, recipe, title=title)
    return finish(runner, report, "rlt-reward-rank")


def rank_overrides(num_ranks: int) -> list[str]:
    """One dataset per rank: `num_ranks` completions per pair."""
    return [f"generate_traces.num_candidates={num_ranks}"]


def rank_dag(runner: Caller, num_ranks: int, recipe: str | None, *, title: str) -> dict[str, str]:
    """The DAG of section 4.5 on `runner` (its config samples `num_ranks` per pair)."""
    recipe = student_recipe(runner, recipe)
    data = runner(stages.data, "data")
    corpus = file_in(data, DATA.outputs.corpus)
    warm = runner(stages.teacher_sft, "teacher_sft", corpus=corpus)
    ranked = runner(stages.rank_traces, "rank_traces", teacher=file_in(warm, MODEL), corpus=corpus)
    rows = []
    for rank in range(1, num_ranks + 1):
        student = runner(
            stages.student_sft,
            f"student_sft[{recipe}, rank {rank}]",
            recipe=recipe,
            dataset=file_in(ranked, RANK_TRACES.outputs.rank(rank)),
        )
        evaluation = runner(
            stages.evaluate,
            f"evaluate[rank {rank}]",
            model=file_in(student, MODEL),
            eval_dir=file_in(data, DATA.outputs.eval),
        )
        rows.append({"labels": {"Rank": str(rank)}, "rank": rank, "evaluation": evaluation})
    return runner(stages.report, "report", title=title, tables={"ranked": rows})


def main(
    num_ranks: Annotated[
        int, typer.Option(help="completions per pair = datasets (paper: 16)")
    ] = 16,
    profile: ProfileOption = "tiny",
    overrides: OverridesOption = None,
    store: StoreOption = "artifacts",
    recipe: RecipeOption = None,
    plan: PlanOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run the section 4.5 flow in this process (with --plan: print what it would run)."""
    if plan:
        planner = start_plan(profile, [*(overrides or []), *rank_overrides(num_ranks)], store)
        rank_dag(planner, num_ranks, recipe, title="plan")
        print_plan(planner, as_json=as_json)
        return
    reward_rank(
        profile=profile, overrides=overrides or [], store=store, num_ranks=num_ranks, recipe=recipe
    )


if __name__ == "__main__":
    typer.run(main)
