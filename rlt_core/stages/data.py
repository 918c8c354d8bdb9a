"""The data stage: every dataset the later stages read, validated and written once.

Reads the question-solution corpus (Bespoke-Stratos-17k, any question/solution table, or the
generated countdown task of section 4.4), validates it (strict: fail with row ids; lenient: drop
and count), draws the seeded subset of each student recipe that asks for fewer rows (the 1K
subset of Table 1), and writes the held-out sets that evaluation and student RL need (countdown
test, LIMR, AIME24 / MATH500 / GPQA Diamond). It also records think-length statistics of the
corpus' own traces (the baseline of Figure 8) in the teacher's tokens, and a preview of one row
rendered in the teacher (Figure 7) and student (Figure 6) formats with the real tokenizer.

Output (`<store>/data/<key>/`): `corpus.parquet`, `subsets/<recipe>.parquet`,
`eval/<task>.parquet`, `limr.parquet` and `countdown.parquet` (countdown training rows; each
when a run uses it), `think_tokens.parquet` (per-row
corpus think lengths), `report.json`, `preview.md`, and `manifest.json` last.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlt_core import artifacts, formats
from rlt_core.code_closure import code_fingerprint
from rlt_core.config import PipelineConfig, to_dict
from rlt_core.data import (
    countdown_rows,
    countdown_splits,
    load_corpus,
    load_eval_set,
    load_limr,
    seeded_subset,
    validate_rows,
)
from rlt_core.data.benchmarks import EVAL_SETS

logger = logging.getLogger(__name__)

STAGE = "data"
# The table of each recipe `dataset` value inside the data artifact.
DATASET_FILES = {
    "corpus": "corpus.parquet",
    "limr": "limr.parquet",
    "countdown": "countdown.parquet",
}
THINK_TOKENS = "think_tokens.parquet"
COUNTDOWN_KEEP = ("numbers", "target")


@dataclass(frozen=True)
class DataOutputs:
    """What the data stage produced: its artifact ref and the figures it recorded."""

    ref: artifacts.ArtifactRef
    path: Path
    report: dict[str, Any]


def data_config_view(cfg: PipelineConfig) -> dict[str, Any]:
    """The parts of the pipeline config the data stage depends on (its cache key)."""
    return {
        "data": to_dict(cfg.data),
        "teacher_tokenizer": cfg.teacher_sft.model,
        "subsets": {name: _recipe_rows(cfg, name) for name in cfg.student_sft_runs},
        "eval_tasks": list(cfg.evaluate.tasks),
        "limr": _needs_limr(cfg),
        "countdown_train": _needs_countdown_train(cfg),
    }


def run_data(
    cfg: PipelineConfig, store: str | Path, *, tokenizer: Any | None = None
) -> DataOutputs:
    """Run the data stage into `<store>/data/<key>/`; a finished run is returned as it is.

    `tokenizer` (optional) measures think lengths and renders the preview; without it they are
    skipped and the report says so.
    """
    view = data_config_view(cfg)
    key = artifacts.stage_key(view, {}, code_fingerprint(__name__))
    out = artifacts.stage_dir(store, STAGE, key)
    if artifacts.is_complete(out):
        logger.info("data: cached at %s", out)
        return DataOutputs(artifacts.load_ref(out), out, artifacts.read_manifest(out)["metrics"])
    if out.exists():
        shutil.rmtree(out)  # an unfinished earlier run: start over, it is cheap
    (out / "eval").mkdir(parents=True)
    report = _write_datasets(cfg, out)
    if tokenizer is not None:
        corpus = pd.read_parquet(out / "corpus.parquet")
        lengths = corpus_think_lengths(corpus, tokenizer)
        lengths.to_parquet(out / THINK_TOKENS, index=False)
        report["think_tokens"] = think_length_stats(lengths["think_tokens"].to_numpy())
        (out / "preview.md").write_text(format_preview(corpus, tokenizer))
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    ref = artifacts.write_manifest(out, stage=STAGE, config=view, upstream={}, metrics=report)
    logger.info("data: wrote %s (%d corpus rows)", out, report["corpus"]["kept"])
    return DataOutputs(ref, out, report)


def _write_datasets(cfg: PipelineConfig, out: Path) -> dict[str, Any]:
    corpus, report, (countdown_train, countdown_test) = _corpus(cfg)
    corpus.to_parquet(out / "corpus.parquet", index=False)
    result: dict[str, Any] = {"corpus": report, "subsets": {}, "eval": {}}
    if _needs_countdown_train(cfg):  # the countdown corpus itself when it is the corpus
        train = corpus if cfg.data.corpus_schema == "countdown" else countdown_train
        train.to_parquet(out / DATASET_FILES["countdown"], index=False)
        result["countdown_train"] = len(train)
    for name in cfg.student_sft_runs:
        rows = _recipe_rows(cfg, name)
        if rows is not None and rows < len(corpus):
            subset = seeded_subset(corpus, rows, cfg.data.subset_seed)
            (out / "subsets").mkdir(exist_ok=True)
            subset.to_parquet(out / "subsets" / f"{name}.parquet", index=False)
            result["subsets"][name] = len(subset)
    for task in cfg.evaluate.tasks:
        table = _eval_table(cfg, task, countdown_test)
        if table is not None:
            table.to_parquet(out / "eval" / f"{task}.parquet", index=False)
            result["eval"][task] = len(table)
    if _needs_limr(cfg):
        limr = load_limr(cfg.data.limr_source)
        limr.to_parquet(out / "limr.parquet", index=False)
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
        or _needs_countdown_train(cfg)
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


def _recipe_rows(cfg: PipelineConfig, name: str) -> int | None:
    recipe = cfg.student_sft[name]
    return recipe.num_train_samples if recipe.dataset == "corpus" else None


def _needs_countdown_train(cfg: PipelineConfig) -> bool:
    sft = any(cfg.student_sft[name].dataset == "countdown" for name in cfg.student_sft_runs)
    rl = any(cfg.student_rl[name].dataset == "countdown" for name in cfg.student_rl_runs)
    return sft or rl


def _needs_limr(cfg: PipelineConfig) -> bool:
    return any(cfg.student_rl[name].dataset == "limr" for name in cfg.student_rl_runs)


def corpus_think_lengths(corpus: pd.DataFrame, tokenizer: Any) -> pd.DataFrame:
    """Think-token length of each corpus trace (id, think_tokens): the baseline of Figure 8."""
    rows = corpus[corpus["thought"].map(lambda t: isinstance(t, str))]
    ids = (
        tokenizer(rows["thought"].tolist(), add_special_tokens=False)["input_ids"]
        if len(rows)
        else []
    )
    return pd.DataFrame({"id": rows["id"].tolist(), "think_tokens": [len(i) for i in ids]})


def think_length_stats(lengths: np.ndarray) -> dict[str, Any]:
    """Count, mean, p10/p50/p90 and max of think-token lengths (Figure 8)."""
    if not lengths.size:
        return {"count": 0}
    quantiles = np.percentile(lengths, [10, 50, 90]).round(1).tolist()
    return {
        "count": int(lengths.size),
        "mean": round(float(lengths.mean()), 1),
        "p10_p50_p90": quantiles,
        "max": int(lengths.max()),
    }


def format_preview(corpus: pd.DataFrame, tokenizer: Any) -> str:
    """The first row rendered in both formats with the real chat template, as markdown."""
    row = corpus.iloc[0]
    teacher = formats.render_teacher_prompt(tokenizer, row.question, row.solution)
    student = formats.render_student_prompt(tokenizer, row.question)
    thought = row.thought if isinstance(row.thought, str) else "(no trace in this corpus)"
    answer = formats.student_assistant_text(thought, row.solution)
    return (
        f"# Row {row.id}\n\n## Teacher prompt (Figure 7), generation starts at the end\n\n"
        f"```\n{teacher}\n```\n\n## Student sample (Figure 6)\n\n```\n{student}{answer}\n```\n"
    )
