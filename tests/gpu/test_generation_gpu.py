"""vLLM generation on a GPU (skipped without CUDA): the engine of generate_traces on GPUs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rlt_core.config import load_config
from rlt_core.generation import TransformersEngine, VLLMEngine, load_engine

pytestmark = pytest.mark.gpu


def test_vllm_engine_samples_n_completions_per_prompt(tiny_model_path: Path) -> None:
    pytest.importorskip("vllm")
    recipe = dataclasses.replace(
        load_config("paper-7b").generate_traces, max_new_tokens=16, dtype="bfloat16"
    )
    engine = load_engine(recipe, str(tiny_model_path))
    assert isinstance(engine, VLLMEngine)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\nhello<|im_end|>\n"]
    first = engine.generate(prompts, n=4, seed=3)
    assert [len(row) for row in first] == [4, 4]
    for row in first:
        for generation in row:
            assert len(generation.token_ids) <= 16
            assert generation.text == engine.tokenizer.decode(generation.token_ids)
            assert generation.truncated == (len(generation.token_ids) == 16)
    assert engine.generate(prompts, n=4, seed=3) == first  # per-prompt seeds reproduce
    engine.close()


def test_transformers_engine_runs_on_the_gpu_in_bf16(tiny_model_path: Path) -> None:
    recipe = dataclasses.replace(
        load_config("tiny").generate_traces,
        backend="transformers",
        max_new_tokens=8,
        dtype="bfloat16",
    )
    engine = TransformersEngine(str(tiny_model_path), recipe)
    assert engine.model.device.type == "cuda" and str(engine.model.dtype) == "torch.bfloat16"
    (row,) = engine.generate(["<|im_start|>user\nhi<|im_end|>\n"], n=2, seed=0)
    assert len(row) == 2
