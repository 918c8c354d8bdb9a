"""Print the time-per-stage table of the latest flow run (its Prefect table artifact): each
task run's state, seconds, start and end (seconds after the first start), then the sum of
the stage times and the wall time from the first start to the last end.

    python -m flows.times [rlt-stage-times]

Used by `make demo` after `prefect deployment run rlt/full-pipeline --watch`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from rich.console import Console
from rich.markup import escape
from rich.table import Table


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
