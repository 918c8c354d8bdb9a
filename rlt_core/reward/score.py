"""Score a dataset of reasoning traces with the RLT reward: `rlt score` and `score_dataset`.

Each row holds a question, a solution and an explanation (column `explanation`, or `thought`
so a corpus' own R1 traces can be ranked for distillation, section 4.5). An optional boolean
`format_ok` column marks explanations whose closing tag was missing: those get the format
penalty of Eq. 5. The output is the
input table plus the reward and its breakdown (`reward`, `r_ss`, `r_kl`, `penalty`,
`think_len`, `solution_len`, `empty_think`, `empty_solution`).

Resumable: every finished batch is written atomically to `<out>.parts/part-NNNNNN.parquet`
(row ids and scores only); a rerun skips the rows found there and `out` is assembled once every
row is scored. `<out>.parts/meta.json` records the models and the reward config: a rerun with
other settings is refused rather than mixing scores. Rows are identified by an `id` column when
the table has one, else by their row number (so the input file must not change between runs).
Input is validated before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer
from tqdm.auto import tqdm

from rlt_core import devices
from rlt_core.artifacts import write_atomic
from rlt_core.config import ConfigError, RewardConfig, config_digest, load_config, to_dict
from rlt_core.config.reward import KlEstimator
from rlt_core.data import read_table, row_systems
from rlt_core.identity import reference_identity
from rlt_core.models import resolve_model
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import SpanError, align_text
from rlt_core.reward.terms import RewardBreakdown

logger = logging.getLogger(__name__)

EXPLANATION_COLUMNS = ("explanation", "thought")
ID_COLUMN = "id"
FORMAT_COLUMN = "format_ok"  # optional: False where the closing tag was missing (penalty)
SCORE_COLUMNS = tuple(f.name for f in fields(RewardBreakdown))
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ScoreRun:
    """What one call did: rows scored now, rows found already scored, and the output (None
    while rows remain, e.g. after `max_batches`)."""

    scored: int
    skipped: int
    out: Path | None


def prepare_table(table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str]:
    """Validate a traces table; return it with string row ids in `id`, and the explanation
    column's name (`explanation`, else `thought`). Raises ValueError naming the bad rows."""
    missing = [c for c in ("question", "solution") if c not in table.columns]
    explanation = next((c for c in EXPLANATION_COLUMNS if c in table.columns), None)
    if missing or explanation is None:
        needed = missing + ([] if explanation else ["explanation (or thought)"])
        raise ValueError(
            f"{source}: missing column(s) {needed}; the table has {list(table.columns)}. Rename "
            "the columns to question / solution / explanation (a `thought` column is accepted "
            "as the explanation)."
        )
    table = table.reset_index(drop=True)
    ids = table[ID_COLUMN] if ID_COLUMN in table.columns else pd.Series(range(len(table)))
    table = table.assign(**{ID_COLUMN: ids.astype(str)})
    duplicated = table[ID_COLUMN][table[ID_COLUMN].duplicated()].tolist()
    empty = [i for i, s in zip(table[ID_COLUMN], table["solution"], strict=True) if _blank(s)]
    bad_text = [i for i, e in zip(table[ID_COLUMN], table[explanation], strict=True) if _bad(e)]
    for problem, rows in (
        ("duplicate ids", duplicated),
        ("an empty solution (r_SS, Eq. 3, scores the solution tokens)", empty),
        (f"a non-text {explanation}", bad_text),
    ):
        if rows:
            raise ValueError(
                f"{source}: {len(rows)} row(s) with {problem}, ids {rows[:10]}. Fix or drop "
                "those rows before scoring."
            )
    if table.empty:
        raise ValueError(f"{source}: the table has no rows; nothing to score.")
    return table, explanation


def _blank(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def _bad(value: object) -> bool:
    return not isinstance(value, str)


def parts_dir(out: Path) -> Path:
    """Where the finished batches of `out` are kept until it is assembled."""
    return out.with_name(out.name + ".parts")


def _check_meta(parts: Path, meta: dict[str, object]) -> None:
    """Write `meta.json` on the first run; refuse a rerun whose settings differ."""
    path = parts / "meta.json"
    if not path.exists():
        parts.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
        return
    before = json.loads(path.read_text())
    if before != meta:
        changed = sorted(k for k in meta.keys() | before.keys() if before.get(k) != meta.get(k))
        raise ValueError(
            f"{parts} holds scores made with other settings (changed: {changed}); mixing them "
            "would rank rows by different rewards. Rerun with the same settings, or delete "
            f"{parts} to start over."
        )


def _part_files(parts: Path) -> list[Path]:
    return sorted(parts.glob("part-*.parquet"))


def read_parts(parts: Path) -> pd.DataFrame:
    """All finished batches (id + score columns); empty when there are none."""
    files = _part_files(parts)
    if not files:
        return pd.DataFrame(columns=[ID_COLUMN, *SCORE_COLUMNS])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _score_batches(
    scorer: RLTScorer,
    rows: pd.DataFrame,
    explanation: str,
    parts: Path,
    *,
    batch_size: int,
    max_batches: int | None,
) -> int:
    """Score `rows` batch by batch into new part files; returns how many rows were scored."""
    files = _part_files(parts)
    next_part = int(files[-1].stem.split("-")[1]) + 1 if files else 0
    starts = list(range(0, len(rows), batch_size))[:max_batches]
    scored = 0
    for number, start in enumerate(tqdm(starts, desc="rlt score", unit="batch"), next_part):
        batch = rows.iloc[start : start + batch_size]
        samples = [
            align_text(
                scorer.tokenizer,
                r[ID_COLUMN],
                r["question"],
                r["solution"],
                r[explanation],
                system=system,
                format_ok=bool(r.get(FORMAT_COLUMN, True)),
            )
            for r, system in zip(batch.to_dict("records"), row_systems(batch), strict=True)
        ]
        scores = pd.DataFrame(scorer.score(samples).to_rows())
        scores.insert(0, ID_COLUMN, batch[ID_COLUMN].tolist())
        write_atomic(parts / f"part-{number:06d}.parquet", scores.to_parquet)
        scored += len(batch)
    return scored


def _assemble(table: pd.DataFrame, scores: pd.DataFrame, out: Path) -> None:
    """Write `table` joined with its scores (one per row, input order) to `out`."""
    duplicated = scores[ID_COLUMN][scores[ID_COLUMN].duplicated()].tolist()
    if duplicated:
        raise ValueError(
            f"part files hold ids {duplicated[:10]} more than once; delete {parts_dir(out)} "
            "and score again."
        )
    merged = table.merge(scores, on=ID_COLUMN, how="left", validate="one_to_one")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        write_atomic(out, lambda tmp: merged.to_json(tmp, orient="records", lines=True))
    else:
        write_atomic(out, merged.to_parquet)


def score_dataset(
    teacher: str,
    student: str | None,
    data: str | Path,
    out: Path,
    *,
    cfg: RewardConfig,
    batch_size: int = 8,
    dtype: str = "float32",
    device: str = "cpu",
    max_batches: int | None = None,
) -> ScoreRun:
    """Score every row of `data` with r_RLT (Eq. 3 to 5) and write `out` (.parquet or .jsonl).

    `teacher` and `student` are model references (`rlt_core.models.resolve_model`; student
    default `cfg.student_model`). Rows already in `<out>.parts/` are skipped; `max_batches`
    stops after that many new batches (the output is then not written yet).
    """
    if batch_size < 1 or dtype not in _DTYPES:
        raise ValueError(
            f"batch_size={batch_size}, dtype={dtype!r}: need batch_size >= 1 and a dtype of "
            f"{sorted(_DTYPES)}."
        )
    table, explanation = prepare_table(read_table(str(data)), str(data))
    out = Path(out)
    parts = parts_dir(out)
    student = student or cfg.student_model
    for ref in (teacher, student):
        resolve_model(ref)  # a reference that names nothing fails here, before meta.json
    _check_meta(parts, _meta(teacher, student, data, cfg, explanation, dtype))
    done = set(read_parts(parts)[ID_COLUMN].astype(str))
    todo = table[~table[ID_COLUMN].isin(done)]
    scored = 0
    if len(todo):
        scorer = RLTScorer.from_refs(
            teacher, student, cfg=cfg, dtype=_DTYPES[dtype], device=device, batch_size=batch_size
        )
        scored = _score_batches(
            scorer, todo, explanation, parts, batch_size=batch_size, max_batches=max_batches
        )
    if scored < len(todo):
        return ScoreRun(scored=scored, skipped=len(done), out=None)
    _assemble(table, read_parts(parts), out)
    logger.info("scored %d rows (%d already done) into %s", scored, len(done), out)
    return ScoreRun(scored=scored, skipped=len(done), out=out)


def _meta(
    teacher: str,
    student: str,
    data: str | Path,
    cfg: RewardConfig,
    explanation: str,
    dtype: str,
) -> dict[str, object]:
    """What the scores in a `.parts` folder depend on: the models and the data by what they
    hold (`rlt_core.identity`: retrained weights or edited rows are other scores), the reward
    settings and the dtype they were computed in."""
    return {
        "teacher": reference_identity(teacher),
        "student": reference_identity(student),
        "data": reference_identity(str(data)),
        "explanation_column": explanation,
        "reward_config": to_dict(cfg),
        "reward_config_digest": config_digest(cfg),
        "dtype": dtype,
    }


# One command: `rlt_core.cli` mounts it with `app.add_typer(score_app)` (no name), which makes it
# `rlt score`; invoked on its own (`CliRunner().invoke(app, [...])`) it runs `score` directly.
app = typer.Typer(add_completion=False, help="Score reasoning traces with the RLT reward.")


SCORE_HELP = (
    "Score every row with r_RLT and its breakdown; rerun the same command to resume.\n\n"
    "Which KL estimator, and why it matters here: the paper's sampled estimator of Eq. 4, "
    "log pi_T(t) - log pi_S(t) on the think tokens, averages to a KL (non-negative in "
    "expectation) only on text the teacher itself sampled, as in GRPO's rollouts. On traces "
    "the teacher did not write (a corpus' R1 traces, another model's explanations) it is a "
    "log-likelihood ratio that can be strongly negative and rank an off-topic explanation "
    "above a correct one. To rank such traces pass --kl-estimator full (the exact per-token "
    "KL over the vocabulary, non-negative on any text)."
)


@app.command(help=SCORE_HELP)
def score(
    teacher: Annotated[str, typer.Option(help="teacher model reference (offline:, path, hub id)")],
    data: Annotated[str, typer.Option(help="traces: question, solution, explanation/thought")],
    out: Annotated[Path, typer.Option(help="output table (.parquet or .jsonl)")],
    student: Annotated[
        str | None, typer.Option(help="student model reference; default reward.student_model")
    ] = None,
    profile: Annotated[str, typer.Option(help="config profile for the reward settings")] = "tiny",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key.path=value, e.g. reward.lambda=0")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="samples per forward pass")] = 8,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    device: Annotated[str, typer.Option(help="torch device of the models")] = "cpu",
    kl_estimator: Annotated[
        KlEstimator | None,
        typer.Option(
            help="per-token KL of r_KL: sampled (the paper's, default of the paper profiles), "
            "k3, or full (exact over the vocabulary); default: the profile's reward.kl_estimator"
        ),
    ] = None,
) -> None:
    """Score every row with r_RLT and its breakdown (`SCORE_HELP`); rerun to resume."""
    try:
        cfg = load_config(profile, overrides or ()).reward
        if kl_estimator is not None:
            cfg = dataclasses.replace(cfg, kl_estimator=kl_estimator)
        run = score_dataset(
            teacher,
            student,
            data,
            out,
            cfg=cfg,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
        )
    except (ConfigError, SpanError, ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"scored {run.scored} rows ({run.skipped} already scored) -> {run.out}")


def score_file(
    model_path: str, reward_cfg: RewardConfig, source: Path, scored: Path, dtype_name: str
) -> pd.DataFrame:
    """Score every row of `source` with r_RLT (`rlt_core.reward.score.score_dataset`, teacher
    `model_path`, student `reward.student_model`; resumable) into `scored`, and return it.

    float32 on CPU, `dtype_name` on a GPU. The scorer's resume parts are removed once the
    scored table holds every row.
    """
    score_dataset(
        model_path,
        reward_cfg.student_model,
        source,
        scored,
        cfg=reward_cfg,
        dtype=devices.run_dtype(dtype_name),
        device=str(devices.inference_device()),
    )
    shutil.rmtree(parts_dir(scored), ignore_errors=True)
    return pd.read_parquet(scored)
