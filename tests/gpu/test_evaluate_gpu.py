"""The vLLM engine of the evaluate stage on a GPU: a small random Llama with SmolLM2's tokenizer
(head size 64, which every vLLM attention backend supports) on 4 countdown questions, bf16, 16
new tokens. Skipped without CUDA (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.models import make_tiny_model

pytestmark = pytest.mark.gpu
pytest.importorskip("lighteval")  # absent on the lent GPU machine (benchmarks/gpu_check.sh)
pytest.importorskip("vllm")
from rlt_core.stages.evaluate import read_results, run_evaluate  # noqa: E402


def test_vllm_engine_evaluates_countdown(smollm2_tokenizer_path: Path, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "model", smollm2_tokenizer_path, hidden_size=256)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    _, test = countdown_splits(4, 8, seed=0, num_numbers=(3,))
    countdown_rows(test, seed=0).to_parquet(eval_dir / "countdown.parquet", index=False)
    recipe = dataclasses.replace(
        load_config("paper-7b").evaluate,  # Table 7 values, backend vllm, bf16
        tasks=("countdown",),
        max_new_tokens=16,
        max_samples=4,
    )
    assert (recipe.backend, recipe.dtype) == ("vllm", "bfloat16")
    ref = run_evaluate(recipe, model, eval_dir, tmp_path / "store")
    out = Path(ref.uri)
    details = pd.read_parquet(out / "details" / "countdown.parquet")
    assert len(details) == 4 and set(details["correct"]) <= {0, 1}
    results = read_results(out)
    assert results["generation"]["max_new_tokens"] == 16
    assert artifacts.read_manifest(out)["metrics"] == {
        "countdown": results["tasks"]["countdown"]["pass@1"]
    }
    # The weights' directory holds no lighteval cache (model_name is a label, not the path).
    assert not any(p.is_dir() for p in model.iterdir())
