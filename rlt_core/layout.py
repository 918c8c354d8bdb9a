"""The artifact layout: the files each stage writes, relative to its artifact directory.

A low module of names only (no torch, no stage code): the declarations
(`rlt_core.stages.specs`) give each stage its outputs from here, and the flows, reports and
library code refer to a stage's files through them, never through a literal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFiles:
    """The data stage's files; `dataset(name)` is the table of a recipe's `dataset` value."""

    corpus: str = "corpus.parquet"
    eval: str = "eval"
    countdown: str = "countdown.parquet"
    limr: str = "limr.parquet"
    think_tokens: str = "think_tokens.parquet"
    preview: str = "preview.md"
    report: str = "report.json"

    def dataset(self, name: str) -> str:
        """The table of recipe dataset `name` (corpus, limr or countdown)."""
        tables = {"corpus": self.corpus, "limr": self.limr, "countdown": self.countdown}
        if name not in tables:
            raise ValueError(f"no data table for dataset {name!r}; known: {sorted(tables)}")
        return tables[name]

    def eval_table(self, task: str) -> str:
        """The held-out table of a project evaluation task."""
        return f"{self.eval}/{task}.parquet"


@dataclass(frozen=True)
class TrainedFiles:
    """A training stage's files: the final model (weights and tokenizer), the Trainer's log,
    and the checkpoints a cut run resumes from (removed once the model is saved)."""

    model: str = "model"
    log_history: str = "log_history.json"
    checkpoints: str = "checkpoints"


@dataclass(frozen=True)
class TeacherRLFiles(TrainedFiles):
    """teacher_rl's files: a training stage's, plus the reward terms of every GRPO step and
    their curves (`rlt_core.figures.reward_curve_figure`)."""

    reward_log: str = "reward_log.json"
    reward_curves: str = "reward_curves.png"


@dataclass(frozen=True)
class TeacherEvalFiles:
    """teacher_eval's files: each teacher's held-out explanations and their scores, and the
    paired comparison of `metrics` (per-explanation column -> title) in `comparison`."""

    comparison: str = "comparison.json"
    metrics: tuple[tuple[str, str], ...] = (
        ("reward", "r_RLT (Eq. 5)"),
        ("r_ss", "r_SS (Eq. 3)"),
        ("r_kl", "r_KL (Eq. 4)"),
        ("penalised", "format-penalty rate"),
        ("think_len", "think tokens"),
        ("solution_copy", "solution copy (4-gram share)"),
    )

    def explanations(self, teacher: str) -> str:
        """The explanations `teacher` (teacher_sft or teacher_rl) wrote."""
        return f"explanations_{teacher}.parquet"

    def scored(self, teacher: str) -> str:
        """Those explanations with their reward terms."""
        return f"scored_{teacher}.parquet"


@dataclass(frozen=True)
class TraceFiles:
    """generate_traces' files: the student dataset `traces`, the shards it is sampled in, the
    pairs the keep rule rejected, the reward scores (when scored) and the statistics."""

    traces: str = "traces.parquet"
    shards: str = "shards"
    rejected: str = "rejected.parquet"
    scored: str = "scored.parquet"
    stats: str = "stats.json"


@dataclass(frozen=True)
class RankFiles:
    """rank_traces' files; `rank(k)` is the student dataset of rank k (1 = best per pair)."""

    shards: str = "shards"
    candidates: str = "candidates.parquet"
    scored: str = "scored.parquet"
    ranks: str = "ranks"
    stats: str = "stats.json"

    def rank(self, k: int) -> str:
        """The dataset of rank `k` (1 = the best explanation of every pair)."""
        return f"{self.ranks}/rank-{k:02d}.parquet"


@dataclass(frozen=True)
class EvalFiles:
    """evaluate's files: the scores, their markdown table, per-sample details, lighteval's
    working folder."""

    results: str = "results.json"
    table: str = "results.md"
    details: str = "details"
    work: str = "work"
