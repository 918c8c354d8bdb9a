"""evaluate end to end on the real SmolLM2-135M-Instruct: the tiny profile's evaluate config
(countdown, at most 96 new tokens, the transformers engine) on the data stage's countdown test
set, 4 questions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts, formats
from rlt_core.config import load_config
from rlt_core.evaluation import score_predictions
from rlt_core.stages.data import run_data
from rlt_core.stages.evaluate import read_results, run_evaluate

pytestmark = pytest.mark.smoke


def test_smollm2_on_the_tiny_profiles_countdown_evaluation(
    smollm2_model_path: Path, tmp_path: Path
) -> None:
    cfg = load_config("tiny")
    eval_dir = run_data(cfg, tmp_path / "store").path / "eval"
    recipe = dataclasses.replace(cfg.evaluate, max_samples=4)
    assert (recipe.tasks, recipe.max_new_tokens, recipe.backend) == (
        ("countdown",), 96, "transformers"
    )  # fmt: skip
    ref = run_evaluate(recipe, smollm2_model_path, eval_dir, tmp_path / "store")
    out = Path(ref.uri)
    manifest = artifacts.read_manifest(out)
    results = read_results(out)
    score = results["tasks"]["countdown"]["pass@1"]
    assert manifest["metrics"] == {"countdown": score} and 0.0 <= score <= 1.0
    assert results["generation"]["max_new_tokens"] == 96  # fits SmolLM2's 8,192 context
    details = pd.read_parquet(out / "details" / "countdown.parquet")
    assert len(details) == 4 and details["prediction"].str.strip().str.len().gt(0).all()
    assert set(details["id"]) <= set(pd.read_parquet(eval_dir / "countdown.parquet")["id"])
    assert "| Countdown | Overall |" in (out / "results.md").read_text()
    # Rescoring the saved completions through lighteval gives the same verdicts.
    rescored = score_predictions({"countdown": details}, eval_dir, tmp_path / "rescore")
    assert rescored.details["countdown"]["correct"].tolist() == details["correct"].tolist()
    # The graded text never holds a closed thought.
    closed = details["graded"].str.contains(formats.END_THOUGHT, regex=False)
    assert not (closed & details["graded"].str.contains(formats.BEGIN_THOUGHT, regex=False)).any()
