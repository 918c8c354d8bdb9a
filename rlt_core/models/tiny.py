"""Tiny random-weight Llama models that share a real tokenizer, for fast unit tests.

A 2-layer, 64-wide model over SmolLM2's 49,152-token vocabulary has about 3.3M parameters: it
builds, saves and loads in well under a second on CPU, and it tokenizes and renders chat
templates exactly as the real model does. Its outputs are noise; tests use it for shapes,
plumbing and reproducibility, never for quality. An explicit larger `vocab_size` (151,936, as in
Qwen2.5) lets benchmarks exercise large-vocabulary code paths at small cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from rlt_core.models.cache import PROVENANCE_FILE


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int | None = None,
) -> LlamaConfig:
    """Return a small LlamaConfig whose vocabulary covers every id of `tokenizer`.

    `vocab_size` defaults to `len(tokenizer)`; a larger value pads the embedding (as Qwen's 151,936
    rows do); a smaller one is an error, since token ids past the table would crash the forward.
    """
    needed = len(tokenizer)
    vocab_size = needed if vocab_size is None else vocab_size
    if vocab_size < needed:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the tokenizer's {needed} tokens; "
            f"pass vocab_size >= {needed} or leave it unset to match the tokenizer."
        )
    if hidden_size % num_heads != 0:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; "
            "attention splits the hidden size evenly across heads. Change one of them."
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int | None = None,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Return an in-memory LlamaForCausalLM with random weights drawn from `seed`.

    The same arguments give bit-identical weights; the global torch RNG is left untouched.
    """
    config = tiny_llama_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        vocab_size=vocab_size,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model.eval()


def make_tiny_model(
    out_dir: Path,
    tokenizer_path: Path | str,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny random-weight model with the tokenizer of `tokenizer_path` beside it.

    Writes a safetensors checkpoint, the tokenizer, and `rlt_model.json` (the arguments that made
    it, written last) into `out_dir`; returns `out_dir`, loadable with
    `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.
    """
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    model = build_tiny_model(tokenizer, vocab_size=vocab_size, seed=seed, **sizes)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    provenance = {
        "name": "tiny-random-llama",
        "kind": "checkpoint",
        "tokenizer_source": str(tokenizer_path),
        "vocab_size": model.config.vocab_size,
        "seed": seed,
        **sizes,
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out_dir
