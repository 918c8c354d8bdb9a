"""Every load-time validation error: it fires, names the key path, the value and the fix."""

from pathlib import Path

import pytest

from rlt_core.config import ConfigError, RewardConfig, TeacherRLConfig, load_config


def error_of(*overrides: str, profile: str = "paper-7b") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(profile, overrides)
    return caught.value


def only_issue(*overrides: str, profile: str = "paper-7b") -> str:
    error = error_of(*overrides, profile=profile)
    assert len(error.issues) == 1, str(error)
    return str(error.issues[0])


def test_unknown_key_suggests_the_closest() -> None:
    message = only_issue("reward.lam=2")
    assert message.startswith("reward.lam: unknown key")
    assert "did you mean 'lambda'?" in message


def test_unknown_key_in_a_profile_file(tmp_path: Path) -> None:
    profile = tmp_path / "mine.yaml"
    profile.write_text("extends: paper-7b\nteacher_rl:\n  num_generation: 8\n")
    message = only_issue(profile=str(profile))
    assert message.startswith("teacher_rl.num_generation: unknown key")
    assert "'num_generations'" in message


def test_student_rl_epochs_are_refused_with_what_to_set_instead() -> None:
    # Table 6's countdown column contradicts its own steps; a run is held to max_steps only.
    message = only_issue("student_rl.countdown.num_epochs=1")
    assert message.startswith("student_rl.countdown.num_epochs: removed")
    assert "set max_steps" in message


def test_unknown_section_lists_nothing_wrong_elsewhere() -> None:
    assert only_issue("teacher_lr.batch_size=8").startswith("teacher_lr: unknown key")


def test_wrong_type_names_key_value_and_expected_type() -> None:
    message = only_issue("teacher_rl.batch_size='abc'")
    assert message == (
        "teacher_rl.batch_size: 'abc' is not an integer; write a whole number such as 16."
    )


def test_bool_is_not_accepted_as_an_integer() -> None:
    assert "True is not an integer" in only_issue("teacher_rl.max_steps=true")


@pytest.mark.parametrize(("key", "shown"), [("lambda", "-1.0"), ("alpha", "-0.01")])
def test_negative_reward_coefficients(key: str, shown: str) -> None:
    message = only_issue(f"reward.{key}={shown}")
    assert message.startswith(f"reward.{key}: {shown} must be >= 0")
    assert "Eq." in message  # the help text citing the paper says why


@pytest.mark.parametrize("value", ["0", "-0.7"])
def test_temperature_must_be_positive(value: str) -> None:
    # The reward's temperature must equal teacher_rl's, so both change together.
    error = error_of(f"teacher_rl.temperature={value}", f"reward.temperature={value}")
    assert sorted(issue.path for issue in error.issues) == [
        "reward.temperature",
        "teacher_rl.temperature",
    ]
    assert all("must be > 0" in issue.message for issue in error.issues)


def test_grpo_batch_must_divide_into_groups() -> None:
    # 1024 / 60 = 17.07: not a whole number of prompts per step.
    message = only_issue("teacher_rl.num_generations=60")
    assert message.startswith("teacher_rl.batch_size: 1024 is not divisible by the group size")
    assert "num_generations=60" in message and "multiple of num_generations" in message


def test_grpo_batch_error_also_fires_for_student_recipes() -> None:
    message = only_issue("student_rl.countdown.batch_size=100")
    # 100 = 64 + 36: not a multiple of the group size 64.
    assert message.startswith("student_rl.countdown.batch_size: 100 is not divisible")


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("teacher_rl.top_p=1.5", "teacher_rl.top_p"),
        ("evaluate.min_p=-0.1", "evaluate.min_p"),
        ("teacher_rl.ref_model_mixup_alpha=1.2", "teacher_rl.ref_model_mixup_alpha"),
    ],
)
def test_probabilities_outside_unit_interval(override: str, path: str) -> None:
    message = only_issue(override)
    assert message.startswith(f"{path}: ")
    assert "must be a probability in [0, 1]" in message


def test_unknown_enum_value_lists_choices_and_suggests() -> None:
    message = only_issue("reward.kl_estimator=ful")
    assert message == (
        "reward.kl_estimator: 'ful' is not one of 'sampled', 'k3', 'full'. Did you mean 'full'?"
    )


def test_unknown_task_in_a_list_names_its_index() -> None:
    message = only_issue("evaluate.tasks=[aime24,math5000]")
    assert message.startswith("evaluate.tasks[1]: 'math5000' is not one of")
    assert "Did you mean 'math500'?" in message


@pytest.mark.parametrize("override", ["teacher_rl.batch_size", "=3", "reward..lambda=1"])
def test_override_must_be_key_equals_value(override: str) -> None:
    message = only_issue(override)
    assert f"override {override!r} is not key.path=value" in message


def test_missing_local_model_path() -> None:
    message = only_issue("teacher_sft.model=./no/such/checkpoint")
    assert message.startswith(
        "teacher_sft.model: './no/such/checkpoint' is a local path that does not exist"
    )


def test_existing_local_model_path_and_offline_reference_are_accepted(tmp_path: Path) -> None:
    config = load_config(
        "paper-7b", [f"teacher_sft.model={tmp_path}", "reward.student_model=offline:tiny-1"]
    )
    assert config.teacher_sft.model == str(tmp_path)
    assert config.reward.student_model == "offline:tiny-1"


@pytest.mark.parametrize("reference", ["qwen", "offline:", "a/b/c", "offline:has space"])
def test_malformed_model_reference(reference: str) -> None:
    message = only_issue(f"teacher_rl.model='{reference}'")
    assert message.startswith(f"teacher_rl.model: {reference!r} is neither a hub id 'org/name'")
    assert "offline:<name>" in message


def test_missing_local_data_source() -> None:
    message = only_issue("data.eval_sources.aime24=./missing/aime.jsonl")
    assert message.startswith("data.eval_sources.aime24: './missing/aime.jsonl' is a local path")


def test_several_errors_are_reported_together() -> None:
    error = error_of(
        "teacher_rl.batch_size=abc",
        "reward.lambda=-1",
        "teacher_rl.top_p=2",
        "evaluate.tasks=[aime]",
        "student_sft.1k.num_epochs=0",
        "nonsense",
    )
    paths = sorted(issue.path for issue in error.issues)
    assert paths == [
        "evaluate.tasks[0]",
        "nonsense",
        "reward.lambda",
        "student_sft.1k.num_epochs",
        "teacher_rl.batch_size",
        "teacher_rl.top_p",
    ]
    assert str(error).startswith("6 problems in config (profile 'paper-7b', overrides [")


def test_cold_start_must_be_an_sft_run() -> None:
    message = only_issue("student_sft_runs=[1k]")
    # limr's cold_start is "full", which no longer runs.
    assert message.startswith("student_rl.limr.cold_start: 'full' is not in student_sft_runs")


def test_run_names_must_be_recipes() -> None:
    message = only_issue("student_rl_runs=[limr, limrr]")
    assert message.startswith("student_rl_runs[1]: no recipe named 'limrr'")
    assert "Did you mean 'limr'?" in message


def test_reward_temperature_must_follow_sampling_temperature() -> None:
    message = only_issue("teacher_rl.temperature=1.0")
    assert message.startswith("reward.temperature: 0.7 differs from teacher_rl.temperature 1.0")


def test_constant_schedule_must_end_at_its_learning_rate() -> None:
    message = only_issue("teacher_rl.learning_rate=2e-6")
    assert message.startswith("teacher_rl.final_learning_rate: 1e-06 differs from learning_rate")


def test_correctness_rewards_must_be_ordered() -> None:
    message = only_issue("student_rl.limr.reward_wrong=2")
    assert "breaks reward_unformatted <= reward_wrong < reward_correct" in message


def test_corpus_source_null_needs_the_countdown_schema() -> None:
    message = only_issue("data.corpus_source=null")
    assert message.startswith("data.corpus_source: is null, but corpus_schema 'bespoke' reads")


def test_unknown_profile_suggests_a_known_one() -> None:
    message = str(error_of(profile="paper-7"))
    assert "no profile named 'paper-7'" in message and "Did you mean 'paper-7b'?" in message


def test_profiles_extending_each_other_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    assert "profiles extend each other" in str(error_of(profile=str(tmp_path / "a.yaml")))


def test_configs_built_in_python_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="batch_size: 100 is not divisible"):
        TeacherRLConfig(batch_size=100)
    with pytest.raises(ConfigError, match="lambda: -3.0 must be >= 0"):
        RewardConfig(lam=-3)


def test_held_out_pairs_come_from_an_evaluation_table_with_solutions() -> None:
    # null: the first evaluation task with solutions; none there: teacher_eval is skipped
    assert load_config("tiny").held_out_task() == "countdown"
    assert load_config("paper-7b").held_out_task() == "math500"
    no_solutions = ["evaluate.tasks=[gpqa_diamond]", "teacher_eval.held_out=null"]
    assert load_config("paper-7b", no_solutions).held_out_task() is None
    with pytest.raises(ConfigError, match="teacher_eval.held_out") as caught:
        load_config("tiny", ["teacher_eval.held_out=math500"])  # not among evaluate.tasks
    assert "null" in str(caught.value) and "countdown" in str(caught.value)
    with pytest.raises(ConfigError, match="teacher_eval.held_out"):
        load_config("paper-7b", ["teacher_eval.held_out=gpqa_diamond"])  # no solutions
    with pytest.raises(ConfigError, match="teacher_eval.num_samples"):
        load_config("tiny", ["teacher_eval.num_samples=0"])
