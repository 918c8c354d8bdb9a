"""The generate_traces stage: the teacher explains every question-solution pair (section 4.1,
Appendix B.1, Table 4), and its raw explanations become a student distillation dataset.

For each corpus row the teacher sees the RLT prompt of Figure 7 with the solution PREFILLED and
samples `num_candidates` completions. A completion is usable when it closes the explanation
(`<|end_of_explanation|>`) before the length limit; it becomes a student sample with the
explanation as the thought and the solution appended back, and nothing else done to it
(section 3.2, `rlt_core.formats.teacher_output_to_student`). Rows without a usable completion
are kept out of the dataset and counted (`rejected.parquet` keeps them with the reason).

Which candidate is kept (Appendix B.1): with one candidate (7B students), that one; with more
(the 32B rule: 16), the first whose student sample fits `max_student_tokens` (16,384), else the
one with the best r_SS (Eq. 3) under the frozen student `reward.student_model`.

Output (`<store>/generate_traces/<key>/`):

    shards/part-NNNNN.parquet   every row of one shard with its outcome (written atomically)
    traces.parquet              the student SFT dataset: id, question, solution, thought, and
                                per row the keep rule, candidate index, lengths, candidate_r_ss
    rejected.parquet            rows without a usable completion, with the reason
    scored.parquet              with `score_traces`: each trace's RLT reward and its breakdown
    stats.json                  think-token lengths (Figure 8), truncation share, selection rule
    manifest.json               written last

Resume: shards are written one at a time, each atomically; a rerun with the same config and
inputs lands in the same directory and skips finished shards. Each shard is sampled with the
seed `seed + shard number`, so a resumed run gives the rows an uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlt_core import artifacts, formats, sft_data
from rlt_core.config import GenerateTracesConfig, RewardConfig, to_dict
from rlt_core.data import read_table
from rlt_core.data.sources import require_columns
from rlt_core.generation import (
    Engine,
    Generation,
    check_backend,
    inference_device,
    inference_dtype,
    load_engine,
)
from rlt_core.models import model_input, resolve_model
from rlt_core.reward.score import SCORE_COLUMNS, parts_dir, score_dataset
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import SpanError, align_text, encode
from rlt_core.stages.data import think_length_stats
from rlt_core.training import run

logger = logging.getLogger(__name__)

STAGE = "generate_traces"
PAIR_COLUMNS = ("id", "question", "solution")
SHARDS = "shards"
TRACES = "traces.parquet"
REJECTED = "rejected.parquet"
SCORED = "scored.parquet"
STATS = "stats.json"
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Choice:
    """The candidate kept for one row (None when no candidate closed its explanation) and the
    rule that kept it ("single", "fits", "best_r_ss") or why none was kept ("truncated": every
    candidate hit the length limit; "no_closing_tag": some stopped without the tag)."""

    index: int | None
    rule: str
    r_ss: float = math.nan


def run_generate_traces(
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    teacher: str | Path,
    corpus: str | Path,
    store: str | Path,
) -> artifacts.ArtifactRef:
    """Generate the teacher's explanations of `corpus` into `<store>/generate_traces/<key>/`.

    `teacher`: a teacher_rl (or teacher_sft) artifact directory, a model directory or a model
    reference (`rlt_core.models.model_input`). `corpus`: a table with id, question and solution
    (the data stage's corpus.parquet); its other columns but `thought` travel along. Bad input
    (backend unavailable, missing columns, an unfinished teacher artifact) raises before any
    model is loaded.
    """
    # setup: inputs checked, the artifact dir; a finished run is returned as it is
    check_backend(cfg)
    rows = read_pairs(corpus)
    source = model_input(teacher)
    upstream = {"teacher": source.digest, "corpus": run.input_digest(corpus)}
    out = run.run_dir(
        store, STAGE, config=key_config(cfg, reward_cfg), upstream=upstream, module=__name__
    )
    if artifacts.is_complete(out):
        return artifacts.load_ref(out)
    # generate: shard by shard, each written atomically; finished shards are skipped
    generate_shards(cfg, reward_cfg, source.path, rows, out)
    # assemble: the student SFT dataset, the rejected rows and the statistics
    table = read_shards(out)
    traces = table[table["kept"]].drop(columns=["kept", "completion"])
    traces = traces.rename(columns={"reason": "rule"})
    traces.reset_index(drop=True).to_parquet(out / TRACES, index=False)
    table[~table["kept"]].reset_index(drop=True).to_parquet(out / REJECTED, index=False)
    stats = trace_stats(table, cfg)
    if cfg.score_traces and len(traces):
        stats["reward"] = score_traces(source.path, reward_cfg, out, cfg.dtype)
    (out / STATS).write_text(json.dumps(stats, indent=2, sort_keys=True))
    config = key_config(cfg, reward_cfg) | {"teacher": str(teacher)}
    return artifacts.write_manifest(
        out, stage=STAGE, config=config, upstream=upstream, metrics=stats
    )


def key_config(cfg: GenerateTracesConfig, reward_cfg: RewardConfig) -> dict[str, Any]:
    """What the stage's output depends on: the recipe, and the reward only when it is used
    (the 32B rule's r_SS, or `score_traces`), so a reward ablation does not redo plain runs."""
    uses_reward = cfg.num_candidates > 1 or cfg.score_traces
    return {"recipe": to_dict(cfg), "reward": to_dict(reward_cfg) if uses_reward else None}


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
        if not _is_text(row.question) or not _is_text(row.solution)
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


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


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


def generate_shards(
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    model_path: str,
    rows: pd.DataFrame,
    out: Path,
) -> None:
    """Write every missing shard of `rows` (`shard_size` rows each), with a progress bar."""
    todo = missing_shards(rows, cfg.shard_size, out)
    if not todo:
        return
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    engine = load_engine(cfg, model_path, batch_size=cfg.batch_size)
    scorer = candidate_scorer(cfg, reward_cfg, engine.tokenizer)
    done = len(rows) - sum(len(shard_rows(rows, cfg.shard_size, n)) for n in todo)
    try:
        with tqdm(total=len(rows), initial=done, unit="pair", desc=STAGE) as bar:
            for number in todo:
                shard = explain_shard(
                    engine, scorer, shard_rows(rows, cfg.shard_size, number), cfg, number
                )
                write_shard(shard, out, number)
                bar.update(len(shard))
    finally:
        engine.close()


def candidate_scorer(
    cfg: GenerateTracesConfig, reward_cfg: RewardConfig, tokenizer: Any
) -> RLTScorer | None:
    """The frozen student that ranks candidates by r_SS (32B rule); None with one candidate."""
    if cfg.num_candidates == 1:
        return None
    path = resolve_model(reward_cfg.student_model)
    student = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(cfg.dtype))
    student.to(inference_device())
    return RLTScorer(
        None, student, tokenizer, reward_cfg, student_tokenizer=AutoTokenizer.from_pretrained(path)
    )


def explain_shard(
    engine: Engine,
    scorer: RLTScorer | None,
    rows: pd.DataFrame,
    cfg: GenerateTracesConfig,
    number: int,
) -> pd.DataFrame:
    """One shard: sample the candidates of each row, keep one (module docstring), as a table.

    Columns: the row's own, then `thought` (the kept explanation), `kept`, `reason` (the
    selection rule, or why nothing was kept), `candidate`, `think_tokens`, `student_tokens`,
    `candidate_r_ss` (NaN unless ranked), `candidates_truncated`, `candidates_unclosed` and
    `completion` (the raw text of the kept candidate or, when none, of the first).
    """
    tokenizer = engine.tokenizer
    prompts = [
        formats.render_teacher_prompt(tokenizer, q, s)
        for q, s in zip(rows["question"], rows["solution"], strict=True)
    ]
    outputs = engine.generate(prompts, n=cfg.num_candidates, seed=cfg.seed + number)
    records = [
        _row_outcome(tokenizer, scorer, row, candidates, cfg)
        for row, candidates in zip(rows.to_dict("records"), outputs, strict=True)
    ]
    return pd.DataFrame.from_records(records)


def _row_outcome(
    tokenizer: Any,
    scorer: RLTScorer | None,
    row: dict[str, Any],
    candidates: Sequence[Generation],
    cfg: GenerateTracesConfig,
) -> dict[str, Any]:
    explanations = [usable_explanation(c) for c in candidates]
    lengths = [
        None if e is None else student_length(tokenizer, row["question"], e, row["solution"])
        for e in explanations
    ]
    choice = choose_candidate(explanations, lengths, cfg, lambda: _r_ss(scorer, row, explanations))
    if choice.index is None and all(c.truncated for c in candidates):
        choice = Choice(None, "truncated")
    kept = choice.index is not None
    pick = choice.index if kept else 0
    explanation = explanations[pick] if kept else None
    return {
        **row,
        "thought": explanation,
        "kept": kept,
        "reason": choice.rule,
        "candidate": pick if kept else -1,
        "think_tokens": len(encode(tokenizer, explanation)) if kept else 0,
        "student_tokens": lengths[pick] if kept else 0,
        "candidate_r_ss": choice.r_ss,
        "candidates_truncated": sum(c.truncated for c in candidates),
        "candidates_unclosed": sum(
            e is None and not c.truncated for c, e in zip(candidates, explanations, strict=True)
        ),
        "completion": candidates[pick].text,
    }


def usable_explanation(generation: Generation) -> str | None:
    """The explanation of a completion that closed it before the length limit, else None."""
    if generation.truncated:
        return None
    parsed = formats.parse_teacher_completion(generation.text)
    return parsed.explanation if parsed.complete else None


def student_length(tokenizer: Any, question: str, thought: str, solution: str) -> int:
    """Tokens of the student SFT sample (prompt + thought + solution + end of turn), counted
    the way `rlt_core.sft_data` tokenizes it for student_sft."""
    example = sft_data.student_example(tokenizer, question, thought, solution)
    (encoded,) = sft_data.encode_examples(tokenizer, [example.prompt], [example.completion])
    return len(encoded.input_ids)


def choose_candidate(
    explanations: Sequence[str | None],
    lengths: Sequence[int | None],
    cfg: GenerateTracesConfig,
    r_ss_of_usable: Any,
) -> Choice:
    """Apply the keep rule of Appendix B.1 to one row's candidates.

    `explanations[i]` is None for an unusable candidate; `lengths[i]` is its student sample's
    token count; `r_ss_of_usable()` returns r_SS per candidate (NaN for unusable ones) and is
    only called when no usable candidate fits `cfg.max_student_tokens`.
    """
    usable = [i for i, e in enumerate(explanations) if e is not None]
    if not usable:
        return Choice(None, "no_closing_tag")
    if cfg.num_candidates == 1:
        return Choice(usable[0], "single")
    limit = cfg.max_student_tokens
    fitting = [i for i in usable if limit is None or lengths[i] <= limit]
    if fitting:
        return Choice(fitting[0], "fits")
    scores = list(r_ss_of_usable())
    best = max(usable, key=lambda i: scores[i])
    return Choice(best, "best_r_ss", float(scores[best]))


def _r_ss(
    scorer: RLTScorer | None, row: dict[str, Any], explanations: Sequence[str | None]
) -> list[float]:
    """r_SS (Eq. 3) of each usable explanation of one row; NaN for the others."""
    assert scorer is not None  # candidate_scorer builds one whenever num_candidates > 1
    usable = [i for i, e in enumerate(explanations) if e is not None]
    try:
        samples = [
            align_text(
                scorer.tokenizer,
                f"{row['id']}#{i}",
                row["question"],
                row["solution"],
                explanations[i],
            )
            for i in usable
        ]
    except SpanError as error:
        logger.warning(
            "row %s: cannot rank its candidates by r_SS (%s); keeping the first", row["id"], error
        )
        return [0.0 if i == usable[0] else -math.inf for i in range(len(explanations))]
    values = scorer.solution_scores(samples).tolist()
    scores = [math.nan] * len(explanations)
    for i, value in zip(usable, values, strict=True):
        scores[i] = value
    return scores


def read_shards(out: Path) -> pd.DataFrame:
    """Every shard of a run, in order."""
    files = sorted((out / SHARDS).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def trace_stats(table: pd.DataFrame, cfg: GenerateTracesConfig) -> dict[str, Any]:
    """What the dataset records about itself: rows kept and dropped, the truncation share of
    the candidates, the selection rules used and the think-token lengths (Figure 8)."""
    kept = table[table["kept"]]
    candidates = len(table) * cfg.num_candidates
    return {
        "rows": len(table),
        "kept": len(kept),
        "dropped": {
            str(k): int(v) for k, v in table.loc[~table["kept"], "reason"].value_counts().items()
        },
        "candidates": candidates,
        "share_truncated": round(float(table["candidates_truncated"].sum()) / candidates, 4),
        "share_unclosed": round(float(table["candidates_unclosed"].sum()) / candidates, 4),
        "rules": {str(k): int(v) for k, v in kept["reason"].value_counts().items()},
        "think_tokens": length_stats(kept["think_tokens"].to_numpy()),
        "student_tokens": length_stats(kept["student_tokens"].to_numpy()),
    }


def length_stats(lengths: np.ndarray) -> dict[str, Any]:
    """The data stage's length summary (count, mean, p10/p50/p90, max) plus a 20-bin
    histogram of token lengths (Figure 8)."""
    stats = think_length_stats(lengths)
    if lengths.size:
        counts, edges = np.histogram(lengths, bins=HISTOGRAM_BINS)
        stats["histogram"] = {"counts": counts.tolist(), "edges": edges.round(1).tolist()}
    return stats


def score_traces(
    model_path: str, reward_cfg: RewardConfig, out: Path, dtype_name: str
) -> dict[str, float]:
    """Score every kept trace with r_RLT into `scored.parquet`; the mean of each term."""
    scored = score_file(model_path, reward_cfg, out / TRACES, out / SCORED, dtype_name)
    return {name: round(float(scored[name].mean()), 4) for name in SCORE_COLUMNS}


def score_file(
    model_path: str, reward_cfg: RewardConfig, source: Path, scored: Path, dtype_name: str
) -> pd.DataFrame:
    """Score every row of `source` with r_RLT (`rlt_core.reward.score.score_dataset`, teacher
    `model_path`, student `reward.student_model`; resumable) into `scored`, and return it.

    float32 on CPU, `dtype_name` on a GPU. The scorer's resume parts are removed once the
    scored table holds every row.
    """
    device = inference_device()
    score_dataset(
        model_path,
        reward_cfg.student_model,
        source,
        scored,
        cfg=reward_cfg,
        dtype="float32" if device.type == "cpu" else dtype_name,
        device=str(device),
    )
    shutil.rmtree(parts_dir(scored), ignore_errors=True)
    return pd.read_parquet(scored)
