"""The `rlt` command: the library's commands (`rlt_core.cli`) plus `rlt plan`, which reads the
flows' DAGs and so lives beside them (rlt_core never imports the orchestration layer).

    rlt plan [--flow full-pipeline] [--profile tiny] [--set key.path=value ...] [--store DIR]
             [--json] [--strict-env]

For every stage run of the flow: its key and `cached`, or `run` and why (which config value,
input or module changed against the stage's nearest earlier artifact in the store, or which
upstream run has to go first). Nothing runs and nothing is written; no Prefect server needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.options import (
    JsonOption,
    OverridesOption,
    ProfileOption,
    StoreOption,
    StrictEnvOption,
)
from rlt_core.cli import app
from rlt_core.config import ConfigError
from rlt_core.store import StoreAccessError, StoreUnavailableError, StoreURIError

if TYPE_CHECKING:
    from flows.plan import Planner

FLOWS = ("full-pipeline", "ablation", "reward-rank", "countdown-transfer")


def plan_flow(
    flow: str,
    profile: str,
    overrides: list[str] | None,
    store: str,
    *,
    strict_env: bool = False,
    lam: float | None = 0.0,
    alpha: float | None = None,
    num_ranks: int = 16,
) -> Planner:
    """Plan `flow` as its command would run it with its defaults (ablation: `lam`, `alpha`;
    reward-rank: `num_ranks`), running nothing: the planner's rows and the report's inputs."""
    from flows import ablation, countdown_transfer, full_pipeline, reward_rank
    from flows.plan import start_plan

    extra = {
        "countdown-transfer": lambda: countdown_transfer.countdown_overrides(profile, overrides),
        "reward-rank": lambda: reward_rank.rank_overrides(num_ranks),
    }.get(flow, list)()
    planner = start_plan(profile, [*(overrides or []), *extra], store, strict_env=strict_env)
    if flow == "full-pipeline":
        full_pipeline.pipeline(planner, title="plan")
    elif flow == "ablation":
        ablation.ablation_dag(planner, lam, alpha, None, title="plan")
    elif flow == "reward-rank":
        reward_rank.rank_dag(planner, num_ranks, None, title="plan")
    elif flow == "countdown-transfer":
        countdown_transfer.countdown_dag(planner, title="plan")
    else:
        raise ValueError(f"unknown flow {flow!r}; the flows are {', '.join(FLOWS)}")
    return planner


@app.command()
def plan(
    flow: Annotated[str, typer.Option(help=f"one of {', '.join(FLOWS)}")] = "full-pipeline",
    profile: ProfileOption = "tiny",
    overrides: OverridesOption = None,
    store: StoreOption = "artifacts",
    as_json: JsonOption = False,
    strict_env: StrictEnvOption = False,
) -> None:
    """Print what a flow run would do on `store`: each stage cached, or run and why (and for
    a cached stage made under other package versions, which)."""
    from flows.plan import print_plan

    if flow not in FLOWS:
        raise typer.BadParameter(f"unknown flow {flow!r}; the flows are {', '.join(FLOWS)}")
    try:
        planner = plan_flow(flow, profile, overrides, store, strict_env=strict_env)
    except (ConfigError, StoreURIError, StoreAccessError, StoreUnavailableError) as error:
        typer.echo(f"error: {error}", err=True)  # what, why and the fix, without a traceback
        raise typer.Exit(2) from None
    print_plan(planner, as_json=as_json)


if __name__ == "__main__":
    app()
