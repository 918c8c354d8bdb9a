"""Training plumbing shared by the SFT and GRPO stages: batch splitting, run directories,
resume from checkpoints, precision rules, saving and the manifest."""

from rlt_core.training.batching import BatchPlan, count_devices, plan_batch

__all__ = ["BatchPlan", "count_devices", "plan_batch"]
