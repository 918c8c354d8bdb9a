"""Global batch -> per-device micro-batch x gradient accumulation x devices (pure arithmetic).

The configs state the paper's global batch (Table 5: 96 or 16 samples; Tables 3 and 6: 1024 or
256 completions); the hardware decides how it is split. The identity every split keeps is

    global_batch = per_device * grad_accum * num_devices

so one optimizer step always sees the paper's number of samples, whatever the machine. The
largest micro-batch a device holds is a memory knob (`resources.<stage>.micro_batch`), not part
of any stage's key. The training stages split with `plan_batch`; the fit planner
(`rlt_core.fit`) estimates activations with the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

SFT_MICRO_BATCH = 1
"""The SFT stages' default: one sequence per device micro-batch (16,384-token rows)."""

GRPO_MICRO_BATCH = 8
"""The GRPO stages' default: the most completions one device holds per micro-batch. The paper's
1024 on 8 GPUs (Appendix A.1) becomes 8 per device x 16 accumulation steps."""


def max_micro_batch(trainer: str, configured: int = 0) -> int:
    """The most samples one device holds per micro-batch in a training run of `trainer`
    ("sft" or "grpo", its declaration's `fit.kind`): `configured`
    (`resources.<stage>.micro_batch`), or when 0 that trainer's default."""
    if configured:
        return configured
    if trainer not in ("sft", "grpo"):
        raise ValueError(f"{trainer!r} is not a trainer: 'sft' or 'grpo'")
    return SFT_MICRO_BATCH if trainer == "sft" else GRPO_MICRO_BATCH


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's `global_batch` samples are spread over devices and micro-steps."""

    global_batch: int
    num_devices: int
    per_device: int
    grad_accum: int

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (recorded in the stage's manifest)."""
        return {
            "global_batch": self.global_batch,
            "num_devices": self.num_devices,
            "per_device": self.per_device,
            "grad_accum": self.grad_accum,
        }


def plan_batch(global_batch: int, num_devices: int, max_per_device: int) -> BatchPlan:
    """Split `global_batch` into the largest per-device micro-batch <= `max_per_device`.

    Example: 96 over 8 devices with at most 4 per device -> 12 samples per device per step,
    4 per micro-batch, 12 / 4 = 3 accumulation steps (4 * 3 * 8 = 96). Raises ValueError when
    the global batch does not divide evenly over the devices.
    """
    for name, value in (
        ("global_batch", global_batch),
        ("num_devices", num_devices),
        ("max_per_device", max_per_device),
    ):
        if value < 1:
            raise ValueError(f"{name}={value}: must be a positive integer.")
    if global_batch % num_devices:
        options = [n for n in range(1, global_batch + 1) if global_batch % n == 0]
        raise ValueError(
            f"global batch {global_batch} cannot be split evenly over {num_devices} devices "
            f"({global_batch} / {num_devices} = {global_batch / num_devices:g}); every optimizer "
            f"step must see the same samples on each device. Run on a device count that divides "
            f"it ({', '.join(map(str, options[:10]))}, ...) or change the recipe's batch_size."
        )
    per_rank = global_batch // num_devices
    per_device = max(d for d in range(1, min(max_per_device, per_rank) + 1) if per_rank % d == 0)
    return BatchPlan(global_batch, num_devices, per_device, per_rank // per_device)
