"""Time per stage of a flow run, from Prefect's task-run records: measured at the end of a run
(`stage_times`), published as a table artifact and in the log (`publish_times`), and printed
for the latest run (`main`): each task run's state, seconds, start and end (seconds after the
first start), then the sum of the stage times and the wall time from the first start to the
last end.

    python -m flows.times [rlt-stage-times]

Used by `make demo` after `prefect deployment run rlt/full-pipeline --watch`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.futures import PrefectFuture
from rich.console import Console
from rich.markup import escape
from rich.table import Table

Submitted = Sequence[tuple[str, PrefectFuture]]  # a flow run's task runs: (label, future)


def stage_times(submitted: Submitted) -> list[dict[str, Any]]:
    """Per task run of the flow (`submitted`, `flows.common.Runner.submitted`): its final
    state, its run time and when it started and ended (seconds after the first start), from
    Prefect's task-run records; then the sum of the stage times (`total`) and the flow's stage
    wall time (`wall`: first start to last end), which is shorter than the sum when stages ran
    side by side. Cached runs take 0 s."""
    ids = [future.task_run_id for _, future in submitted]
    with get_client(sync_client=True) as client:
        found = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=ids)), limit=max(len(ids), 1)
        )
    records = {record.id: record for record in found}
    starts = [r.start_time for r in found if r.start_time and r.end_time]
    origin = min(starts) if starts else None
    rows = []
    for label, future in submitted:
        record = records.get(future.task_run_id)
        start = record.start_time if record and record.end_time else None
        row: dict[str, Any] = {"stage": label, "state": future.state.name, "seconds": 0.0}
        row["start"] = row["end"] = None
        if start is not None and origin is not None:
            row["seconds"] = round((record.end_time - start).total_seconds(), 1)
            row["start"] = round((start - origin).total_seconds(), 1)
            row["end"] = round((record.end_time - origin).total_seconds(), 1)
        rows.append(row)
    total = round(sum(row["seconds"] for row in rows), 1)
    wall = max((row["end"] for row in rows if row["end"] is not None), default=0.0)
    summary = {"state": "", "start": None, "end": None}
    return [*rows, {"stage": "total", "seconds": total, **summary},
            {"stage": "wall", "seconds": wall, **summary}]  # fmt: skip


def publish_times(submitted: Submitted, key: str, runner: str) -> list[dict[str, Any]]:
    """The stage-time table (`stage_times`) as a Prefect table artifact and in the log
    (`runner`: the task runner's kind)."""
    rows = stage_times(submitted)
    create_table_artifact(rows, key=key, description="Time per stage of this flow run")
    total, wall = rows[-2]["seconds"], rows[-1]["seconds"]
    logger = get_run_logger()
    for row in rows[:-2]:
        logger.info("%s: %s, %.1f s", row["stage"], row["state"], row["seconds"])
    logger.info(
        "%d task runs: %.1f s of stage time in %.1f s of wall time (%s runner)",
        len(rows) - 2, total, wall, runner,
    )  # fmt: skip
    return rows


def latest_table(key: str) -> list[dict]:
    """The rows of the newest table artifact named `key` (an empty list when there is none)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    if not found:
        return []
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else list(data)


def main(
    key: Annotated[str, typer.Argument(help="table artifact key")] = "rlt-stage-times",
) -> None:
    """Print the table, or say that no run has published it yet."""
    rows = latest_table(key)
    console = Console()
    if not rows:
        console.print(f"no artifact {key!r} yet: run a flow first")
        raise typer.Exit(1)
    table = Table(title=f"time per stage ({key})")
    for column in ("stage", "state", "seconds", "start", "end"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right")
    for row in rows:
        when = [row.get(edge) for edge in ("start", "end")]  # seconds after the first start
        table.add_row(
            escape(str(row["stage"])),
            str(row["state"]),
            f"{row['seconds']:.1f}",
            *("" if at is None else f"{at:.1f}" for at in when),
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
