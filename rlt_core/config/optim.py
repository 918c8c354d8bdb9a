"""Optimizer checks shared by the SFT and GRPO recipes (Tables 3, 5 and 6)."""

from typing import Any

from rlt_core.config.checks import bad, non_negative, positive, probability
from rlt_core.config.errors import ConfigIssue


def optimizer_issues(obj: Any) -> list[ConfigIssue]:
    """Check AdamW and schedule fields: positive sizes, betas in [0, 1), a coherent schedule.

    A constant schedule ends where it starts (final lr = lr, Tables 3 and 6); a cosine schedule
    decays to a final lr no higher than the peak (1e-5 -> 1e-6, Table 5).
    """
    issues = positive(obj, "batch_size", "learning_rate", "adam_epsilon", "max_grad_norm")
    issues += positive(obj, "save_steps")
    issues += non_negative(obj, "weight_decay", "final_learning_rate")
    issues += probability(obj, "adam_beta1", "adam_beta2")
    for name in ("adam_beta1", "adam_beta2"):
        if getattr(obj, name) == 1.0:
            issues.append(bad(obj, name, "must be < 1", "set e.g. 0.9 or 0.999"))
    if obj.lr_scheduler == "constant" and obj.final_learning_rate != obj.learning_rate:
        rule = f"differs from learning_rate {obj.learning_rate!r} under a constant schedule"
        fix = "set final_learning_rate equal to learning_rate, or lr_scheduler: cosine"
        issues.append(bad(obj, "final_learning_rate", rule, fix))
    if obj.lr_scheduler == "cosine" and obj.final_learning_rate > obj.learning_rate:
        rule = f"exceeds the peak learning_rate {obj.learning_rate!r}"
        issues.append(bad(obj, "final_learning_rate", rule, "set it <= learning_rate"))
    return issues
