"""The teacher_eval stage: did RL make the teacher better at its own objective, on pairs it never
saw? (project stage; the paper's claim of section 3, measured on held-out data)

The teacher_sft checkpoint (before RL) and the teacher_rl checkpoint (after) each explain the
same held-out question-solution pairs: the RLT prompt of Figure 7 with the solution prefilled,
`num_samples` explanations per pair, sampled as teacher_rl's rollouts are (its temperature,
top-p/k/min-p and `max_completion_length`) with the SAME seed for both teachers. Each
explanation is scored with the RLT reward exactly as in training (`rlt_core.reward.score`,
Eq. 3-5: the frozen student's r_SS, r_KL against the teacher that wrote it, the format penalty
for an unclosed or cut explanation), and its solution-copy share is measured
(`rlt_core.reward.copying`).

The comparison is paired by pair: for each pair the mean over its samples, then the mean of the
per-pair differences (teacher_rl - teacher_sft) with a 95% t confidence interval over pairs
(the pairs are the independent units; samples of one pair are not).

Output (`<store>/teacher_eval/<key>/`):

    explanations_<teacher>.parquet   id, pair_id, sample, question, solution, explanation,
                                     format_ok, truncated (written before scoring; a rerun
                                     reuses them)
    scored_<teacher>.parquet         the same with the reward terms and solution_copy
    comparison.json                  per metric: both means, the difference and its interval
    manifest.json                    written last (metrics = comparison.json)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rlt_core import artifacts, formats
from rlt_core.config import RewardConfig, TeacherEvalConfig, TeacherRLConfig
from rlt_core.config.sampling import SamplingRecipe
from rlt_core.generation import check_backend, load_engine
from rlt_core.generation.shards import read_pairs
from rlt_core.models import model_input
from rlt_core.owner import Outcome, Work
from rlt_core.reward.copying import solution_copy
from rlt_core.reward.score import score_file
from rlt_core.reward.spans import encode
from rlt_core.stages.specs import TEACHER_EVAL

logger = logging.getLogger(__name__)

STAGE = TEACHER_EVAL.name
FILES = TEACHER_EVAL.outputs
TEACHERS = ("teacher_sft", "teacher_rl")
METRICS = dict(FILES.metrics)  # the per-explanation figures compared (column -> title)


def rollout_recipe(cfg: TeacherEvalConfig, rl_cfg: TeacherRLConfig) -> SamplingRecipe:
    """Sampling as teacher_rl's rollouts (Table 3) on this stage's engine, dtype and seed."""
    return SamplingRecipe(
        **rl_cfg.rollout_sampling(),
        dtype=cfg.dtype,
        backend=cfg.backend,
        seed=cfg.seed,
    )


def run_teacher_eval(
    cfg: TeacherEvalConfig,
    rl_cfg: TeacherRLConfig,
    reward_cfg: RewardConfig,
    teacher_sft: str | Path,
    teacher_rl: str | Path,
    pairs: str | Path,
    store: str | Path,
) -> artifacts.ArtifactRef:
    """Explain and score the held-out `pairs` with both teachers into
    `<store>/teacher_eval/<key>/` (module docstring).

    `teacher_sft` / `teacher_rl`: artifact directories holding `model/`, model directories or
    references. `pairs`: a table with id, question and solution (the data stage's
    eval/<task>.parquet). Bad input (missing columns, fewer than 2 pairs, an unfinished
    teacher artifact, an unavailable engine) raises before any model loads.
    """
    return TEACHER_EVAL.run(
        store,
        {"cfg": cfg, "rl_cfg": rl_cfg, "reward_cfg": reward_cfg},
        {"teacher_sft": teacher_sft, "teacher_rl": teacher_rl, "pairs": pairs},
    )


def compare_teachers(
    work: Work,
    cfg: TeacherEvalConfig,
    rl_cfg: TeacherRLConfig,
    reward_cfg: RewardConfig,
    teacher_sft: str | Path,
    teacher_rl: str | Path,
    pairs: str | Path,
) -> Outcome:
    """teacher_eval's work (`TEACHER_EVAL.entry`): `run_teacher_eval` without the owner."""
    recipe = rollout_recipe(cfg, rl_cfg)
    check_backend(recipe)
    rows = held_out_rows(pairs, cfg.num_pairs)
    sources = {"teacher_sft": model_input(teacher_sft), "teacher_rl": model_input(teacher_rl)}
    out = work.out
    scored = {}
    for name, source in sources.items():
        explanations = out / FILES.explanations(name)
        if not explanations.is_file():  # a rerun reuses the explanations already written
            table = explain(recipe, source.path, rows, cfg)
            artifacts.write_atomic(explanations, lambda p, t=table: t.to_parquet(p, index=False))
        scored[name] = score_file(
            source.path, reward_cfg, explanations, out / FILES.scored(name), cfg.dtype
        )
    comparison = compare(scored["teacher_sft"], scored["teacher_rl"])
    comparison["pairs"] = int(rows["id"].nunique())
    comparison["samples_per_pair"] = cfg.num_samples
    (out / FILES.comparison).write_text(json.dumps(comparison, indent=2, sort_keys=True))
    given = {"teacher_sft": str(teacher_sft), "teacher_rl": str(teacher_rl)}
    return Outcome(comparison, given)


def held_out_rows(pairs: str | Path, num_pairs: int | None) -> pd.DataFrame:
    """The first `num_pairs` pairs of the table (all when None); at least 2 (an interval
    needs them)."""
    rows = read_pairs(pairs)
    rows = rows.head(num_pairs) if num_pairs is not None else rows
    if len(rows) < 2:
        raise ValueError(
            f"{pairs}: {len(rows)} held-out pair(s); a confidence interval over pairs needs at "
            "least 2. Raise teacher_eval.num_pairs or point teacher_eval.held_out at a larger "
            "table (e.g. data.countdown_test_size for countdown)."
        )
    return rows[["id", "question", "solution"]].reset_index(drop=True)


def explain(
    recipe: SamplingRecipe, model_path: str, rows: pd.DataFrame, cfg: TeacherEvalConfig
) -> pd.DataFrame:
    """`cfg.num_samples` explanations of every row by the model at `model_path`, one row each:
    id `<pair id>#<sample>`, the explanation text (up to the closing tag, or all of an unclosed
    one), `format_ok` (closed before the limit), `truncated` and `solution_copy`."""
    engine = load_engine(recipe, model_path, batch_size=cfg.batch_size)
    try:
        tokenizer = engine.tokenizer
        prompts = formats.render_teacher_prompts(tokenizer, rows)
        outputs = engine.generate(prompts, n=cfg.num_samples, seed=cfg.seed)
        records = []
        for row, samples in zip(rows.to_dict("records"), outputs, strict=True):
            for index, generation in enumerate(samples):
                parsed = formats.parse_teacher_completion(generation.text)
                copied = solution_copy(
                    encode(tokenizer, parsed.explanation), encode(tokenizer, row["solution"])
                )
                records.append({
                    "id": f"{row['id']}#{index}", "pair_id": row["id"], "sample": index,
                    "question": row["question"], "solution": row["solution"],
                    "explanation": parsed.explanation,
                    "format_ok": parsed.complete and not generation.truncated,
                    "truncated": generation.truncated, "solution_copy": copied,
                })  # fmt: skip
    finally:
        engine.close()
    return pd.DataFrame.from_records(records)


def paired_difference(before: pd.Series, after: pd.Series) -> dict[str, Any]:
    """Means of two per-pair series (aligned by pair), the mean of `after - before` and its
    95% t interval over the pairs (NaN pairs dropped; the interval collapses to the mean when
    every difference is equal)."""
    joined = pd.DataFrame({"before": before, "after": after}).dropna()
    differences = (joined["after"] - joined["before"]).to_numpy(dtype=float)
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    half = math.nan
    if n >= 2:
        spread = float(differences.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n)) if spread > 0 else 0.0
    return {
        "before": float(joined["before"].mean()) if n else math.nan,
        "after": float(joined["after"].mean()) if n else math.nan,
        "difference": mean,
        "ci95": [mean - half, mean + half],
        "n": n,
    }


def per_pair(scored: pd.DataFrame) -> pd.DataFrame:
    """Each metric's mean over the samples of every pair (index: pair id)."""
    table = scored.assign(penalised=(scored["penalty"] != 0).astype(float))
    return table.groupby("pair_id")[list(METRICS)].mean()


def compare(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, Any]:
    """The paired comparison of every metric (`METRICS`) between the scored explanations of
    teacher_sft (`before`) and teacher_rl (`after`)."""
    a, b = per_pair(before), per_pair(after)
    return {
        "metrics": {name: paired_difference(a[name], b[name].reindex(a.index)) for name in METRICS},
        "explanations": {"teacher_sft": len(before), "teacher_rl": len(after)},
        "closed": {
            "teacher_sft": float(np.mean(before["format_ok"])),
            "teacher_rl": float(np.mean(after["format_ok"])),
        },
    }
