"""The two engines of the evaluation (Table 7) and the generation budget they share.

`EvaluateConfig.backend` chooses, never a silent fallback: 'transformers' runs lighteval's
TransformersModel on CPU in float32 (`TransformersModelConfig`, device cpu); 'vllm' runs
`vllm_engine.VLLMStudentModel` on GPUs with lighteval's `VLLMModelConfig` (the recipe's dtype,
`tensor_parallel_size`, an explicit `max_model_length`). lighteval 0.13's own VLLMModel cannot
run with the project's vLLM 0.32 (`vllm_engine` says why). `rlt_core.generation.check_backend`
(shared with generate_traces) refuses 'vllm' without CUDA, without the vllm package or
with fewer GPUs than the tensor parallelism, before any model is loaded.

Three things lighteval 0.13 does that would make results wrong, and what is done about them:
- Prediction cache location. lighteval's SampleCache lives at
  `cache_dir / model_name / <hash of the model config>`. With a local checkpoint `model_name`
  is an absolute path, and `Path(cache_dir) / "/abs/path"` IS that path: lighteval writes its
  cache into the model directory, and since the hash covers the config but not the weights, a
  model retrained at the same path would be served the old model's predictions. So
  `model_name` is only a label (`student--<digest>`, a name no hub id can have, so lighteval
  never asks the Hub for its sha), the weights are passed separately, and `cache_dir` lies
  inside the stage's own artifact directory, whose key holds the weights' digest.
- Sampling on the transformers engine. Its TransformersModel never sets `do_sample`, and
  transformers fills an unset `top_k` with 50: at temperature 0.7 it would decode greedily
  (pass@1 of a sampled completion is what Appendix B.4 reports). The model is loaded here
  (`Pipeline(model=..., model_config=...)`) with `do_sample=True`, and top-k off is sent as 0.
- Prompt truncation. lighteval's engines cut prompts that do not fit the context together
  with `max_new_tokens` (its VLLMModel left-truncates the PROMPT, to 4 tokens for a 32,768-token
  model asked for 32,764 new ones), and vLLM needs `max_model_len` to hold prompt + new tokens.
  `plan_budget` measures the longest rendered prompt of the run first and, when the model's
  context cannot hold it plus `max_new_tokens`, lowers the generation budget instead (logged,
  recorded in results.json). Table 7's "maximum generation context size 32764" so bounds the
  new tokens; no prompt is ever cut.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rlt_core.evaluation.grad_mode import keep_grad_mode

with keep_grad_mode():  # lighteval turns gradients off when imported
    from lighteval.models.model_input import GenerationParameters
    from lighteval.models.transformers.transformers_model import TransformersModelConfig

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from rlt_core import formats
from rlt_core.config import EvaluateConfig

logger = logging.getLogger(__name__)

# Room kept for the prompts of the Hub-read built-in tasks, which are not measured beforehand.
BUILTIN_PROMPT_RESERVE = 4096


def student_label(model_digest: str) -> str:
    """The lighteval `model_name` of a student: a label, never a path (module docstring).

    `model_digest` may be a reference such as `Qwen/Qwen2.5-7B-Instruct`, so it is hashed.
    """
    return f"student--{hashlib.sha256(model_digest.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------- generation budget


@dataclass(frozen=True)
class GenerationBudget:
    """New tokens per completion and the context the engine is built with (Table 7)."""

    max_new_tokens: int
    max_model_length: int
    longest_prompt: int

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (results.json)."""
        return asdict(self)


def longest_prompt(tokenizer: Any, queries: Iterable[str], system: str | None = None) -> int:
    """Tokens of the longest student prompt (system prompt `system`, None for the default, and
    the user turn) of `queries`."""
    prompts = [formats.render_student_prompt(tokenizer, query, system) for query in queries]
    if not prompts:
        return 0
    return max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])


def model_context(model_path: str) -> int | None:
    """The model's maximum sequence length from its config (`max_position_embeddings`), if any."""
    config = AutoConfig.from_pretrained(model_path).get_text_config()
    return getattr(config, "max_position_embeddings", None)


def plan_budget(
    max_new_tokens: int, prompt_tokens: int, context: int | None, *, builtin: bool = False
) -> GenerationBudget:
    """The generation budget that never truncates a prompt (module docstring).

    `prompt_tokens` is the longest measured prompt; with `builtin` tasks (prompts read from the
    Hub during the run) at least `BUILTIN_PROMPT_RESERVE` tokens are kept for the prompt.
    Raises ValueError when the model's `context` cannot hold the prompt and one new token.
    """
    reserve = max(prompt_tokens, BUILTIN_PROMPT_RESERVE if builtin else 0)
    budget = max_new_tokens if context is None else min(max_new_tokens, context - reserve)
    if budget < 1:
        raise ValueError(
            f"the model's context of {context} tokens cannot hold the longest prompt "
            f"({reserve} tokens) plus any generation; evaluate a model with a longer context "
            "or drop the task with the long prompts."
        )
    if budget < max_new_tokens:
        logger.warning(
            "evaluate: %d new tokens + a %d-token prompt exceed the model's %d-token context; "
            "generating at most %d new tokens so that no prompt is truncated",
            max_new_tokens, reserve, context, budget,
        )  # fmt: skip
    return GenerationBudget(budget, reserve + budget, prompt_tokens)


def generation_parameters(cfg: EvaluateConfig, budget: GenerationBudget) -> GenerationParameters:
    """Table 7 sampling values for lighteval; top-k off is `None` for vLLM and 0 for transformers
    (transformers would fill a missing top_k with 50)."""
    top_k = cfg.top_k if cfg.top_k is not None else (None if cfg.backend == "vllm" else 0)
    return GenerationParameters(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=top_k,
        min_p=cfg.min_p,
        repetition_penalty=cfg.repetition_penalty,
        max_new_tokens=budget.max_new_tokens,
    )


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class EngineRun:
    """What either engine needs besides the recipe and the weights: lighteval's model label
    (`student_label`), its prediction cache, the generation budget and the student's system
    prompt (None: the default)."""

    label: str
    cache_dir: Path
    budget: GenerationBudget
    system_prompt: str | None = None

    def config_args(self, cfg: EvaluateConfig, model_path: str) -> dict[str, Any]:
        """The lighteval model-config values both engines share."""
        return {
            "model_name": self.label,
            "tokenizer": model_path,
            "add_special_tokens": False,  # the chat template already holds every special token
            "override_chat_template": True,
            "system_prompt": formats.student_system(self.system_prompt),
            "generation_parameters": generation_parameters(cfg, self.budget),
            "cache_dir": str(self.cache_dir),
        }


def transformers_model(
    cfg: EvaluateConfig, model_path: str, run: EngineRun
) -> tuple[PreTrainedModel, TransformersModelConfig]:
    """The CPU engine: the loaded model (sampling on) and lighteval's config for it (fp32)."""
    if cfg.dtype != "float32":
        logger.info("evaluate: the transformers engine runs on CPU in float32, not %s", cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    model.generation_config.do_sample = True  # lighteval never sets it (module docstring)
    config = TransformersModelConfig(
        **run.config_args(cfg, model_path),
        device="cpu",
        dtype="float32",
        batch_size=cfg.batch_size,
        max_length=run.budget.max_model_length,
    )
    return model, config


def vllm_model(cfg: EvaluateConfig, model_path: str, run: EngineRun) -> Any:
    """The GPU engine on `model_path` (imports vllm: `rlt_core.generation.check_backend` first)."""
    from lighteval.models.vllm.vllm_model import VLLMModelConfig

    from rlt_core.evaluation.vllm_engine import VLLMStudentModel

    config = VLLMModelConfig(
        **run.config_args(cfg, model_path),
        dtype=cfg.dtype,
        tensor_parallel_size=cfg.tensor_parallel_size,
        max_model_length=run.budget.max_model_length,
        seed=cfg.seed,
    )
    return VLLMStudentModel(config, model_path)
