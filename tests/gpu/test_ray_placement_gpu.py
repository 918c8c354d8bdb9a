"""Ray places a stage on the GPUs it reserved (skipped without CUDA): under the ray runner a
stage's subprocess sees exactly the GPUs Ray gave its task (`tasks.runtime.placement`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu

CHILD = "import torch; print(torch.cuda.device_count())"


def test_a_stage_subprocess_sees_only_the_gpus_ray_gave_its_task() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ray = pytest.importorskip("ray")
    from tasks.runtime import placement

    @ray.remote(num_gpus=1, num_cpus=1)
    def stage_like() -> tuple[list[str], str, int]:
        placed = placement()
        assert placed is not None
        env = placed.env()
        seen = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
        )
        gpu_ids = [str(i) for i in ray.get_runtime_context().get_accelerator_ids()["GPU"]]
        return gpu_ids, env["CUDA_VISIBLE_DEVICES"], int(seen.stdout.strip())

    ray.init(num_gpus=torch.cuda.device_count(), num_cpus=2, include_dashboard=False)
    try:
        gpu_ids, visible, count = ray.get(stage_like.remote())
    finally:
        ray.shutdown()
    assert len(gpu_ids) == 1 and visible == gpu_ids[0] and count == 1
