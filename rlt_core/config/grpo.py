"""GRPO recipes: the teacher's RL phase (Table 3) and the students' traditional RL (Table 6).

`batch_size` is the paper's global batch counted in completions, as in TRL: each step samples
batch_size / num_generations prompts and num_generations completions for each (Table 3:
1024 / 64 = 16 prompts per step, 125 steps = 2,000 prompts, "less than a single epoch").
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rlt_core.config.checks import (
    bad,
    finalize,
    model_reference,
    non_negative,
    positive,
    probability,
    sampling,
)
from rlt_core.config.errors import ConfigIssue
from rlt_core.config.optim import optimizer_issues
from rlt_core.config.vocab import Backend, Dtype, LrScheduler

VllmMode = Literal["colocate", "server"]
RlDataset = Literal["limr", "countdown"]


@dataclass(frozen=True)
class GRPORecipe:
    """Fields of one GRPO run; defaults are Table 3 (identical to Table 6 except steps, batch)."""

    model: str = field(
        default="Qwen/Qwen2.5-7B-Instruct",
        metadata={"help": "fine-tuned model (Tables 3, 6)", "reference": True},
    )
    max_steps: int = field(default=125, metadata={"help": "number of training steps (Tables 3, 6)"})
    batch_size: int = field(
        default=1024, metadata={"help": "global batch in completions (Tables 3, 6)"}
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "learning rate (Tables 3, 6)"})
    lr_scheduler: LrScheduler = field(
        default="constant", metadata={"help": "learning rate decay (Tables 3, 6: Constant)"}
    )
    final_learning_rate: float = field(
        default=1e-6, metadata={"help": "final learning rate (Tables 3, 6)"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (Tables 3, 6)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 (Tables 3, 6)"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (Tables 3, 6)"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon (Tables 3, 6)"})
    warmup_steps: int = field(default=0, metadata={"help": "warmup steps (Tables 3, 6)"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "maximum gradient norm (Tables 3, 6)"}
    )
    max_completion_length: int = field(
        default=16384, metadata={"help": "maximum generation context size (Tables 3, 6)"}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "generation temperature (Tables 3, 6)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "generation top-p (Tables 3, 6)"})
    top_k: int | None = field(
        default=None, metadata={"help": "generation top-k; null = off (Tables 3, 6: 'No')"}
    )
    min_p: float = field(default=0.0, metadata={"help": "generation min-p (Tables 3, 6)"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "generation repetition penalty (Tables 3, 6)"}
    )
    num_generations: int = field(default=64, metadata={"help": "GRPO group size G (Tables 3, 6)"})
    beta: float = field(default=0.04, metadata={"help": "GRPO KL coefficient beta (Tables 3, 6)"})
    ref_model_sync_steps: int = field(
        default=32,
        metadata={"help": "reference model sync. steps (Tables 3, 6; TRL sync_ref_model)"},
    )
    ref_model_mixup_alpha: float = field(
        default=0.9, metadata={"help": "reference model sync. mixup (Tables 3, 6)"}
    )
    dtype: Dtype = field(default="bfloat16", metadata={"help": "training dtype (Tables 3, 6)"})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "gradient checkpointing (Tables 3, 6)"}
    )
    generation_backend: Backend = field(
        default="vllm", metadata={"help": "rollout engine: 'vllm' (GPU) or 'transformers' (CPU)"}
    )
    vllm_mode: VllmMode = field(
        default="colocate", metadata={"help": "TRL vLLM mode when generation_backend is 'vllm'"}
    )
    save_steps: int = field(default=25, metadata={"help": "checkpoint every N steps (resume)"})
    seed: int = field(default=42, metadata={"help": "training and sampling seed"})

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def rollout_sampling(self) -> dict[str, Any]:
        """How the rollouts are sampled, in `SamplingRecipe`'s names: what a stage that samples
        as this run's rollouts copies (teacher_eval), listed once."""
        return {
            "max_new_tokens": self.max_completion_length,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
        }

    def _issues(self) -> list[ConfigIssue]:
        issues = positive(self, "max_steps", "max_completion_length", "ref_model_sync_steps")
        issues += non_negative(self, "warmup_steps", "beta")
        issues += probability(self, "ref_model_mixup_alpha")
        issues += sampling(self) + optimizer_issues(self) + model_reference(self, "model")
        if self.num_generations < 2:
            rule = "must be >= 2: GRPO normalises rewards within a group"
            issues.append(bad(self, "num_generations", rule, "set e.g. 64 (Table 3)"))
        elif self.batch_size % self.num_generations:
            rule = f"is not divisible by the group size num_generations={self.num_generations}"
            fix = "set batch_size to a multiple of num_generations (Table 3: 1024 = 16 x 64)"
            issues.append(bad(self, "batch_size", rule, fix))
        return issues


@dataclass(frozen=True)
class TeacherRLConfig(GRPORecipe):
    """RL phase of the teacher with the RLT reward (section 3, Table 3).

    `model` is the base LM; when teacher_sft runs, RL starts from its checkpoint instead.
    """


@dataclass(frozen=True)
class StudentRLConfig(GRPORecipe):
    """One traditional-RL recipe of Table 6 with correctness rewards (section 4.3, Appendix B.3).

    Defaults are the column "LIMR data traditional RL". The length of the run is `max_steps`
    alone: Table 6's "epochs" row is not a setting (its countdown column contradicts its own
    steps, see configs/profiles/paper-7b.yaml); the epochs a run realised are in its metrics
    (`data.epochs`).
    """

    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "num_epochs": "removed: student RL runs `max_steps` steps of batch_size / num_generations "
        "prompts; set max_steps (the epochs a run realised are in its metrics, data.epochs)."
    }

    max_steps: int = field(default=86, metadata={"help": "number of training steps (Table 6)"})
    num_train_samples: int | None = field(
        default=1389, metadata={"help": "training rows (Table 6); null = every row"}
    )
    dataset: RlDataset = field(
        default="limr",
        metadata={
            "help": "questions to train on: 'limr' (data.limr_source) or 'countdown' (the "
            "generated countdown train split, section 4.4)"
        },
    )
    cold_start: str | None = field(
        default=None,
        metadata={
            "help": "name of the student_sft recipe whose student starts this RL (Table 2 "
            "'+ RL'); null = RL directly from `model` (Table 2 'RL no cold-start')"
        },
    )
    reward_unformatted: float = field(
        default=-1.0, metadata={"help": "reward of an unformatted answer (section 2)"}
    )
    reward_wrong: float = field(
        default=-0.5, metadata={"help": "reward of a formatted wrong answer (section 2)"}
    )
    reward_correct: float = field(
        default=1.0, metadata={"help": "reward of a correct answer (section 2)"}
    )

    def _issues(self) -> list[ConfigIssue]:
        issues = super()._issues() + positive(self, "num_train_samples")
        if not self.reward_unformatted <= self.reward_wrong < self.reward_correct:
            rule = (
                f"breaks reward_unformatted <= reward_wrong < reward_correct "
                f"({self.reward_unformatted} <= {self.reward_wrong} < {self.reward_correct})"
            )
            issues.append(bad(self, "reward_wrong", rule, "use e.g. -1 / -0.5 / +1 (section 2)"))
        return issues
