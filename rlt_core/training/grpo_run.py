"""The one GRPO path both GRPO stages run (teacher_rl with the RLT reward, student_rl with
correctness rewards): the trainer class and how it is built, training with resume, the
rollout engine released, the time figures, and the save (the run's owner publishes it).

What differs between the two stages is what they pass in: the policy, the dataset, the reward
functions, and the data / batch / reward figures and resolved arguments their manifests keep.

Prompts are plain text (chat-template renderings, the teacher's ending inside its prefilled
assistant turn) tokenised as they are: `PrefilledPromptGRPOTrainer` overrides TRL's
`_tokenize_prompts`, which would add the tokenizer's special tokens (a second BOS for
tokenizers such as Llama 3's) in front of a text that already holds every special token it
needs. The RLT reward rebuilds the teacher's prompt with `add_special_tokens=False` too
(`rlt_core.reward.spans`), so generation and reward see the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from rlt_core.owner import Outcome, Work
from rlt_core.training import run
from rlt_core.training.step_times import time_summary
from rlt_core.training.vllm_rollouts import make_grpo_trainer, release_rollout_engine


class PrefilledPromptGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that tokenises text prompts as they are, without added special tokens."""

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, Any]]:
        if not isinstance(prompts[0], str):
            return super()._tokenize_prompts(prompts)
        ids = self.processing_class(text=prompts, add_special_tokens=False)["input_ids"]
        return ids, None, {}


def build_grpo_trainer(
    model: str,
    tokenizer: Any,
    dataset: Dataset,
    args: GRPOConfig,
    reward_funcs: Sequence[Any],
    callbacks: Sequence[TrainerCallback] = (),
) -> PrefilledPromptGRPOTrainer:
    """A GRPO trainer of the model at `model` (a path or reference: TRL loads the policy and
    its reference with `args.model_init_kwargs`), rollouts on the backend `args` names."""
    return make_grpo_trainer(
        PrefilledPromptGRPOTrainer,
        model=model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def train_grpo(
    trainer: GRPOTrainer,
    tokenizer: Any,
    work: Work,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    log_figures: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    log_files: dict[str, Callable[[list[dict[str, Any]]], Any]] | None = None,
    log_plots: dict[str, Callable[[list[dict[str, Any]], Path], Any]] | None = None,
) -> Outcome:
    """Train (resuming from the last checkpoint of the work area), release the rollout
    engine, then save the model into `work.out`; the run's Outcome for its manifest.

    `config` is the resolved config recorded beside the key's; `metrics` (what is known before
    training: data and batch figures) gets `log_figures(log)` (the stage's reward figures),
    the training figures (`train`) and the per-step time breakdown (`time`). `log_files` maps
    a file name to a function of the trainer log giving its JSON content (the teacher's reward
    log); `log_plots` maps a file name to a function of the log that draws it there (its curves).
    """
    out = work.out
    try:
        figures = run.train_resuming(trainer, work.root)
    finally:
        release_rollout_engine(trainer)  # a vLLM-CPU engine leaves the process as it was
    history = trainer.state.log_history
    if trainer.is_world_process_zero():
        for name, content in (log_files or {}).items():
            (out / name).write_text(json.dumps(content(history), indent=1))
        for name, draw in (log_plots or {}).items():
            draw(history, out / name)
    extra = log_figures(history) if log_figures is not None else {}
    metrics = {**metrics, **extra, "train": figures, "time": time_summary(history)}
    run.save_trained(trainer, tokenizer, out)
    return Outcome(metrics=metrics, config=config)
