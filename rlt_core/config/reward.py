"""Config of the RLT reward (section 3.3, Eq. 3 to 5; Table 3 "RLT reward")."""

from dataclasses import dataclass, field
from typing import Literal

from rlt_core.config.checks import bad, finalize, model_reference, non_negative, positive
from rlt_core.config.errors import ConfigIssue

KlEstimator = Literal["sampled", "k3", "full"]


@dataclass(frozen=True)
class RewardConfig:
    """Coefficients and scoring details of r_RLT = r_SS - lambda * r_KL (Eq. 5).

    In YAML and overrides the coefficient lambda is written `lambda` (`reward.lambda=0` for the
    Table 9 ablation); in Python it is `lam`, because `lambda` is a keyword.
    """

    lam: float = field(
        default=3.0,
        metadata={"key": "lambda", "help": "lambda, weight of r_KL in r_RLT (Eq. 5, Table 3)"},
    )
    alpha: float = field(
        default=0.01,
        metadata={"help": "alpha, weight of the min/max terms of r_SS and r_KL (Eq. 3-4)"},
    )
    format_penalty: float = field(
        default=-1.0,
        metadata={
            "help": "added to a completion without the explanation tags or past the maximum "
            "generation length (Table 3 'Format penalty', Appendix A.1)"
        },
    )
    kl_estimator: KlEstimator = field(
        default="sampled",
        metadata={
            "help": "per-token KL of r_KL: 'sampled' = log pi_theta(t) - log pi_s(t) at the "
            "sampled token (reference code), 'k3' = Schulman's k3 estimator, 'full' = exact "
            "KL over the vocabulary (the paper's literal Eq. 4). 'sampled' and 'k3' estimate "
            "a KL only on text the teacher itself sampled; on other text (a corpus' traces) "
            "'sampled' is a log-likelihood ratio and can be strongly negative: use 'full'"
        },
    )
    temperature: float = field(
        default=0.7,
        metadata={
            "help": "temperature of the teacher and student log-probs; equals the sampling "
            "temperature of teacher_rl (Table 3, reference behaviour)"
        },
    )
    student_model: str = field(
        default="bespokelabs/Bespoke-Stratos-7B",
        metadata={
            "help": "frozen student pi_s scoring the explanations: Bespoke-Stratos-7B "
            "(Appendix A.1; Table 3 lists its base, Qwen2.5-7B-Instruct)",
            "reference": True,
        },
    )
    logprob_chunk_size: int = field(
        default=1024,
        metadata={"help": "positions per log-softmax chunk when scoring long sequences (memory)"},
    )

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = non_negative(self, "lam", "alpha")
        issues += positive(self, "temperature", "logprob_chunk_size")
        if self.format_penalty > 0:
            issues.append(bad(self, "format_penalty", "must be <= 0", "set a penalty such as -1.0"))
        return issues + model_reference(self, "student_model")
