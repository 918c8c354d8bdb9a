"""A real TRL GRPOTrainer built from our GRPOConfig and the correctness reward, trained 2 steps
on CPU with a tiny random Llama (group 4, completions of at most 8 tokens)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOTrainer
from trl.trainer.callbacks import SyncRefModelCallback

from rlt_core.config import load_config
from rlt_core.reward.correctness import correctness_reward
from rlt_core.training.grpo import grpo_training_args


def token_sum_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """Noise with spread: a random model never writes the student format, so the correctness
    reward is -1 everywhere, the group std is 0 and the policy gradient would vanish."""
    return [float(sum(ids) % 5) for ids in completion_ids]


def countdown_prompts() -> Dataset:
    """Two short countdown prompts with the gold columns the reward reads.

    Plain-text prompts, not the Figure 6 chat: TRL's CPU log-prob kernel runs over every prompt
    token times the 49K vocabulary, and the system prompt alone (~250 tokens) made a step 10 s.
    """
    problems = [([3, 5, 7], 22), ([2, 4, 6], 14)]
    return Dataset.from_list(
        [
            {"prompt": f"Use {nums} once each to make {target}.", "numbers": nums, "target": target}
            for nums, target in problems
        ]
    )


def test_grpo_trainer_receives_the_paper_values_and_trains(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    # Two steps (the tiny profile runs one), so that logging and the reference sync repeat.
    recipe = replace(
        load_config("tiny").student_rl["countdown"], max_completion_length=8, max_steps=2
    )
    args = grpo_training_args(recipe, tmp_path / "run", on_gpu=False)
    reward = correctness_reward(recipe)
    trainer = GRPOTrainer(
        model=str(tiny_model_path),
        reward_funcs=[reward, token_sum_reward],
        args=args,
        train_dataset=countdown_prompts(),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
    )
    # the values TRL 1.16 would otherwise default differently (ENVIRONMENT.md)
    assert (trainer.beta, trainer.loss_type, trainer.scale_rewards) == (0.04, "grpo", "group")
    assert (trainer.temperature, trainer.top_p, trainer.top_k, trainer.min_p) == (0.7, 1.0, 0, 0.0)
    assert (trainer.num_generations, trainer.max_completion_length) == (4, 8)
    assert trainer.args.use_bias_correction_kl is False
    assert (trainer.args.ref_model_sync_steps, trainer.args.ref_model_mixup_alpha) == (1, 0.9)
    assert any(isinstance(cb, SyncRefModelCallback) for cb in trainer.callback_handler.callbacks)
    assert trainer.reward_func_names == ["correctness_reward", "token_sum_reward"]

    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    ref_before = {name: p.detach().clone() for name, p in trainer.ref_model.named_parameters()}
    trainer.train()

    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), f"unchanged: {sorted(set(before) - set(changed))}"
    # the reference moved too: synced every step with mixup 0.9 (Table 3's TR-DPO sync)
    ref_moved = [
        n for n, p in trainer.ref_model.named_parameters() if not torch.equal(p, ref_before[n])
    ]
    assert ref_moved
    logs = [
        entry for entry in trainer.state.log_history if "rewards/correctness_reward/mean" in entry
    ]
    assert [entry["step"] for entry in logs] == [1, 2]  # logged every step
    assert all("kl" in entry for entry in logs)  # TRL logs the KL only when beta != 0
    # a random model writes no tags: every completion is unformatted, reward -1
    assert all(entry["rewards/correctness_reward/mean"] == -1.0 for entry in logs)
    assert all(entry["correctness/formatted"] == 0.0 for entry in logs)
    assert (tmp_path / "run" / "checkpoint-2" / "optimizer.pt").is_file()  # save_steps 1
