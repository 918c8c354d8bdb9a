"""Generation engines behind one interface: vLLM (GPU) and transformers `generate` (CPU)."""

from rlt_core.generation.engine import (
    Engine,
    Generation,
    TransformersEngine,
    VLLMEngine,
    check_backend,
    completion_of,
    inference_device,
    inference_dtype,
    load_engine,
    vllm_sampling_kwargs,
)

__all__ = [
    "Engine",
    "Generation",
    "TransformersEngine",
    "VLLMEngine",
    "check_backend",
    "completion_of",
    "inference_device",
    "inference_dtype",
    "load_engine",
    "vllm_sampling_kwargs",
]
