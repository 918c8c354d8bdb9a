"""The TRL 1.16 internals the project relies on: if an upgrade moves them, these tests say what
changed and where the project adapts to it, instead of a GRPO run failing hours in."""

from __future__ import annotations

import inspect

import trl.generation.vllm_generation as trl_vllm
from trl import GRPOTrainer

from rlt_core.stages.teacher_rl import PrefilledPromptGRPOTrainer

HINT = "TRL changed; adapt {where} to the new TRL (or pin trl==1.16.0)."


def test_the_prompt_tokenisation_override_matches_trls_method() -> None:
    where = "rlt_core/stages/teacher_rl.py::PrefilledPromptGRPOTrainer._tokenize_prompts"
    assert hasattr(GRPOTrainer, "_tokenize_prompts"), (
        "GRPOTrainer._tokenize_prompts is gone: " + HINT.format(where=where)
    )
    ours = inspect.signature(PrefilledPromptGRPOTrainer._tokenize_prompts)
    theirs = inspect.signature(GRPOTrainer._tokenize_prompts)
    assert list(ours.parameters) == list(theirs.parameters), (
        f"GRPOTrainer._tokenize_prompts{theirs} no longer matches the override{ours}: "
        + HINT.format(where=where)
    )
    source = inspect.getsource(GRPOTrainer)
    assert "self._tokenize_prompts(" in source, (
        "GRPOTrainer no longer calls _tokenize_prompts, so the override is dead: "
        + HINT.format(where=where)
    )


def test_the_vllm_cpu_adaptation_finds_trls_names() -> None:
    where = "rlt_core/training/vllm_rollouts.py"
    assert hasattr(trl_vllm, "LLM"), (
        "trl.generation.vllm_generation no longer imports vllm.LLM by that name, so the CPU "
        "engine options cannot be given to it: " + HINT.format(where=where)
    )
    generation = trl_vllm.VLLMGeneration
    for name in ("sync_weights", "_iter_named_params"):
        assert hasattr(generation, name), f"VLLMGeneration.{name} is gone: " + HINT.format(
            where=where
        )
    assert "self.llm = LLM(" in inspect.getsource(generation._init_vllm), (
        "VLLMGeneration no longer builds its colocated engine as `self.llm = LLM(...)`: "
        + HINT.format(where=where)
    )
    assert "self.vllm_generation = VLLMGeneration(" in inspect.getsource(GRPOTrainer.__init__), (
        "GRPOTrainer no longer keeps its engine in `vllm_generation`: " + HINT.format(where=where)
    )


def test_the_step_timer_finds_the_methods_it_times() -> None:
    from rlt_core.training.step_times import TIMED

    for method in TIMED:
        assert callable(getattr(GRPOTrainer, method, None)), (
            f"GRPOTrainer.{method} is gone, so the step breakdown cannot time it: "
            + HINT.format(where="rlt_core/training/step_times.py")
        )


def test_the_fit_planners_output_head_tiles_are_trls() -> None:
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    from rlt_core import fit

    where = "rlt_core/fit.py (TRL_TOKEN_TILE, TRL_VOCAB_TILE and the output head's formula)"
    assert chunked_logprob.TOKEN_CHUNK_SIZE == fit.TRL_TOKEN_TILE, HINT.format(where=where)
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == fit.TRL_VOCAB_TILE, HINT.format(where=where)
    # both trainers score through the fused head whose tiles these are
    from trl import GRPOTrainer, SFTTrainer

    for trainer in (GRPOTrainer, SFTTrainer):
        assert "add_fused_lm_head(" in inspect.getsource(trainer.__init__), HINT.format(where=where)
