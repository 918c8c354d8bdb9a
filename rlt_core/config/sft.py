"""SFT recipes: the teacher warm-up (Appendix A.1) and student distillation (Table 5).

Batch sizes are the paper's global batch; the training stage derives the per-device batch and
gradient accumulation from the number of devices.
"""

from dataclasses import dataclass, field
from typing import Literal

from rlt_core.config.checks import bad, finalize, model_reference, positive, probability
from rlt_core.config.errors import ConfigIssue
from rlt_core.config.optim import optimizer_issues
from rlt_core.config.vocab import Dtype, LrScheduler

SftDataset = Literal["corpus", "countdown"]


@dataclass(frozen=True)
class SFTRecipe:
    """Fields of one SFT run; defaults are Table 5, column "Full fine-tuning" (17K)."""

    model: str = field(
        default="Qwen/Qwen2.5-7B-Instruct",
        metadata={
            "help": "model fine-tuned: Qwen2.5-7B/32B-Instruct (Table 5 'Distilled model')",
            "reference": True,
        },
    )
    num_train_samples: int | None = field(
        default=16710,
        metadata={
            "help": "training rows (Table 5); fewer than the dataset = the first N rows of a "
            "shuffle seeded by data.subset_seed; null = every row"
        },
    )
    num_epochs: float = field(default=3.0, metadata={"help": "number of epochs (Table 5)"})
    batch_size: int = field(default=96, metadata={"help": "global batch size (Table 5)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (Table 5)"})
    lr_scheduler: LrScheduler = field(
        default="cosine", metadata={"help": "learning rate decay (Table 5: Cosine)"}
    )
    final_learning_rate: float = field(
        default=1e-6, metadata={"help": "learning rate at the end of the decay (Table 5)"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (Table 5)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 (Table 5)"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (Table 5)"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon (Table 5)"})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "fraction of steps of linear warmup (Table 5)"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (Table 5)"})
    dtype: Dtype = field(default="bfloat16", metadata={"help": "training dtype (Table 5)"})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "gradient checkpointing (Table 5)"}
    )
    max_length: int = field(
        default=16384,
        metadata={"help": "maximum tokens per sample; longer ones are cut (Li et al. via B.1)"},
    )
    save_steps: int = field(default=100, metadata={"help": "checkpoint every N steps (resume)"})
    seed: int = field(default=42, metadata={"help": "training seed"})

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = positive(self, "num_train_samples", "num_epochs", "max_length")
        issues += probability(self, "warmup_ratio")
        if self.warmup_ratio == 1.0:
            issues.append(bad(self, "warmup_ratio", "leaves no step after warmup", "set < 1"))
        return issues + optimizer_issues(self) + model_reference(self, "model")


@dataclass(frozen=True)
class TeacherSFTConfig(SFTRecipe):
    """Teacher warm-up in the RLT format: the 1K recipe of Table 5 at double the epochs.

    Appendix A.1: "the same distillation hyperparameters used for the 1K data subset ... but
    with double the number of epochs" (5 -> 10). The paper does not state the number of rows.
    """

    num_train_samples: int | None = field(
        default=None,
        metadata={"help": "warm-up rows; null = the whole corpus (not stated in Appendix A.1)"},
    )
    num_epochs: float = field(
        default=10.0, metadata={"help": "2 x the 5 epochs of Table 5 '1K' (Appendix A.1)"}
    )
    batch_size: int = field(default=16, metadata={"help": "global batch (Table 5 '1K')"})
    weight_decay: float = field(
        default=1e-4, metadata={"help": "AdamW weight decay (Table 5 '1K')"}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (Table 5 '1K')"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "warmup ratio (Table 5 '1K')"})


@dataclass(frozen=True)
class StudentSFTConfig(SFTRecipe):
    """One student distillation recipe of Table 5 (defaults: column "Full fine-tuning")."""

    dataset: SftDataset = field(
        default="corpus",
        metadata={
            "help": "whose teacher traces to train on: 'corpus' (data.corpus_source) or "
            "'countdown' (the generated countdown train split, section 4.4)"
        },
    )
