"""Global batch -> per-device micro-batch x gradient accumulation x devices."""

from __future__ import annotations

import pytest

from rlt_core.training import BatchPlan, count_devices, plan_batch


@pytest.mark.parametrize(
    ("global_batch", "devices", "max_per_device", "per_device", "accum"),
    [
        # Table 5 17K: 96 over 8 GPUs = 12 per device; largest divisor of 12 that is <= 4 is 4,
        # so 12 / 4 = 3 accumulation steps (4 * 3 * 8 = 96).
        (96, 8, 4, 4, 3),
        # 96 over 8 GPUs with at most 5 per device: divisors of 12 are 1, 2, 3, 4, 6, 12; the
        # largest <= 5 is 4 again (5 does not divide 12).
        (96, 8, 5, 4, 3),
        # Table 5 1K: 16 on one CPU, micro-batch 1 -> 16 accumulation steps.
        (16, 1, 1, 1, 16),
        # The cap above the per-device share: 16 over 4 devices = 4 each, all in one micro-batch.
        (16, 4, 64, 4, 1),
        # A prime per-device share (7): only 1 and 7 divide it; cap 6 -> 1 x 7 accumulation.
        (14, 2, 6, 1, 7),
    ],
)
def test_plan_batch_splits_the_global_batch(
    global_batch: int, devices: int, max_per_device: int, per_device: int, accum: int
) -> None:
    plan = plan_batch(global_batch, devices, max_per_device)
    assert plan == BatchPlan(global_batch, devices, per_device, accum)
    assert plan.per_device * plan.grad_accum * plan.num_devices == global_batch


def test_plan_batch_refuses_a_batch_that_does_not_divide_over_the_devices() -> None:
    # 96 / 5 = 19.2: no whole number of samples per device.
    with pytest.raises(ValueError, match=r"96 cannot be split evenly over 5 devices.*batch_size"):
        plan_batch(96, 5, 4)


@pytest.mark.parametrize("bad", ["global_batch", "num_devices", "max_per_device"])
def test_plan_batch_refuses_non_positive_sizes(bad: str) -> None:
    sizes = {"global_batch": 16, "num_devices": 1, "max_per_device": 1, bad: 0}
    with pytest.raises(ValueError, match=f"{bad}=0: must be a positive integer"):
        plan_batch(**sizes)


def test_count_devices_reads_the_launcher_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert count_devices() == 8
    monkeypatch.delenv("WORLD_SIZE")
    assert count_devices() >= 1


def test_batch_plan_to_dict_is_what_the_manifest_records() -> None:
    assert plan_batch(8, 1, 2).to_dict() == {
        "global_batch": 8,
        "num_devices": 1,
        "per_device": 2,
        "grad_accum": 4,
    }
