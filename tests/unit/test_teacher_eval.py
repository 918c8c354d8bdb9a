"""teacher_eval on tiny models: both teachers explain the same held-out pairs with the same
seeds, every explanation is scored with the RLT reward, and the paired comparison holds its
arithmetic. (The real-model run of the stage is the e2e pipeline's; its report shows it.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.models.tiny import make_tiny_model
from rlt_core.stages.teacher_eval import TEACHERS, run_teacher_eval
from tests.fixtures_models import write_scripted_corpus

CFG = load_config("tiny")
# Teacher_rl's rollout sampling (Table 3's temperature, the tiny profile's top-p/k), cut to
# 16-token explanations.
RL = dataclasses.replace(CFG.teacher_rl, max_completion_length=16)


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> Path:
    """A second tiny Llama (another seed): the 'after RL' teacher, with other weights."""
    return make_tiny_model(tmp_path_factory.mktemp("other"), smollm2_tokenizer_path, seed=7)


def test_teachers_explain_the_same_pairs_and_the_comparison_is_paired(
    tiny_model_path: Path, other_teacher: Path, tmp_path: Path
) -> None:
    pairs = write_scripted_corpus(tmp_path / "pairs.parquet")
    reward = dataclasses.replace(CFG.reward, student_model=str(tiny_model_path))
    ref = run_teacher_eval(
        dataclasses.replace(CFG.teacher_eval, num_pairs=3, num_samples=2),
        RL, reward, str(tiny_model_path), str(other_teacher), pairs, tmp_path / "store",
    )  # fmt: skip
    out = Path(ref.uri)
    assert artifacts.is_complete(out)
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["pairs"] == 3 and comparison["samples_per_pair"] == 2
    assert comparison["explanations"] == {"teacher_sft": 6, "teacher_rl": 6}
    scored = {t: pd.read_parquet(out / f"scored_{t}.parquet") for t in TEACHERS}
    for table in scored.values():
        assert len(table) == 6 and table["reward"].notna().all()
        assert table.groupby("pair_id")["sample"].apply(sorted).tolist() == [[0, 1]] * 3
    # Paired by pair: the mean over a pair's samples, then the mean of the differences.
    for name in ("reward", "r_ss", "r_kl", "penalised", "think_len", "solution_copy"):
        row = comparison["metrics"][name]
        means = [
            scored[t].assign(penalised=(scored[t]["penalty"] != 0).astype(float))
            .groupby("pair_id")[name].mean()
            for t in TEACHERS
        ]  # fmt: skip
        expected = (means[1] - means[0]).mean()
        assert row["n"] == 3 and row["difference"] == pytest.approx(expected, abs=1e-9), name
        assert row["difference"] == pytest.approx(row["after"] - row["before"], abs=1e-9)
        assert row["ci95"][0] <= row["difference"] <= row["ci95"][1], name
    # Other weights, other explanations: the comparison compares something.
    assert (
        scored["teacher_sft"]["explanation"].tolist()
        != scored["teacher_rl"]["explanation"].tolist()
    )

    # The same weights as both teachers: the same seeds give the same explanations, and every
    # difference is zero.
    same = run_teacher_eval(
        dataclasses.replace(CFG.teacher_eval, num_pairs=2, num_samples=1),
        RL, reward, str(tiny_model_path), str(tiny_model_path), pairs, tmp_path / "store",
    )  # fmt: skip
    twins = [pd.read_parquet(Path(same.uri) / f"scored_{t}.parquet") for t in TEACHERS]
    assert twins[0]["explanation"].tolist() == twins[1]["explanation"].tolist()
    metrics = json.loads((Path(same.uri) / "comparison.json").read_text())["metrics"]
    assert metrics["reward"]["difference"] == pytest.approx(0.0, abs=1e-5)


def test_fewer_than_two_pairs_fail_before_any_model_loads(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    pairs = write_scripted_corpus(tmp_path / "pairs.parquet")
    reward = dataclasses.replace(CFG.reward, student_model=str(tiny_model_path))
    with pytest.raises(ValueError, match="a confidence interval over pairs needs at least 2"):
        run_teacher_eval(
            dataclasses.replace(CFG.teacher_eval, num_pairs=1),
            RL, reward, str(tiny_model_path), str(tiny_model_path), pairs, tmp_path / "store",
        )  # fmt: skip
    assert not list((tmp_path / "store").glob("teacher_eval/*/manifest.json"))
