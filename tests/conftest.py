"""Test tiers: unit (default `pytest`), smoke (`-m smoke`: tiny real model, real files), e2e
(`-m e2e`: flows on a real Prefect server), vllm (`-m vllm`: the real vLLM engine on CPU),
distributed (`-m distributed`: 2 training processes with gloo), faults (`-m faults`:
concurrent runs, kills, tampered stores on stub stages), gpu (needs CUDA; skipped without
it). `make test` runs every tier that this machine can run."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures_models",
    "tests.fixtures_s3",
    "tests.fixtures_prefect",
    "tests.fixtures_openai",
]

# Keep tests off the network and off the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A transient store failure is retried after 0.5 s instead of the default 5: the fault and
# S3 tests that cut a store wait through every retry of every stage (tasks.runtime).
os.environ.setdefault("RLT_RETRY_DELAY_SECONDS", "0.5")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests on a machine without CUDA (they still exist and are collected)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
