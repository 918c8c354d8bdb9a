"""Figures: the fit planner's ZeRO-3 model states (`rlt_core.fit.zero3_model_states`) beside
DeepSpeed's own estimator, for the Qwen2.5-7B and -32B shapes on one node of 8 GPUs.

DeepSpeed is not in the CPU set (only the `gpu` extra). Its PyPI source package builds as pure
Python without CUDA, so this runs in any environment that has it and PyYAML:

    uv venv /tmp/dsenv && DS_BUILD_OPS=0 uv pip install --python /tmp/dsenv/bin/python \\
        "torch==2.13.0+cpu" deepspeed pyyaml
    PYTHONPATH=. /tmp/dsenv/bin/python benchmarks/deepspeed_states.py

It prints DeepSpeed's `estimate_zero3_model_states_mem_needs_all_cold` table for each shape
(what DeepSpeed's documentation tells users to run), then for each offload setting the GPU
bytes per GPU from `estimate_zero3_model_states_mem_needs` beside the planner's (and the node's
CPU bytes with the optimizer offloaded), and exits 1 when any differ by a byte.
"""

from __future__ import annotations

import sys

from deepspeed.runtime.zero.stage3 import (
    estimate_zero3_model_states_mem_needs,
    estimate_zero3_model_states_mem_needs_all_cold,
)
from qwen_shapes import QWEN_SHAPES

from rlt_core.fit import GIB, ModelShape, zero3_model_states, zero3_offload_cpu_bytes

SHAPES = {"Qwen2.5-7B": QWEN_SHAPES["qwen2.5-7b"], "Qwen2.5-32B": QWEN_SHAPES["qwen2.5-32b"]}
GPUS = 8
SETTINGS = {  # name: (DeepSpeed's cpu_offload, cpu_offload_params), the planner's keywords
    "no offload": ((False, False), {}),
    "optimizer offloaded": ((True, False), {"offload_optimizer": True}),
    "optimizer and parameters offloaded": ((True, True), {"offload_params": True}),
}


def main() -> int:
    mismatches = 0
    for name, config in SHAPES.items():
        shape = ModelShape.from_config({**config, "model_type": "qwen2"}, name)
        params, largest = shape.params, shape.largest_layer_params
        print(f"== {name}: {params:,} parameters, largest layer {largest:,}")
        estimate_zero3_model_states_mem_needs_all_cold(params, largest, GPUS, 1)
        for setting, ((offload, offload_params), ours) in SETTINGS.items():
            _, theirs, _ = estimate_zero3_model_states_mem_needs(
                params, largest, GPUS, 1, cpu_offload=offload, cpu_offload_params=offload_params
            )
            planner = zero3_model_states(params, largest, GPUS, **ours)
            same = "same" if planner == theirs else "DIFFERENT"
            mismatches += planner != theirs
            print(f"  {setting:36s} DeepSpeed {theirs / GIB:7.2f} GiB/GPU, "
                  f"planner {planner / GIB:7.2f} GiB/GPU: {same}")  # fmt: skip
        cpu, _, _ = estimate_zero3_model_states_mem_needs(
            params, largest, GPUS, 1, cpu_offload=True, cpu_offload_params=False
        )
        planner_cpu = zero3_offload_cpu_bytes(params)
        mismatches += int(cpu) != planner_cpu
        print(f"  {'CPU of the node, optimizer offloaded':36s} DeepSpeed {cpu / GIB:7.2f} GiB, "
              f"planner {planner_cpu / GIB:7.2f} GiB: "
              f"{'same' if int(cpu) == planner_cpu else 'DIFFERENT'}")  # fmt: skip
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
