"""The data stage: every dataset the later stages read, validated and written once.

Reads the question-solution corpus (Bespoke-Stratos-17k, any question/solution table, or the
generated countdown task of section 4.4), validates it (strict: fail with row ids; lenient: drop
and count), and writes the held-out sets that evaluation and student RL need (countdown
test, LIMR, AIME24 / MATH500 / GPQA Diamond). It also records think-length statistics of the
corpus' own traces (the baseline of Figure 8) in the teacher's tokens, and a preview of one row
rendered in the teacher (Figure 7) and student (Figure 6) formats with the real tokenizer.

The training stages draw their own seeded row subsets (`data.subset_seed`, in their keys).

Output (`<store>/data/<key>/`, names in `rlt_core.stages.specs.DataFiles`): `corpus.parquet`,
`eval/<task>.parquet`, `limr.parquet` (questions as the students read them,
`formats.student_question`) and `countdown.parquet` (countdown training rows; each
when a run uses it), `think_tokens.parquet` (per-row
corpus think lengths), `report.json`, `preview.md`, and `manifest.json` last.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rlt_core import artifacts, formats
from rlt_core.config import PipelineConfig
from rlt_core.data import (
    countdown_rows,
    countdown_splits,
    load_corpus,
    load_eval_set,
    load_limr,
    validate_rows,
)
from rlt_core.data.benchmarks import EVAL_SETS
from rlt_core.generation.trace_stats import think_length_stats
from rlt_core.models import resolve_model
from rlt_core.owner import Outcome, Work
from rlt_core.stages.specs import DATA, needs_countdown_train, needs_limr

logger = logging.getLogger(__name__)

STAGE = DATA.name
FILES = DATA.outputs
COUNTDOWN_KEEP = ("numbers", "target")
TEACHER = "teacher"  # write_data's default tokenizer: the teacher's (teacher_sft.model)


@dataclass(frozen=True)
class DataOutputs:
    """What the data stage produced: its artifact ref and the figures it recorded."""

    ref: artifacts.ArtifactRef
    path: Path
    report: dict[str, Any]


def run_data(
    cfg: PipelineConfig, store: str | Path, *, tokenizer: Any | None = None
) -> DataOutputs:
    """Run the data stage into `<store>/data/<key>/`; a finished run is returned as it is.

    `tokenizer` (optional) measures think lengths and renders the preview; without it they are
    skipped and the report says so.
    """
    ref = DATA.run(store, {"cfg": cfg}, {}, tokenizer=tokenizer)
    path = Path(ref.uri)
    return DataOutputs(ref, path, artifacts.read_manifest(path)["metrics"])


def write_data(work: Work, cfg: PipelineConfig, *, tokenizer: Any = TEACHER) -> Outcome:
    """The data stage's work (`DATA.entry`): every table, the report and the preview.

    `tokenizer`: `TEACHER` (the pipeline's run: think lengths and the preview in the tokens
    of `teacher_sft.model`), a tokenizer, or None (both skipped). An unfinished earlier run
    starts over: it is cheap.
    """
    if tokenizer is TEACHER:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.teacher_sft.model))
    out = work.fresh()
    (out / FILES.eval).mkdir(parents=True)
    report = _write_datasets(cfg, out)
    if tokenizer is not None:
        corpus = pd.read_parquet(out / FILES.corpus)
        lengths = corpus_think_lengths(corpus, tokenizer)
        lengths.to_parquet(out / FILES.think_tokens, index=False)
        report["think_tokens"] = think_length_stats(lengths["think_tokens"].to_numpy())
        (out / FILES.preview).write_text(format_preview(corpus, tokenizer))
    (out / FILES.report).write_text(json.dumps(report, indent=2, sort_keys=True))
    logger.info("data: %d corpus rows", report["corpus"]["kept"])
    return Outcome(report)


def _write_datasets(cfg: PipelineConfig, out: Path) -> dict[str, Any]:
    corpus, report, (countdown_train, countdown_test) = _corpus(cfg)
    corpus.to_parquet(out / FILES.corpus, index=False)
    result: dict[str, Any] = {"corpus": report, "eval": {}}
    if needs_countdown_train(cfg):  # the countdown corpus itself when it is the corpus
        train = corpus if cfg.data.corpus_schema == "countdown" else countdown_train
        train.to_parquet(out / FILES.countdown, index=False)
        result["countdown_train"] = len(train)
    for task in cfg.evaluate.tasks:
        table = _eval_table(cfg, task, countdown_test)
        if table is not None:
            table.to_parquet(out / FILES.eval_table(task), index=False)
            result["eval"][task] = len(table)
    if needs_limr(cfg):
        limr = load_limr(cfg.data.limr_source)
        # the question as the students read every math question: with the boxed instruction
        limr["question"] = limr["question"].map(formats.student_question)
        limr.to_parquet(out / FILES.limr, index=False)
        result["limr"] = len(limr)
    return result


def _corpus(
    cfg: PipelineConfig,
) -> tuple[pd.DataFrame, dict[str, Any], tuple[pd.DataFrame | None, pd.DataFrame | None]]:
    """The corpus rows and their validation report, and the countdown (train, test) rows when
    the runs need them (None otherwise)."""
    train, test = _countdown(cfg)
    if cfg.data.corpus_schema == "countdown":
        kept, report = validate_rows(train, mode=cfg.data.validation)
        kept = kept.merge(train[["id", *COUNTDOWN_KEEP]], on="id", how="left")
        return kept, report.to_dict(), (train, test)
    data = cfg.data
    load = load_corpus(data.corpus_source, schema=data.corpus_schema, mode=data.validation)
    return load.rows, load.report.to_dict(), (train, test)


def _countdown(cfg: PipelineConfig) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Countdown train and test rows (section 4.4) with their search traces, when needed."""
    data = cfg.data
    needed = (
        data.corpus_schema == "countdown"
        or "countdown" in cfg.evaluate.tasks
        or needs_countdown_train(cfg)
    )
    if not needed:
        return None, None
    sizes = tuple(range(data.countdown_min_numbers, data.countdown_max_numbers + 1))
    train, test = countdown_splits(
        data.countdown_train_size,
        data.countdown_test_size,
        seed=data.countdown_seed,
        num_numbers=sizes,
    )
    opts = {"seed": data.countdown_seed, "max_dead_ends": data.countdown_max_dead_ends}
    return countdown_rows(train, **opts), countdown_rows(test, **opts)


def _eval_table(
    cfg: PipelineConfig, task: str, countdown_test: pd.DataFrame | None
) -> pd.DataFrame | None:
    if task == "countdown":
        return countdown_test
    if task in EVAL_SETS:
        return load_eval_set(task, cfg.data.eval_sources.get(task))
    logger.info("data: %s is read by the evaluate stage itself (lighteval task)", task)
    return None


def corpus_think_lengths(corpus: pd.DataFrame, tokenizer: Any) -> pd.DataFrame:
    """Think-token length of each corpus trace (id, think_tokens): the baseline of Figure 8."""
    rows = corpus[corpus["thought"].map(lambda t: isinstance(t, str))]
    ids = (
        tokenizer(rows["thought"].tolist(), add_special_tokens=False)["input_ids"]
        if len(rows)
        else []
    )
    return pd.DataFrame({"id": rows["id"].tolist(), "think_tokens": [len(i) for i in ids]})


def format_preview(corpus: pd.DataFrame, tokenizer: Any) -> str:
    """The first row rendered in both formats with the real chat template, as markdown."""
    row = corpus.iloc[0]
    teacher = formats.render_teacher_prompt(tokenizer, row.question, row.solution)
    student = formats.render_student_prompt(tokenizer, row.question, getattr(row, "system", None))
    thought = row.thought if isinstance(row.thought, str) else "(no trace in this corpus)"
    answer = formats.student_assistant_text(thought, row.solution)
    return (
        f"# Row {row.id}\n\n## Teacher prompt (Figure 7), generation starts at the end\n\n"
        f"```\n{teacher}\n```\n\n## Student sample (Figure 6)\n\n```\n{student}{answer}\n```\n"
    )
