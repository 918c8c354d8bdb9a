"""Generation-only stages: teacher trace generation (Table 4) and student evaluation (Table 7).

Tables 4 and 7 list the same generation hyperparameters, so both configs share `SamplingRecipe`.
"""

from dataclasses import dataclass, field

from rlt_core.config.checks import (
    bad,
    finalize,
    non_negative,
    positive,
    probability,
    sampling,
)
from rlt_core.config.errors import ConfigIssue
from rlt_core.config.vocab import Backend, Dtype, EvalTask


@dataclass(frozen=True)
class SamplingRecipe:
    """Generation hyperparameters of Tables 4 and 7 plus the engine that runs them."""

    max_new_tokens: int = field(
        default=32764, metadata={"help": "maximum generation context size (Tables 4 and 7)"}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "generation temperature (Tables 4 and 7)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "generation top-p (Tables 4 and 7)"})
    top_k: int | None = field(
        default=None, metadata={"help": "generation top-k; null = off (Tables 4 and 7: 'No')"}
    )
    min_p: float = field(default=0.0, metadata={"help": "generation min-p (Tables 4 and 7)"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "generation repetition penalty (Tables 4 and 7)"}
    )
    dtype: Dtype = field(default="bfloat16", metadata={"help": "generation dtype (Tables 4, 7)"})
    backend: Backend = field(
        default="vllm", metadata={"help": "engine: 'vllm' (GPU) or 'transformers' (CPU)"}
    )
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "GPUs per vLLM engine (tensor parallelism)"}
    )
    seed: int = field(default=42, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = positive(self, "max_new_tokens", "tensor_parallel_size") + sampling(self)
        if self.backend == "transformers" and self.tensor_parallel_size != 1:
            rule = "needs backend 'vllm'; the transformers engine runs on one device"
            issues.append(bad(self, "tensor_parallel_size", rule, "set 1 or backend: vllm"))
        return issues


@dataclass(frozen=True)
class GenerateTracesConfig(SamplingRecipe):
    """The teacher explains every question-solution pair (Appendix B.1, Table 4).

    32B rule (Appendix B.1): collect up to `num_candidates` traces per pair, keep one whose
    student sample fits `max_student_tokens`, otherwise the candidate with the best r_SS.
    7B students use a single completion (num_candidates = 1).
    """

    num_candidates: int = field(
        default=1,
        metadata={"help": "traces per question-solution pair: 1 for 7B, 16 for 32B (App. B.1)"},
    )
    max_student_tokens: int | None = field(
        default=16384,
        metadata={"help": "length a kept trace must fit, the SFT max length (Appendix B.1)"},
    )
    shard_size: int = field(
        default=512, metadata={"help": "pairs per output shard; a resumed run skips done shards"}
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "prompts per generate call of the transformers engine (vLLM batches on its own)"
        },
    )
    score_traces: bool = field(
        default=False,
        metadata={
            "help": "also score every kept trace with the RLT reward (Eq. 3-5) and record "
            "the breakdown (one teacher and one student forward per trace)"
        },
    )

    def _issues(self) -> list[ConfigIssue]:
        return super()._issues() + positive(
            self, "num_candidates", "max_student_tokens", "shard_size", "batch_size"
        )


@dataclass(frozen=True)
class EvaluateConfig(SamplingRecipe):
    """Lighteval pass@1 of each student (section 4.1, Appendix B.4, Table 7)."""

    tasks: tuple[EvalTask, ...] = field(
        default=("aime24", "math500", "gpqa_diamond"),
        metadata={
            "help": "benchmarks: AIME24, MATH500, GPQA Diamond (section 4.1); also "
            "livecodebench, olympiadbench (Appendix C) and countdown (section 4.4)"
        },
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "questions per task; null = all (the paper)"}
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "prompts per generate call of the transformers engine (CPU memory); vLLM "
            "schedules its own batches"
        },
    )

    def _issues(self) -> list[ConfigIssue]:
        issues = super()._issues() + positive(self, "max_samples", "batch_size")
        if not self.tasks:
            issues.append(bad(self, "tasks", "is empty", "list at least one task, e.g. [aime24]"))
        if len(set(self.tasks)) != len(self.tasks):
            issues.append(bad(self, "tasks", "repeats a task", "list each task once"))
        return issues


@dataclass(frozen=True)
class TeacherEvalConfig:
    """A teacher judged on its own objective on held-out pairs (project stage teacher_eval).

    The teacher_sft and the teacher_rl checkpoints each explain the same held-out
    question-solution pairs (same prompts, same seeds), sampled as teacher_rl's rollouts are
    (its temperature, top-p/k/min-p and completion limit), and every explanation is scored with
    the RLT reward (Eq. 5, with the teacher that wrote it, as in training). The report gives
    the mean per-pair difference with a 95% confidence interval.
    """

    held_out: EvalTask | None = field(
        default=None,
        metadata={
            "help": "evaluation task whose table (data stage, eval/<task>.parquet) holds the "
            "held-out pairs; it needs solutions. null = the first of countdown, math500, "
            "aime24 that evaluate.tasks lists (none: teacher_eval is skipped)"
        },
    )
    num_pairs: int | None = field(
        default=64, metadata={"help": "held-out pairs explained; null = all of the table"}
    )
    num_samples: int = field(
        default=4, metadata={"help": "explanations per pair and teacher (one seed each)"}
    )
    dtype: Dtype = field(default="bfloat16", metadata={"help": "generation dtype"})
    backend: Backend = field(
        default="vllm", metadata={"help": "engine: 'vllm' (GPU) or 'transformers' (CPU)"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "prompts per generate call of the transformers engine"}
    )
    seed: int = field(default=1234, metadata={"help": "sampling seed, the same for both teachers"})

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        return positive(self, "num_pairs", "num_samples", "batch_size")


@dataclass(frozen=True)
class RefineTracesConfig:
    """Table 2's "RL cold-start (GPT)": a chat model behind an OpenAI-compatible endpoint
    reformats the RL teacher's raw answers into the student format (section 4.3).

    The endpoint (`base_url`) and its key (the environment variable `api_key_env` names) say
    where the requests go, not what comes back: they are in no key and no manifest. The model
    name, the prompt and the sampling values are keyed.
    """

    model: str | None = field(
        default="gpt-4.1-mini",
        metadata={
            "help": "the endpoint's chat model (section 4.3: GPT-4.1-mini); null = the stage "
            "is not run and the report says so"
        },
    )
    base_url: str | None = field(
        default=None,
        metadata={
            "help": "the OpenAI-compatible endpoint (http(s)://host:port/v1); null = "
            "$OPENAI_BASE_URL, else OpenAI's API. In no key"
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "the environment variable holding the endpoint's API key (the key itself "
            "is never in a profile, a key or a manifest)"
        },
    )
    temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature (SkyThought's conversion: 0.7)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "sampling top-p"})
    max_tokens: int = field(
        default=16384,
        metadata={"help": "longest converted answer; a longer one is cut and dropped ('cut')"},
    )
    seed: int = field(default=42, metadata={"help": "sampling seed (row i asks with seed + i)"})
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once; in no key"})
    max_retries: int = field(
        default=6,
        metadata={
            "help": "retries of a request refused for a transient reason (connection, 408, "
            "409, 429, 5xx), with exponential backoff; in no key"
        },
    )
    timeout_s: float = field(default=600.0, metadata={"help": "seconds per request; in no key"})
    shard_size: int = field(
        default=256,
        metadata={"help": "rows per output shard; a resumed run skips done shards. In no key"},
    )

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = positive(self, "max_tokens", "concurrency", "timeout_s", "shard_size")
        issues += non_negative(self, "temperature", "max_retries") + probability(self, "top_p")
        if self.model is not None and not self.model.strip():
            issues.append(bad(self, "model", "is empty", "name the endpoint's model, or null"))
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            rule = "is not an http(s) URL"
            issues.append(bad(self, "base_url", rule, "set e.g. http://127.0.0.1:8000/v1"))
        if not self.api_key_env.replace("_", "").isalnum():
            rule = "is not an environment variable name"
            issues.append(bad(self, "api_key_env", rule, "set e.g. OPENAI_API_KEY"))
        return issues
