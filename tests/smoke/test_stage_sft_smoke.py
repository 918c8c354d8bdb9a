"""SFT stages end to end on real files: the tiny profile's student recipe on a tiny random
Llama, and a real SmolLM2-135M-Instruct student that learns the student format (Figure 6)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlt_core import artifacts, formats
from rlt_core.config import load_config
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.stages.data import run_data
from rlt_core.stages.sft import run_student_sft

pytestmark = pytest.mark.smoke


def test_tiny_profile_student_trains_on_traces(tiny_model_path: Path, tmp_path: Path) -> None:
    recipe = load_config("tiny").student_sft["countdown"]
    # The recipe with a tiny model and a short max_length, so that every row is cut.
    cfg = dataclasses.replace(recipe, model=str(tiny_model_path), max_length=512)
    train, _ = countdown_splits(16, 1, seed=0, num_numbers=(3,))
    countdown_rows(train, seed=0).to_parquet(tmp_path / "traces.parquet", index=False)
    ref = run_student_sft(
        cfg, tmp_path / "traces.parquet", tmp_path / "store", max_per_device_batch=8
    )
    manifest = artifacts.read_manifest(ref.uri)
    data, train_figures = manifest["metrics"]["data"], manifest["metrics"]["train"]
    # The tiny recipe asks 8 of the 16 rows (seeded subset); global batch 8 -> 1 step.
    assert (data["rows_read"], data["rows_used"], train_figures["global_step"]) == (16, 8, 1)
    # Prompt ~330 tokens + a search trace + solution > 512: every row is cut to max_length.
    assert data["truncated"] == 8 and data["longest_tokens"] > 512
    history = json.loads((Path(ref.uri) / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "loss" in entry] == [1]
    before = AutoModelForCausalLM.from_pretrained(str(tiny_model_path)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(Path(ref.uri) / "model")).state_dict()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged


def test_smollm2_student_answers_in_the_student_format(
    smollm2_model_path: Path, tmp_path: Path
) -> None:
    cfg = load_config("tiny")
    data = run_data(cfg, tmp_path / "store")  # countdown corpus: its search traces as thoughts
    # 4 rows, batch 1 -> 4 steps. The paper's 1e-5 is meant for hundreds of steps; 1e-4
    # (cosine to 1e-5) teaches the format's first tokens, all this test asks, so the rows are
    # cut at 512 tokens (the prompt is ~330). No warmup: with the recipe's 0.1 the first of the
    # 4 steps runs at lr 0, and 3 steps were not always enough.
    recipe = dataclasses.replace(
        cfg.student_sft["countdown"],
        model=str(smollm2_model_path),
        max_length=512,
        num_train_samples=4,
        batch_size=1,
        learning_rate=1e-4,
        final_learning_rate=1e-5,
        warmup_ratio=0.0,
        save_steps=100,
    )
    ref = run_student_sft(recipe, data.path / "corpus.parquet", tmp_path / "store")
    train = artifacts.read_manifest(ref.uri)["metrics"]["train"]
    assert train["global_step"] == 4
    model_dir = Path(ref.uri) / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    # Held-out countdown test questions written by the data stage.
    questions = pd.read_parquet(data.path / "eval" / "countdown.parquet")["question"].iloc[:4]
    for question in questions:
        prompt = formats.render_student_prompt(tokenizer, str(question))
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
        # Before training SmolLM2 answers "To solve this problem, ..." (no tag).
        assert answer.startswith(formats.BEGIN_THOUGHT), answer
