"""Where the questions come from: the teacher corpus, countdown, LIMR and the benchmarks.

A source is a hub id `org/name[:split]`, a local `.jsonl`/`.json`/`.parquet`/`.csv` file or
directory of parquet shards, or a URI such as `s3://bucket/corpus.parquet`; this is the syntax
`rlt_core.data.sources.read_table` reads.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from rlt_core.config.checks import bad, data_source, finalize, positive
from rlt_core.config.errors import ConfigIssue
from rlt_core.config.vocab import EVAL_TASKS

CorpusSchema = Literal["bespoke", "question_solution", "countdown"]
Validation = Literal["strict", "lenient"]

# Hub copies of the benchmarks of section 4.1 and Appendix C (countdown is generated instead).
PAPER_EVAL_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "aime24": "HuggingFaceH4/aime_2024",
        "math500": "HuggingFaceH4/MATH-500:test",
        "gpqa_diamond": "Idavidrein/gpqa",
        "livecodebench": "livecodebench/code_generation_lite:test",
        "olympiadbench": "Hothan/OlympiadBench:train",
    }
)


@dataclass(frozen=True)
class DataConfig:
    """Data sources and the generated countdown task (sections 4.1, 4.3, 4.4)."""

    corpus_source: str | None = field(
        default="bespokelabs/Bespoke-Stratos-17k",
        metadata={
            "help": "question-solution corpus of Li et al. (section 4.1, <17K pairs); null "
            "only with corpus_schema 'countdown' (generated from the countdown_* fields)",
            "reference": True,
        },
    )
    corpus_schema: CorpusSchema = field(
        default="bespoke",
        metadata={
            "help": "'bespoke' (system + conversations, Bespoke-Stratos-17k), "
            "'question_solution' (columns question, solution) or 'countdown'"
        },
    )
    validation: Validation = field(
        default="strict",
        metadata={"help": "'strict' fails on a malformed row, 'lenient' drops and counts it"},
    )
    subset_seed: int = field(
        default=42,
        metadata={"help": "seed of the random subset a recipe with num_train_samples draws"},
    )
    countdown_train_size: int = field(
        default=16000, metadata={"help": "countdown training pairs (section 4.4: 16K)"}
    )
    countdown_test_size: int = field(
        default=1000, metadata={"help": "countdown test questions (section 4.4: 1K)"}
    )
    countdown_min_numbers: int = field(
        default=3, metadata={"help": "fewest numbers per countdown question (section 4.4)"}
    )
    countdown_max_numbers: int = field(
        default=4, metadata={"help": "most numbers per countdown question (section 4.4)"}
    )
    countdown_seed: int = field(default=0, metadata={"help": "seed of the countdown generator"})
    countdown_max_dead_ends: int = field(
        default=12,
        metadata={
            "help": "failed branches written out in a countdown search trace (the baseline "
            "thought); fewer = shorter traces (project choice, not from the paper)"
        },
    )
    limr_source: str = field(
        default="GAIR/LIMR",
        metadata={"help": "LIMR questions of student RL (section 4.3)", "reference": True},
    )
    eval_sources: Mapping[str, str] = field(
        default_factory=lambda: PAPER_EVAL_SOURCES,
        metadata={
            "help": "source of each benchmark by task name (countdown is generated)",
            "reference": True,
        },
    )

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = positive(self, "countdown_train_size", "countdown_test_size")
        issues += positive(self, "countdown_min_numbers", "countdown_max_dead_ends")
        if self.countdown_max_numbers < self.countdown_min_numbers:
            rule = f"is below countdown_min_numbers={self.countdown_min_numbers}"
            issues.append(bad(self, "countdown_max_numbers", rule, "set it >= the minimum"))
        if self.corpus_source is None and self.corpus_schema != "countdown":
            message = (
                f"is null, but corpus_schema {self.corpus_schema!r} reads a corpus; give a hub "
                "id, local path or s3:// URI, or set corpus_schema: countdown (generated)."
            )
            issues.append(ConfigIssue("corpus_source", message))
        elif self.corpus_source is not None:
            issues += data_source(self.corpus_source, "corpus_source")
        issues += data_source(self.limr_source, "limr_source")
        return issues + self._eval_source_issues()

    def _eval_source_issues(self) -> list[ConfigIssue]:
        issues = []
        for task, source in self.eval_sources.items():
            path = f"eval_sources.{task}"
            if task not in EVAL_TASKS or task == "countdown":
                known = ", ".join(t for t in EVAL_TASKS if t != "countdown")
                message = (
                    f"unknown benchmark {task!r} (countdown is generated); use one of {known}."
                )
                issues.append(ConfigIssue(path, message))
            else:
                issues += data_source(source, path)
        return issues
