"""The teacher_rl stage (Table 3) on tiny random Llamas sharing SmolLM2's tokenizer: prompts,
the paper values the trainer receives, a real 2-step run with the RLT reward, and bad input
caught before training. (A killed run's resume: the e2e tier's served and Ray runs, and
tests/distributed/test_zero3.py under ZeRO-3.)

CPU cost: on CPU, TRL's log-prob kernel scores every prompt position against the 49K vocabulary,
and the Figure 7 system prompt makes every prompt ~350 tokens, so a step costs seconds even on a
2-layer model: the runs use one prompt per step, a group of 2 and completions of 8 tokens.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import SchedulerType
from trl.trainer.callbacks import SyncRefModelCallback

from rlt_core import artifacts, formats
from rlt_core.config import ConfigError, RewardConfig, TeacherRLConfig
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.models import make_tiny_model
from rlt_core.stages.teacher_rl import (
    REWARD_CURVES,
    REWARD_LOG,
    build_rlt_trainer,
    reward_history,
    run_teacher_rl,
    teacher_prompts,
)

# Table 3 with CPU sizes: 1 prompt x group 2 per step, completions cut at 8 tokens.
RECIPE = TeacherRLConfig(
    max_steps=2, batch_size=2, num_generations=2, max_completion_length=8,
    ref_model_sync_steps=1, dtype="float32", gradient_checkpointing=False,
    generation_backend="transformers", save_steps=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))


@pytest.fixture(scope="module")
def student_path(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> Path:
    """A second tiny random Llama (seed 1): the frozen student, same tokenizer as the teacher."""
    return make_tiny_model(tmp_path_factory.mktemp("student"), smollm2_tokenizer_path, seed=1)


@pytest.fixture(scope="module")
def teacher_sft(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    """A finished teacher_sft artifact dir holding the tiny model in `model/` (manifest last)."""
    out = tmp_path_factory.mktemp("teacher_sft")
    AutoModelForCausalLM.from_pretrained(str(tiny_model_path)).save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(str(tiny_model_path)).save_pretrained(out / "model")
    artifacts.write_manifest(out, stage="teacher_sft", config={}, upstream={}, metrics={})
    return out


def _corpus(path: Path, n: int) -> Path:
    """n countdown rows (id, question, solution, thought, source) as a parquet file."""
    train, _ = countdown_splits(n, 1, seed=0, num_numbers=(3,))
    countdown_rows(train, seed=0).to_parquet(path, index=False)
    return path


def _reward_cfg(student: Path) -> RewardConfig:
    return RewardConfig(student_model=str(student), logprob_chunk_size=128)


# --------------------------------------------------------------------------- data


def test_prompts_prefill_the_solution_and_keep_the_reward_columns(
    tokenizer, tmp_path: Path
) -> None:
    rows = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "question": ["What is 2+2?", "Q2", "  "],
            "solution": ["4", None, "S3"],
            "thought": [None, None, None],  # RL needs no thought: the teacher writes it
        }
    )
    rows.to_parquet(tmp_path / "corpus.parquet")
    dataset, stats = teacher_prompts(tokenizer, tmp_path / "corpus.parquet")
    # row 2 has no solution, row 3 a blank question: 3 - 2 = 1 row left
    assert stats == {"rows_read": 3, "dropped_empty": 2}
    assert dataset.column_names == ["prompt", "id", "question", "solution", "system"]
    row = dataset[0]
    assert (row["id"], row["question"], row["solution"]) == ("1", "What is 2+2?", "4")
    assert row["system"] is None  # no system column: the reward's student reads the default
    assert row["prompt"] == formats.render_teacher_prompt(tokenizer, "What is 2+2?", "4")
    # Figure 7: the assistant turn holds the solution; generation starts after the opening tag
    assert row["prompt"].endswith(
        "<|im_start|>assistant\n<|begin_of_solution|>\n\n4\n\n<|end_of_solution|>\n\n"
        "<|begin_of_explanation|>\n\n"
    )


# --------------------------------------------------------------------------- arguments


def test_trainer_receives_every_table3_value(
    teacher_sft: Path, student_path: Path, tokenizer, tmp_path: Path
) -> None:
    # Table 3 defaults; rollouts by transformers here (vLLM on CPU: tests/vllm/test_grpo_vllm.py).
    cfg = TeacherRLConfig(model=str(teacher_sft / "model"), generation_backend="transformers")
    dataset, _ = teacher_prompts(tokenizer, _corpus(tmp_path / "corpus.parquet", 2))
    trainer, reward = build_rlt_trainer(
        cfg, _reward_cfg(student_path), str(teacher_sft / "model"), tokenizer, dataset, tmp_path
    )
    args = trainer.args
    assert (args.max_steps, args.learning_rate, args.warmup_steps) == (125, 1e-6, 0)
    assert args.lr_scheduler_type == SchedulerType.CONSTANT
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2) == (0.0, 0.9, 0.999)
    # 1024 completions per step = 16 prompts x group 64; at most 8 per device on 1 process
    # -> 8 per device x 128 accumulation steps, one generation batch per optimizer step.
    assert (args.generation_batch_size, args.num_generations) == (1024, 64)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 128)
    assert args.steps_per_generation == 128
    # the values TRL 1.16 would otherwise default differently (ENVIRONMENT.md)
    assert (trainer.beta, trainer.loss_type, trainer.scale_rewards) == (0.04, "grpo", "group")
    assert (args.ref_model_sync_steps, args.ref_model_mixup_alpha) == (32, 0.9)
    assert any(isinstance(cb, SyncRefModelCallback) for cb in trainer.callback_handler.callbacks)
    assert (trainer.temperature, trainer.top_p, trainer.top_k) == (0.7, 1.0, 0)
    assert trainer.max_completion_length == 16384
    assert args.gradient_checkpointing is True
    assert (args.bf16, args.use_vllm) == (False, False)  # CPU: fp32, as the recipe asked
    # the RLT reward: lambda 3, alpha 0.01, penalty -1 (Table 3), scored with the live policy
    assert trainer.reward_func_names == ["rlt_reward"]
    assert reward.max_completion_length == 16384
    assert (reward.scorer.cfg.lam, reward.scorer.cfg.alpha) == (3.0, 0.01)
    assert reward.scorer.cfg.format_penalty == -1.0
    assert reward.scorer.teacher is trainer.model
    assert not any(p.requires_grad for p in reward.scorer.student.parameters())


def test_prompts_are_tokenised_without_added_special_tokens(
    teacher_sft: Path, student_path: Path, tokenizer, tmp_path: Path
) -> None:
    bos_adding = AutoTokenizer.from_pretrained(str(teacher_sft / "model"))
    bos_adding.add_bos_token = True  # like Llama 3's tokenizer, which prepends a BOS
    dataset, _ = teacher_prompts(bos_adding, _corpus(tmp_path / "corpus.parquet", 1))
    trainer, _ = build_rlt_trainer(
        RECIPE, _reward_cfg(student_path), str(teacher_sft / "model"), bos_adding, dataset, tmp_path
    )
    prompt = dataset[0]["prompt"]
    with_bos = trainer.processing_class(text=[prompt])["input_ids"][0]
    ids, _, _ = trainer._tokenize_prompts([prompt])
    # the reward rebuilds the prompt with add_special_tokens=False: the same ids, no extra BOS
    assert ids[0] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert with_bos == [tokenizer.bos_token_id, *ids[0]]


# --------------------------------------------------------------------------- runs


def test_teacher_rl_trains_logs_every_reward_term_and_writes_an_artifact(
    teacher_sft: Path, student_path: Path, tmp_path: Path
) -> None:
    corpus = _corpus(tmp_path / "corpus.parquet", 4)
    reward_cfg = _reward_cfg(student_path)
    ref = run_teacher_rl(RECIPE, reward_cfg, teacher_sft, corpus, tmp_path / "store")
    out = Path(ref.uri)
    assert out.parent == tmp_path / "store" / "teacher_rl"
    assert sorted(p.name for p in out.iterdir()) == [
        "log_history.json", "manifest.json", "model", REWARD_CURVES, REWARD_LOG,
    ]  # fmt: skip
    with Image.open(out / REWARD_CURVES) as figure:  # the curves, a real PNG of 6 panels
        assert figure.format == "PNG" and figure.size == (1200, 650)
    # every parameter moved: the advantages were not all zero. The random teacher never writes
    # <|end_of_explanation|>, so every completion gets the same -1 penalty, but r_SS and r_KL
    # differ per completion and so do the rewards within each group.
    before = AutoModelForCausalLM.from_pretrained(str(teacher_sft / "model")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(out / "model")).state_dict()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged
    steps = json.loads((out / REWARD_LOG).read_text())
    assert [entry["step"] for entry in steps] == [1, 2]  # one entry per step
    for entry in steps:
        terms = ("rlt/r_ss", "rlt/r_kl", "rlt/reward", "rlt/penalty_rate", "rlt/think_len")
        assert {*terms, "rlt/solution_copy"} <= set(entry)
        assert entry["rlt/penalty_rate"] == 1.0
        # r_RLT = r_SS - lambda * r_KL + penalty, averaged over the batch (Eq. 5, lambda = 3)
        expected = entry["rlt/r_ss"] - 3.0 * entry["rlt/r_kl"] - 1.0
        assert entry["rlt/reward"] == pytest.approx(expected, abs=1e-4)
        assert entry["reward"] == pytest.approx(entry["rlt/reward"], abs=1e-4)  # TRL's own mean
        assert entry["frac_reward_zero_std"] == 0.0 and "kl" in entry
        # Where the step's time went: its parts are measured and add up to the step.
        names = ("generation", "reward", "logprobs", "loss_backward")
        parts = [entry[f"rlt/time/{name}"] for name in names]
        assert all(part > 0 for part in parts)
        assert sum(parts) == pytest.approx(entry["rlt/time/step"], abs=0.01)
    manifest = artifacts.read_manifest(out)
    assert manifest["metrics"]["reward"]["steps_logged"] == 2
    assert manifest["metrics"]["time"]["steps_timed"] == 2
    assert 0 < manifest["metrics"]["time"]["reward_share"] < 1
    assert manifest["metrics"]["train"]["global_step"] == 2
    # 2 completions per step = 1 prompt x group 2, on one device in one micro-batch
    assert manifest["metrics"]["batch"] == {"global_batch": 2, "num_devices": 1, "per_device": 2,
                                            "grad_accum": 1, "prompts_per_step": 1}  # fmt: skip
    assert manifest["config"]["grpo_config"]["beta"] == 0.04
    assert manifest["config"]["reward"]["lambda"] == 3.0
    assert manifest["upstream"]["teacher_sft"] == artifacts.load_ref(teacher_sft).digest
    again = run_teacher_rl(RECIPE, reward_cfg, teacher_sft, corpus, tmp_path / "store")
    assert again == ref  # same config and inputs: the finished artifact is reused


def test_reward_history_keeps_the_steps_that_logged_reward_terms() -> None:
    log = [
        {"step": 1, "loss": 0.1, "rlt/r_ss": -2.0, "rlt/r_kl": 0.5, "reward": -4.5, "kl": 0.0},
        {"step": 1, "train_runtime": 3.0},  # the end-of-training summary: no reward terms
    ]
    assert reward_history(log) == [
        {"step": 1, "rlt/r_ss": -2.0, "rlt/r_kl": 0.5, "reward": -4.5, "kl": 0.0}
    ]


# --------------------------------------------------------------------------- bad input


def test_missing_columns_fail_before_training(
    teacher_sft: Path, student_path: Path, tmp_path: Path
) -> None:
    pd.DataFrame({"id": ["a"], "question": ["q"], "answer": ["s"]}).to_parquet(
        tmp_path / "x.parquet"
    )
    with pytest.raises(ValueError, match=r"missing column\(s\) \['solution'\]"):
        run_teacher_rl(
            RECIPE, _reward_cfg(student_path), teacher_sft, tmp_path / "x.parquet", tmp_path / "s"
        )
    assert not list((tmp_path / "s").rglob("checkpoints"))


def test_missing_or_unfinished_teacher_sft_fails_before_training(
    student_path: Path, tmp_path: Path
) -> None:
    corpus = _corpus(tmp_path / "corpus.parquet", 2)
    (tmp_path / "cut" / "model").mkdir(parents=True)  # a teacher_sft run killed before its end
    for teacher_sft in (tmp_path / "gone", tmp_path / "cut"):
        with pytest.raises(FileNotFoundError, match="Run the teacher_sft stage first"):
            run_teacher_rl(RECIPE, _reward_cfg(student_path), teacher_sft, corpus, tmp_path / "s")


def test_missing_model_path_fails_before_training(student_path: Path, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.parquet", 2)
    (tmp_path / "gone").mkdir()
    cfg = dataclasses.replace(RECIPE, model=str(tmp_path / "gone"))  # checked when built
    (tmp_path / "gone").rmdir()
    with pytest.raises(ValueError, match="neither an offline model.*nor an existing local path"):
        run_teacher_rl(cfg, _reward_cfg(student_path), None, corpus, tmp_path / "s")


def test_group_size_that_does_not_divide_the_batch_is_a_config_error() -> None:
    # 6 completions cannot hold whole groups of 4 (Table 3: 1024 = 16 x 64)
    with pytest.raises(ConfigError, match="batch_size.*not divisible by the group size"):
        dataclasses.replace(RECIPE, batch_size=6, num_generations=4)


def test_reward_temperature_must_be_the_sampling_temperature(
    teacher_sft: Path, student_path: Path, tmp_path: Path
) -> None:
    reward_cfg = dataclasses.replace(_reward_cfg(student_path), temperature=1.0)
    with pytest.raises(ValueError, match="differs from teacher_rl.temperature=0.7"):
        run_teacher_rl(RECIPE, reward_cfg, teacher_sft, tmp_path / "none.parquet", tmp_path / "s")
