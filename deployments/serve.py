"""Serve the RLT deployments from one process, against the Prefect server of PREFECT_API_URL.

    python -m deployments.serve [--profile tiny] [--store artifacts]

serves `rlt/full-pipeline`, `rlt/ablation`, `rlt/reward-rank` and `rlt/countdown-transfer`;
then, from any shell pointed at the same server:

    prefect deployment run rlt/full-pipeline --watch
    prefect deployment run rlt/ablation -p lam=0 --watch
    prefect deployment run rlt/full-pipeline -p profile=paper-7b -p 'overrides=["reward.lambda=1"]'

Each flow run executes in a child process of this one (working directory: where this was
started); `--limit` bounds how many run at once (1 by default: stages are memory-hungry).
Each run sends a heartbeat every 30 s; a run whose process died (this one killed, its node
lost) turns Crashed after `--crash-after` seconds without one (90), and the UI's Retry then
reruns it: finished stages are cache hits, a cut stage resumes (`deployments.zombies`).
Entrypoints are module paths (`flows.full_pipeline.full_pipeline`), so the flow modules import
as part of the `flows` package. With `--runner ray [--ray-address auto]` every deployment
runs its stages side by side on a Ray cluster by default; for a cluster, see
deployments/README.md (Ray, Kubernetes work pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import serve
from prefect.deployments.runner import EntrypointType

from deployments.zombies import (
    CRASH_AFTER_SECONDS,
    HEARTBEAT_SECONDS,
    TAG,
    ensure_zombie_automation,
)
from flows.ablation import ablation
from flows.countdown_transfer import countdown_transfer
from flows.full_pipeline import full_pipeline
from flows.options import RayAddressOption, RunnerOption
from flows.reward_rank import reward_rank
from rlt_core.store import check_store_uri

DEPLOYMENTS = {
    "full-pipeline": full_pipeline,
    "ablation": ablation,
    "reward-rank": reward_rank,
    "countdown-transfer": countdown_transfer,
}


def deployments(
    profile: str, store: str, runner: str = "sequential", ray_address: str | None = None
) -> list[Any]:
    """Every RLT deployment with `profile`, `store`, `runner` and `ray_address` as default
    parameters (a run can override each: `prefect deployment run ... -p runner=ray`)."""
    if "://" not in store:
        store = str(Path(store).expanduser().resolve())  # the same store from any run's cwd
    defaults = {"profile": profile, "store": store, "runner": runner}
    if ray_address:
        defaults["ray_address"] = ray_address
    return [
        flow.to_deployment(
            name=name,
            parameters=defaults,
            entrypoint_type=EntrypointType.MODULE_PATH,
            tags=[TAG],  # their runs' heartbeats are watched (deployments.zombies)
            description=(flow.fn.__doc__ or "").splitlines()[0],
        )
        for name, flow in DEPLOYMENTS.items()
    ]


def main(
    profile: Annotated[str, typer.Option(help="default profile of every deployment")] = "tiny",
    store: Annotated[str, typer.Option(help="default artifact store root")] = "artifacts",
    runner: RunnerOption = "sequential",
    ray_address: RayAddressOption = None,
    limit: Annotated[int, typer.Option(help="flow runs at once")] = 1,
    poll: Annotated[float, typer.Option(help="seconds between polls for scheduled runs")] = 2.0,
    crash_after: Annotated[
        float,
        typer.Option(help="seconds without a heartbeat after which a run is marked Crashed"),
    ] = CRASH_AFTER_SECONDS,
) -> None:
    """Serve the deployments until interrupted (SIGTERM or Ctrl-C). Every run sends a
    heartbeat; one whose process died turns Crashed (`deployments.zombies`) and can be retried
    from the UI."""
    check_store_uri(store)  # a bad default store fails here, not in every run
    ensure_zombie_automation(crash_after)
    serve(
        *deployments(profile, store, runner, ray_address),
        limit=limit,
        query_seconds=poll,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    )


if __name__ == "__main__":
    typer.run(main)
