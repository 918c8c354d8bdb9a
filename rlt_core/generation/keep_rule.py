"""Which of a pair's sampled explanations becomes its student sample (Appendix B.1).

A completion is usable when it closes the explanation (`<|end_of_explanation|>`) before the
length limit. With one candidate (7B students) the usable one is kept; with more (the 32B rule:
16), the first whose student sample fits `max_student_tokens` (16,384), else the one with the
best r_SS (Eq. 3) under the frozen student `reward.student_model`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rlt_core import formats, sft_data
from rlt_core.config import GenerateTracesConfig, RewardConfig
from rlt_core.devices import inference_device, inference_dtype
from rlt_core.generation.engine import Engine, Generation
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import SpanError, align_text, encode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """The candidate kept for one row (None when no candidate closed its explanation) and the
    rule that kept it ("single", "fits", "best_r_ss") or why none was kept ("truncated": every
    candidate hit the length limit; "no_closing_tag": some stopped without the tag)."""

    index: int | None
    rule: str
    r_ss: float = math.nan


def candidate_scorer(
    cfg: GenerateTracesConfig, reward_cfg: RewardConfig, tokenizer: Any
) -> RLTScorer | None:
    """The frozen student that ranks candidates by r_SS (32B rule); None with one candidate."""
    if cfg.num_candidates == 1:
        return None
    return RLTScorer.with_student(
        reward_cfg, tokenizer, dtype=inference_dtype(cfg.dtype), device=inference_device()
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
    prompts = formats.render_teacher_prompts(tokenizer, rows)
    outputs = engine.generate(prompts, n=cfg.num_candidates, seed=cfg.seed + number)
    records = [
        row_outcome(tokenizer, scorer, row, candidates, cfg)
        for row, candidates in zip(rows.to_dict("records"), outputs, strict=True)
    ]
    return pd.DataFrame.from_records(records)


def row_outcome(
    tokenizer: Any,
    scorer: RLTScorer | None,
    row: dict[str, Any],
    candidates: Sequence[Generation],
    cfg: GenerateTracesConfig,
) -> dict[str, Any]:
    """One row's kept candidate and its figures (a record of `explain_shard`'s table)."""
    explanations = [usable_explanation(c) for c in candidates]
    system = row.get("system")  # the row's own prompt; missing or NaN: the default
    lengths = [
        None
        if e is None
        else student_length(tokenizer, row["question"], e, row["solution"], system=system)
        for e in explanations
    ]
    choice = choose_candidate(
        explanations, lengths, cfg, lambda: candidate_r_ss(scorer, row, explanations)
    )
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


def student_length(
    tokenizer: Any, question: str, thought: str, solution: str, *, system: str | None = None
) -> int:
    """Tokens of the student SFT sample (prompt + thought + solution + end of turn), counted
    the way `rlt_core.sft_data` tokenizes it for student_sft (`system`: the row's prompt)."""
    example = sft_data.student_example(tokenizer, question, thought, solution, system=system)
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


def candidate_r_ss(
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
                system=row.get("system"),
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
