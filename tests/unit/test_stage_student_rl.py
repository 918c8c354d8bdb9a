"""The student_rl stage on a tiny random Llama sharing SmolLM2's tokenizer: the Table 6 values
the trainer receives, training, the artifact, and bad input caught before training. (A killed
run's resume: tests/distributed/test_zero3.py, under ZeRO-3.)

Each step renders the Figure 6 student prompt (~280 tokens), so the runs keep groups of 2,
completions of 8 tokens and 1-2 prompts per step to stay within seconds on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.callbacks import SyncRefModelCallback

from rlt_core import artifacts, formats
from rlt_core.config import PAPER_STUDENT_RL, ConfigError, StudentRLConfig
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.reward.correctness import correctness_reward
from rlt_core.stages.student_rl import (
    read_rl_rows,
    rl_dataset,
    run_student_rl,
)
from rlt_core.training.grpo import grpo_training_args
from rlt_core.training.grpo_run import build_grpo_trainer

# 1 prompt x group 2 = 2 completions per step, at most 8 tokens each, the reference synced
# every step (so the sync runs within 2 steps), a checkpoint every step (resume).
COUNTDOWN = StudentRLConfig(
    dataset="countdown", num_train_samples=None, max_steps=2, batch_size=2, num_generations=2,
    max_completion_length=8, ref_model_sync_steps=1, dtype="float32",
    gradient_checkpointing=False, generation_backend="transformers", save_steps=1,
)  # fmt: skip


def _countdown(path: Path, n: int) -> Path:
    """n countdown rows (id, question, ..., numbers, target) as a parquet file."""
    train, _ = countdown_splits(n, 1, seed=0, num_numbers=(3,))
    countdown_rows(train, seed=0).to_parquet(path, index=False)
    return path


def _limr(path: Path, answers: list[str]) -> Path:
    """LIMR-like rows as the data stage writes them (load_limr: id, question, answer)."""
    ids = [f"limr-{i:06d}" for i in range(len(answers))]
    questions = [f"What is {i} + {i}?" for i in range(len(answers))]
    pd.DataFrame({"id": ids, "question": questions, "answer": answers}).to_parquet(path)
    return path


def token_sum_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """Noise with spread: a random model never writes the student format, so the correctness
    reward is -1 for every completion, each group's std is 0, every advantage is 0, and with
    the policy equal to its reference the KL gradient is 0 too: nothing would change."""
    return [float(sum(ids) % 5) for ids in completion_ids]


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))


# --------------------------------------------------------------------------- data


def test_rows_become_figure6_prompts_with_their_gold_columns(tmp_path: Path, tokenizer) -> None:
    source = _countdown(tmp_path / "c.parquet", 3)
    rows, stats = read_rl_rows(source, "countdown", num_rows=2, seed=42)
    # 3 rows read, the seeded subset of 2 kept
    assert stats == {"rows_read": 3, "rows_used": 2}
    data = rl_dataset(tokenizer, rows, "countdown")
    assert data.column_names == ["prompt", "id", "numbers", "target"]
    assert data[0]["prompt"] == formats.render_student_prompt(tokenizer, rows["question"][0])
    assert data[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert data[0]["numbers"] == [int(n) for n in rows["numbers"][0]]
    assert isinstance(data[0]["target"], int)
    math = read_rl_rows(_limr(tmp_path / "l.parquet", ["5", "\\frac{1}{2}"]), "math",
                        num_rows=None, seed=0)[0]  # fmt: skip
    assert rl_dataset(tokenizer, math, "math")["answer"] == ["5", "\\frac{1}{2}"]
    # A LIMR question reaches the student as every math question it was distilled on: with
    # SkyThought's boxed instruction, once, under the system prompt the student carries.
    prompt = rl_dataset(tokenizer, math, "math", system="Own prompt.")["prompt"][0]
    question = math["question"][0]
    assert formats.MATH_INSTRUCTION not in question
    assert prompt == formats.render_student_prompt(
        tokenizer, formats.MATH_INSTRUCTION + question, "Own prompt."
    )
    boxed = math.assign(question=[formats.student_question(q) for q in math["question"]])
    assert rl_dataset(tokenizer, boxed, "math", system="Own prompt.")["prompt"][0] == prompt


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("recipe", ["limr", "countdown"])
def test_trainer_receives_every_table6_value(
    recipe: str, tiny_model_path: Path, tokenizer, tmp_path: Path
) -> None:
    # Table 6; rollouts by transformers here (vLLM on CPU: tests/vllm/test_grpo_vllm.py).
    cfg = dataclasses.replace(
        PAPER_STUDENT_RL[recipe], model=str(tiny_model_path), generation_backend="transformers"
    )
    reward = correctness_reward(cfg)
    rows = read_rl_rows(
        _limr(tmp_path / "l.parquet", ["5"]) if recipe == "limr" else _countdown(
            tmp_path / "c.parquet", 1), reward.task, num_rows=None, seed=0,
    )[0]  # fmt: skip
    args = grpo_training_args(cfg, tmp_path / "run", on_gpu=False)
    trainer = build_grpo_trainer(
        str(tiny_model_path), tokenizer, rl_dataset(tokenizer, rows, reward.task), args, [reward]
    )
    # Table 6: LIMR 86 steps x batch 1024, countdown 250 steps x batch 256; the rest shared
    steps, batch = {"limr": (86, 1024), "countdown": (250, 256)}[recipe]
    assert (trainer.args.max_steps, trainer.args.generation_batch_size) == (steps, batch)
    # at most 8 completions per device on 1 process: 1024 = 8 x 128, 256 = 8 x 32
    assert trainer.args.per_device_train_batch_size == 8
    assert trainer.args.gradient_accumulation_steps == batch // 8
    assert (trainer.num_generations, trainer.max_completion_length) == (64, 16384)
    assert (trainer.beta, trainer.loss_type, trainer.scale_rewards) == (0.04, "grpo", "group")
    assert (trainer.temperature, trainer.top_p, trainer.top_k, trainer.min_p) == (0.7, 1.0, 0, 0.0)
    assert trainer.args.learning_rate == 1e-6 and trainer.args.lr_scheduler_type == "constant"
    assert (trainer.args.weight_decay, trainer.args.adam_beta1, trainer.args.adam_beta2) == (
        0.0, 0.9, 0.999,
    )  # fmt: skip
    assert (trainer.args.warmup_steps, trainer.args.max_grad_norm) == (0, 1.0)
    assert (trainer.args.ref_model_sync_steps, trainer.args.ref_model_mixup_alpha) == (32, 0.9)
    assert any(isinstance(cb, SyncRefModelCallback) for cb in trainer.callback_handler.callbacks)
    assert trainer.args.remove_unused_columns is False  # the reward reads the gold columns
    assert trainer.reward_func_names == ["correctness_reward"]
    # section 2: -1 unformatted, -0.5 formatted but wrong, +1 right
    assert (reward.unformatted, reward.wrong, reward.correct) == (-1.0, -0.5, 1.0)
    assert reward.task == {"limr": "math", "countdown": "countdown"}[recipe]


# --------------------------------------------------------------------------- runs


def test_two_steps_change_every_parameter_and_log_rewards(
    tiny_model_path: Path, tokenizer, tmp_path: Path
) -> None:
    # The noise reward gives the groups a spread (see token_sum_reward); the correctness
    # reward alone would leave a random model unchanged. 2 prompts x group 2 per step, short
    # plain prompts instead of Figure 6's (TRL's CPU log-prob kernel spans every prompt token,
    # ~280 of them with the system prompt; the Figure 6 path runs in the artifact test below).
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), batch_size=4)
    data = Dataset.from_list(
        [{"prompt": f"Use {nums} once each to make {target}.", "id": str(target),
          "numbers": nums, "target": target} for nums, target in (([3, 5, 7], 22), ([2, 4], 8))]
    )  # fmt: skip
    args = grpo_training_args(cfg, tmp_path / "run", on_gpu=False)
    rewards = [correctness_reward(cfg), token_sum_reward]
    trainer = build_grpo_trainer(str(tiny_model_path), tokenizer, data, args, rewards)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), f"unchanged: {sorted(set(before) - set(changed))}"
    logs = [e for e in trainer.state.log_history if "rewards/correctness_reward/mean" in e]
    assert [entry["step"] for entry in logs] == [1, 2]
    assert all(entry["rewards/correctness_reward/mean"] == -1.0 for entry in logs)


def test_student_rl_trains_and_writes_a_complete_artifact(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), num_train_samples=3)
    rows = _countdown(tmp_path / "c.parquet", 4)
    ref = run_student_rl(cfg, tiny_model_path, rows, tmp_path / "store")
    out = Path(ref.uri)
    assert out.parent == tmp_path / "store" / "student_rl"
    assert sorted(p.name for p in out.iterdir()) == ["log_history.json", "manifest.json", "model"]
    manifest = artifacts.read_manifest(out)
    metrics = manifest["metrics"]
    # 3 of 4 rows used; 2 steps x 1 prompt = 2 prompts seen = 2/3 of an epoch
    assert metrics["data"] == {"rows_read": 4, "rows_used": 3, "epochs": round(2 / 3, 4)}
    assert metrics["batch"] == {"global_batch": 2, "num_generations": 2, "prompts_per_step": 1,
                                "num_devices": 1, "per_device": 2, "grad_accum": 1}  # fmt: skip
    assert metrics["train"]["global_step"] == 2
    # the correctness reward and its accuracy logged at every step; a random model: -1, 0
    assert metrics["rewards"]["steps"] == [1, 2]
    assert metrics["rewards"]["reward_mean"] == [-1.0, -1.0]
    assert metrics["rewards"]["formatted"] == [0.0, 0.0]
    history = json.loads((out / "log_history.json").read_text())
    assert [e["step"] for e in history if "rewards/correctness_reward/mean" in e] == [1, 2]
    assert manifest["config"]["grpo_config"]["beta"] == 0.04
    assert set(manifest["upstream"]) == {"start_model", "dataset"}
    assert AutoModelForCausalLM.from_pretrained(str(out / "model")).config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(str(out / "model")).chat_template
    again = run_student_rl(cfg, tiny_model_path, rows, tmp_path / "store")
    assert again == ref  # same config and inputs: the finished artifact is reused


# --------------------------------------------------------------------------- bad input


def _no_run(store: Path) -> None:
    assert not list(store.rglob("checkpoints")), "training started"


@pytest.mark.parametrize(
    ("recipe", "drop", "missing"),
    [("countdown", ["numbers", "target"], r"\['numbers', 'target'\]"),
     ("limr", ["answer"], r"\['answer'\]")],
)  # fmt: skip
def test_dataset_without_gold_columns_fails_before_training(
    recipe: str, drop: list[str], missing: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    source = tmp_path / "rows.parquet"
    if recipe == "limr":
        _limr(source, ["5", "7"])
    else:
        _countdown(source, 2)
    pd.read_parquet(source).drop(columns=drop).to_parquet(source)
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), dataset=recipe)
    with pytest.raises(ValueError, match=rf"missing column\(s\) {missing}"):
        run_student_rl(cfg, tiny_model_path, source, tmp_path / "store")
    _no_run(tmp_path / "store")


def test_gold_math_verify_cannot_parse_fails_before_training(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    source = _limr(tmp_path / "l.parquet", ["5", "\\frac{"])
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), dataset="limr")
    with pytest.raises(ValueError, match=r"row 'limr-000001' has gold answer '\\\\frac\{'"):
        run_student_rl(cfg, tiny_model_path, source, tmp_path / "store")
    _no_run(tmp_path / "store")


def test_too_few_rows_for_one_step_fail_before_training(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    # batch 8 / group 2 = 4 prompts per step, but only 3 rows
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), batch_size=8)
    with pytest.raises(ValueError, match="3 training rows, but one GRPO step samples .* = 4"):
        run_student_rl(cfg, tiny_model_path, _countdown(tmp_path / "c.parquet", 3), tmp_path / "s")
    _no_run(tmp_path / "s")


def test_group_size_not_dividing_the_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batch_size.*not divisible by the group size"):
        dataclasses.replace(COUNTDOWN, batch_size=6, num_generations=4)


def test_missing_start_model_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither an offline model.*nor an existing local path"):
        run_student_rl(COUNTDOWN, tmp_path / "gone" / "model", _countdown(tmp_path / "c.parquet",
                       2), tmp_path / "store")  # fmt: skip
    assert not (tmp_path / "store").exists()


def test_math_off_the_main_thread_fails_before_anything_loads(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    source = _limr(tmp_path / "l.parquet", ["5", "7"])
    cfg = dataclasses.replace(COUNTDOWN, model=str(tiny_model_path), dataset="limr")
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_student_rl(cfg, tiny_model_path, source, tmp_path / "store")
        except BaseException as error:  # noqa: BLE001 - handed to the main thread to assert on
            errors.append(error)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "only work in the main thread" in str(errors[0])
    assert not (tmp_path / "store").exists()
