"""The RLT reward (paper section 3.3, Eq. 3 to 5): pure term functions in `terms`."""

from rlt_core.reward.terms import (
    KL_ESTIMATORS,
    KLEstimator,
    RewardBreakdown,
    compute_reward,
    kl_k3,
    kl_sampled,
    per_token_kl,
    r_kl,
    r_rlt,
    r_ss,
)

__all__ = [
    "KL_ESTIMATORS",
    "KLEstimator",
    "RewardBreakdown",
    "compute_reward",
    "kl_k3",
    "kl_sampled",
    "per_token_kl",
    "r_kl",
    "r_rlt",
    "r_ss",
]

# Model-facing half (spans, scorer, TRL reward object, dataset scoring): see each module.
from rlt_core.reward.score import ScoreRun, score_dataset  # noqa: E402
from rlt_core.reward.scorer import RLTScorer  # noqa: E402
from rlt_core.reward.spans import (  # noqa: E402
    AlignedSample,
    SpanError,
    align_completion,
    align_text,
    check_same_vocabulary,
)
from rlt_core.reward.trl import RLTReward  # noqa: E402

__all__ += [
    "AlignedSample",
    "RLTReward",
    "RLTScorer",
    "ScoreRun",
    "SpanError",
    "align_completion",
    "align_text",
    "check_same_vocabulary",
    "score_dataset",
]
