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
