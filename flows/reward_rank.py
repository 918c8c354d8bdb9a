"""Section 4.5, reward vs student quality, as the flow "rlt" (deployment `rlt/reward-rank`).

data -> teacher_sft -> rank_traces (`num_ranks` completions per pair from the SFT teacher,
ranked by the RLT reward into one dataset per rank) -> one student_sft per rank -> evaluate ->
the Pearson correlation between rank and student score (the paper: 16 ranks).

    python -m flows.reward_rank [--num-ranks 16] [--profile tiny] [--set key.path=value]
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from prefect import flow

from flows.ablation import student_recipe
from flows.common import (
    OverridesOption,
    ProfileOption,
    RecipeOption,
    StoreOption,
    file_in,
    finish,
    start_run,
)
from rlt_core.stages.rank_traces import rank_file
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
    base = start_run(profile, overrides, store)
    runner = base.derive([f"generate_traces.num_candidates={num_ranks}"])
    recipe = student_recipe(runner, recipe)
    data = runner(stages.data, "data")
    corpus = file_in(data, "corpus.parquet")
    warm = runner(stages.teacher_sft, "teacher_sft", corpus=corpus)
    ranked = runner(
        stages.rank_traces, "rank_traces", teacher=file_in(warm, "model"), corpus=corpus
    )
    rows = []
    for rank in range(1, num_ranks + 1):
        student = runner(
            stages.student_sft,
            f"student_sft[{recipe}, rank {rank}]",
            recipe=recipe,
            dataset=file_in(ranked, rank_file(rank)),
        )
        evaluation = runner(
            stages.evaluate,
            f"evaluate[rank {rank}]",
            model=file_in(student, "model"),
            eval_dir=file_in(data, "eval"),
        )
        rows.append({"labels": {"Rank": str(rank)}, "rank": rank, "evaluation": evaluation})
    report = runner(
        stages.report,
        "report",
        title=f"RLT reward rank vs student score ({profile})",
        tables={"ranked": rows},
    )
    return finish(runner, report, "rlt-reward-rank")


def main(
    num_ranks: Annotated[
        int, typer.Option(help="completions per pair = datasets (paper: 16)")
    ] = 16,
    profile: ProfileOption = "tiny",
    overrides: OverridesOption = None,
    store: StoreOption = "artifacts",
    recipe: RecipeOption = None,
) -> None:
    """Run the section 4.5 flow in this process."""
    reward_rank(
        profile=profile, overrides=overrides or [], store=store, num_ranks=num_ranks, recipe=recipe
    )


if __name__ == "__main__":
    typer.run(main)
