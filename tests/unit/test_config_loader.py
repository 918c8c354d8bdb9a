"""Overrides, round trips, digests, immutability, the configs directory and the CLI."""

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlt_core.config import (
    RewardConfig,
    StudentSFTConfig,
    config_digest,
    load_config,
    to_dict,
    to_yaml,
)
from rlt_core.config.__main__ import app

REPO = Path(__file__).resolve().parents[2]


def test_overrides_reach_nested_keys() -> None:
    config = load_config(
        "paper-7b",
        [
            "teacher_rl.batch_size=512",
            "student_sft.1k.num_epochs=2",
            "evaluate.tasks=[aime24,math500]",
            "teacher_rl.learning_rate=2e-6",
            "teacher_rl.final_learning_rate=2e-6",
        ],
    )
    assert config.teacher_rl.batch_size == 512  # 512 / 64 = 8 prompts per step
    assert config.student_sft["1k"].num_epochs == 2.0
    assert config.student_sft["full"].num_epochs == 3.0  # the other recipes are untouched
    assert config.student_sft["1k"].batch_size == 16  # the rest of the 1k recipe stays
    assert config.evaluate.tasks == ("aime24", "math500")
    # PyYAML reads "2e-6" as a string; the float field parses it.
    assert config.teacher_rl.learning_rate == 2e-6


def test_lambda_alias_sets_lam() -> None:
    config = load_config("paper-7b", ["reward.lambda=0"])  # Table 9 ablation
    assert config.reward.lam == 0.0 and isinstance(config.reward.lam, float)
    assert to_dict(config.reward)["lambda"] == 0.0 and "lam" not in to_dict(config.reward)


def test_an_override_section_merges_into_the_profile() -> None:
    config = load_config("paper-7b", ["reward={lambda: 0, alpha: 0}"])
    assert (config.reward.lam, config.reward.alpha) == (0.0, 0.0)
    assert config.reward.student_model == "bespokelabs/Bespoke-Stratos-7B"


def test_a_new_recipe_starts_from_the_dataclass_defaults() -> None:
    config = load_config(
        "paper-7b", ["student_sft.2k.num_train_samples=2000", "student_sft_runs=[2k, full]"]
    )
    assert config.student_sft["2k"] == StudentSFTConfig(num_train_samples=2000)


@pytest.mark.parametrize("profile", ["paper-7b", "paper-32b", "tiny"])
def test_to_yaml_round_trips_through_load(profile: str, tmp_path: Path) -> None:
    config = load_config(profile, ["reward.lambda=0"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    again = load_config(path)
    assert again == config
    assert again.profile == profile
    assert config_digest(again) == config_digest(config)


def test_digest_is_sha256_of_canonical_json() -> None:
    # Sorted keys, no spaces: '{"a":[1,2],"b":1}'.
    expected = hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert config_digest({"b": 1, "a": (1, 2)}) == expected


def test_digest_is_stable_and_changes_with_any_value() -> None:
    first, second = load_config("paper-7b"), load_config("paper-7b")
    assert config_digest(first) == config_digest(second)
    assert config_digest(first.teacher_rl) == config_digest(second.teacher_rl)
    changed = load_config("paper-7b", ["teacher_rl.beta=0.05"])
    assert config_digest(changed.teacher_rl) != config_digest(first.teacher_rl)
    assert config_digest(changed.reward) == config_digest(first.reward)
    # Ints in float fields are stored as floats: the Python and YAML spellings digest alike.
    assert config_digest(RewardConfig(lam=3)) == config_digest(RewardConfig(lam=3.0))


def test_configs_are_frozen() -> None:
    config = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.teacher_rl.batch_size = 16  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.student_sft["new"] = StudentSFTConfig()  # type: ignore[index]
    assert isinstance(config.evaluate.tasks, tuple)


def test_config_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text("reward:\n  alpha: 0\n")
    monkeypatch.setenv("RLT_CONFIG_DIR", str(tmp_path))
    config = load_config("mine")
    assert (config.profile, config.reward.alpha) == ("mine", 0.0)


def test_cli_show_prints_the_resolved_yaml() -> None:
    result = CliRunner().invoke(app, ["show", "paper-7b", "--set", "teacher_rl.batch_size=512"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["teacher_rl"]["batch_size"] == 512
    assert shown["reward"]["lambda"] == 3.0


def test_cli_validate_exits_1_with_every_error() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["validate", "tiny"]).exit_code == 0
    result = runner.invoke(app, ["validate", "tiny", "--set", "teacher_rl.num_generations=3"])
    assert result.exit_code == 1
    assert "teacher_rl.batch_size: 4 is not divisible" in result.stderr


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "rlt_core.config", "show", "tiny"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["profile"] == "tiny"
