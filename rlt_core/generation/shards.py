"""Sharded generation over a table of question-solution pairs, resumable shard by shard.

Both generation stages (generate_traces, rank_traces) read the corpus pairs (`read_pairs`) and
write their samples as `shards/part-NNNNN.parquet`, each shard written atomically, so a killed
run resumes at the first missing shard (`fill_shards`). Shard `n` is sampled with the seed
`seed + n`, so a resumed run gives every row what an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from rlt_core import artifacts
from rlt_core.data import read_table
from rlt_core.data.sources import is_text, require_columns
from rlt_core.generation.engine import Engine
from rlt_core.layout import TraceFiles

PAIR_COLUMNS = ("id", "question", "solution")
SHARDS = TraceFiles.shards  # the same folder name in rank_traces (RankFiles.shards)


def read_pairs(corpus: str | Path) -> pd.DataFrame:
    """The corpus rows to explain: id (str), question and solution, plus the other columns.

    The corpus' own `thought` (the baseline trace) is dropped: the teacher's explanation takes
    its place. Raises ValueError for missing columns, blank questions or solutions (named by
    id: the teacher explains a given solution, section 3.2) and repeated ids.
    """
    table = read_table(str(corpus))
    require_columns(
        table,
        PAIR_COLUMNS,
        source=str(corpus),
        hint="generate_traces reads the corpus contract (rlt_core.data.corpus): pass the data "
        "stage's corpus.parquet, or rename your columns to these.",
    )
    table = table.drop(columns=[c for c in ("thought",) if c in table.columns])
    table = table.assign(id=table["id"].astype(str)).reset_index(drop=True)
    blank = [
        row.id
        for row in table.itertuples(index=False)
        if not is_text(row.question) or not is_text(row.solution)
    ]
    if blank:
        raise ValueError(
            f"{corpus}: {len(blank)} row(s) without question or solution, ids {blank[:10]}; the "
            "teacher explains a given solution (section 3.2). Drop or fill them (the data stage's "
            "lenient validation drops and counts them)."
        )
    repeated = table["id"][table["id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"{corpus}: repeated ids {repeated[:10]}; ids must be unique.")
    return table


def shard_path(out: Path, number: int) -> Path:
    """Where shard `number` of a run is written."""
    return out / SHARDS / f"part-{number:05d}.parquet"


def missing_shards(rows: pd.DataFrame, shard_size: int, out: Path) -> list[int]:
    """The numbers of the shards of `rows` not yet written under `out` (a resumed run skips
    the others)."""
    count = -(-len(rows) // shard_size)  # ceil
    return [n for n in range(count) if not shard_path(out, n).is_file()]


def shard_rows(rows: pd.DataFrame, shard_size: int, number: int) -> pd.DataFrame:
    """The rows of shard `number`."""
    return rows.iloc[number * shard_size : (number + 1) * shard_size]


def write_shard(table: pd.DataFrame, out: Path, number: int) -> None:
    """Write shard `number` atomically (a killed run never leaves a partial shard)."""
    artifacts.write_atomic(shard_path(out, number), lambda tmp: table.to_parquet(tmp, index=False))


def fill_shards(
    rows: pd.DataFrame,
    shard_size: int,
    out: Path,
    open_engine: Callable[[], Engine],
    make_shard: Callable[[Engine, pd.DataFrame, int], pd.DataFrame],
    *,
    desc: str,
) -> None:
    """Write every missing shard of `rows` (`shard_size` rows each) under `out`, with a
    progress bar over the pairs: `make_shard(engine, rows_of_shard, number)` builds one. The
    engine is opened only when a shard is missing, and closed at the end."""
    todo = missing_shards(rows, shard_size, out)
    if not todo:
        return
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    engine = open_engine()
    done = len(rows) - sum(len(shard_rows(rows, shard_size, n)) for n in todo)
    try:
        with tqdm(total=len(rows), initial=done, unit="pair", desc=desc) as bar:
            for number in todo:
                part = shard_rows(rows, shard_size, number)
                write_shard(make_shard(engine, part, number), out, number)
                bar.update(len(part))
    finally:
        engine.close()


def read_shards(out: Path) -> pd.DataFrame:
    """Every shard of a run, in order."""
    files = sorted((out / SHARDS).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
