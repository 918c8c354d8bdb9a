"""What a stage really computes with: its device, its dtype and how it is launched.

The one device-and-precision policy of every model-running stage (generation, the reward's
scorer, training, evaluation read it here): on a CPU always float32 (bf16 autocast on
CPU was about 10x slower here, fp16 is not supported), on GPUs the recipe's dtype; training on
more than one GPU launches through `accelerate` with DeepSpeed ZeRO-3
(`configs/accelerate/zero3.yaml`). `numerics` is that rule as a stage key sees it: one shared
store never mixes a laptop's float32 artifact with a cluster's bf16 one under one key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlt_core.config import config_dir


def gpu_count() -> int:
    """The CUDA GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_dtype(recipe_dtype: str, gpus: int | None = None) -> str:
    """The dtype a stage computes in: float32 without a GPU, else the recipe's."""
    gpus = gpu_count() if gpus is None else gpus
    return recipe_dtype if gpus else "float32"


def inference_device() -> Any:
    """The `torch.device` local inference runs on: the first CUDA GPU when there is one, else
    the CPU."""
    import torch

    return torch.device("cuda" if gpu_count() else "cpu")


def inference_dtype(recipe_dtype: str) -> Any:
    """The `torch.dtype` of `run_dtype`: the recipe's on a GPU, float32 on a CPU."""
    import torch

    return getattr(torch, run_dtype(recipe_dtype))


def zero3_config() -> Path:
    """`configs/accelerate/zero3.yaml`: DeepSpeed ZeRO-3, bf16, 8 processes on one node."""
    return config_dir() / "accelerate" / "zero3.yaml"


def zero3_offload_config() -> Path:
    """`configs/accelerate/zero3_offload.yaml`: zero3.yaml with AdamW's states in CPU memory."""
    return config_dir() / "accelerate" / "zero3_offload.yaml"


def zero3_cpu_config(*, offload_optimizer: bool = False) -> Path:
    """`configs/accelerate/zero3_cpu.yaml` (or `zero3_offload_cpu.yaml`): the ZeRO-3 launch on
    CPU processes, float32, collectives on gloo; the rehearsal of the GPU configs."""
    name = "zero3_offload_cpu.yaml" if offload_optimizer else "zero3_cpu.yaml"
    return config_dir() / "accelerate" / name


def accelerate_config(
    gpus: int | None = None, *, offload_optimizer: bool = False, nodes: int = 1
) -> Path | None:
    """The accelerate config a training stage launches with: ZeRO-3 on more than one GPU (with
    the optimizer offloaded to CPU when `offload_optimizer`), None (a plain process) on a CPU or
    one GPU. A run over several `nodes` is always a ZeRO-3 launch: on machines without GPUs,
    one CPU process per node (`zero3_cpu_config`)."""
    gpus = gpu_count() if gpus is None else gpus
    if max(gpus, 1) * nodes <= 1:
        return None
    if gpus == 0:
        return zero3_cpu_config(offload_optimizer=offload_optimizer)
    return zero3_offload_config() if offload_optimizer else zero3_config()


def offloads_optimizer(config: Path) -> bool:
    """Whether the accelerate config `config` keeps AdamW's states in CPU memory (DeepSpeed's
    `offload_optimizer_device: cpu`: zero3_offload.yaml and its CPU variant)."""
    import yaml

    found = yaml.safe_load(Path(config).read_text()) or {}
    return (found.get("deepspeed_config") or {}).get("offload_optimizer_device") == "cpu"


def offload_problem() -> str | None:
    """Why an offloaded optimizer cannot step on this machine, or None. DeepSpeed steps it
    with its CPU Adam op, which a plain `pip install deepspeed` compiles on first use (after
    the model has loaded): that needs ninja and a working C++ toolchain."""
    try:
        from deepspeed.git_version_info import installed_ops
        from deepspeed.ops.op_builder import CPUAdamBuilder
    except ImportError:
        return "DeepSpeed is not installed here: install the `gpu` extra (pip install '.[gpu]')"
    if installed_ops.get("cpu_adam"):
        return None  # built at install time
    fix = "reinstall DeepSpeed with the op built: DS_BUILD_CPU_ADAM=1 pip install deepspeed"
    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        return f"DeepSpeed's CPU Adam is not built and ninja is missing to build it: {fix}"
    if not CPUAdamBuilder().is_compatible(verbose=False):
        return f"DeepSpeed's CPU Adam cannot be built on this machine: {fix}"
    return None


def no_cpu_shm_collectives() -> None:
    """In a DeepSpeed launch on CPUs (the ZeRO-3 rehearsal), keep DeepSpeed from compiling its
    shared-memory collectives op.

    DeepSpeed's torch backend compiles `deepspeed_shm_comm` (g++, about 35 s the first time in
    a virtual environment) whenever the op could build, although only its inference all-reduce
    uses it: training's collectives go through gloo either way. Marked unavailable in this
    process, the backend goes straight to gloo. With a GPU, or outside a DeepSpeed launch, it
    does nothing (CUDA never builds that op).
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true":
        return
    import torch

    if torch.cuda.is_available():
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def runs_vllm(arguments: Any) -> bool:
    """Whether a stage run's config arguments choose the vLLM engine anywhere: a field named
    `backend` or `generation_backend` set to 'vllm', at any depth of the dataclasses, mappings
    and sequences given (a stage's `reads(cfg, recipe)`)."""
    if dataclasses.is_dataclass(arguments) and not isinstance(arguments, type):
        for field in dataclasses.fields(arguments):
            value = getattr(arguments, field.name)
            if field.name.endswith("backend") and value == "vllm":
                return True
            if runs_vllm(value):
                return True
        return False
    if isinstance(arguments, dict):
        return any(runs_vllm(value) for value in arguments.values())
    if isinstance(arguments, (list, tuple)):
        return any(runs_vllm(value) for value in arguments)
    return False


def without_unused_vllm(arguments: Any) -> None:
    """Keep vLLM out of this process when a stage run's config arguments run no vLLM engine
    (`runs_vllm`).

    TRL's GRPO trainer imports vLLM whenever it is installed (about 4 s per process here, with
    a warning when its version is newer than TRL's tested range), although a run with
    `generation_backend: transformers` never calls it; a ZeRO-3 launch pays that in every rank.
    A `None` entry in `sys.modules` is Python's own way to make a package unimportable: TRL's
    `is_vllm_available()` then answers False and nothing imports it. Does nothing when vLLM is
    already imported.
    """
    import sys

    if not runs_vllm(arguments):
        sys.modules.setdefault("vllm", None)  # type: ignore[arg-type]


@contextmanager
def whole_weights() -> Iterator[None]:
    """Models loaded inside are whole in every process, even in a ZeRO-3 launch.

    Under `accelerate launch` with DeepSpeed ZeRO-3 and `zero3_init_flag` (zero3.yaml), once a
    Trainer's arguments exist transformers creates every model inside `deepspeed.zero.Init`: its
    parameters are empty shards (shape (0,)) that only a DeepSpeed engine gathers for a forward.
    That is right for the model being trained, wrong for a frozen model a stage runs itself
    (the RLT reward's student): its forward fails with "'weight' must be 2-D". Inside this
    context transformers' DeepSpeed config is unset, so `from_pretrained` loads plain tensors;
    it is restored on exit. Outside a ZeRO-3 launch it does nothing.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # what is_deepspeed_zero3_enabled reads
    active = ref() if ref is not None else None
    if active is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(active)


def numerics(
    recipe_dtype: str, *, launched: bool, offload_optimizer: bool = False
) -> dict[str, Any]:
    """What of the hardware shapes a stage's output, for its key: the device kind, the dtype it
    runs in and, for a stage `launched` as a training launch, the content of the accelerate
    config it launches with (its mixed precision, its ZeRO stage)."""
    gpus = gpu_count()
    found: dict[str, Any] = {"device": "cuda" if gpus else "cpu"}
    found["dtype"] = run_dtype(recipe_dtype, gpus)
    if launched:
        config = accelerate_config(gpus, offload_optimizer=offload_optimizer)
        found["accelerate"] = (
            hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config is not None else None
        )
    return found
