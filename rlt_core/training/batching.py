"""The batch split of a training run on this machine: `rlt_core.batches`' arithmetic over the
devices this process trains on (`count_devices`)."""

from __future__ import annotations

import os

import torch

from rlt_core.batches import BatchPlan, plan_batch

__all__ = ["BatchPlan", "count_devices", "plan_batch"]


def count_devices() -> int:
    """Data-parallel width of this run: processes under accelerate/torchrun, else visible GPUs.

    `accelerate launch` and `torchrun` set WORLD_SIZE in every process (one GPU each); a plain
    process sees every GPU, and the HF Trainer then splits each micro-batch over them. On CPU: 1.
    """
    world_size = os.environ.get("WORLD_SIZE")
    if world_size:
        return int(world_size)
    return max(1, torch.cuda.device_count())
