#!/usr/bin/env bash
# The one script for a lent GPU machine (one H200; torch 2.11 + CUDA, transformers 5.17,
# accelerate; no vLLM, TRL, Prefect, datasets or network). Sized for 8 minutes of its time.
#
# Here, first:   bash scripts/gpu_carry.sh        (wheels + tokenizer into .gpu-carry/, 59 MiB)
# There:         the device tool's run with carry [".gpu-carry"] and the command
#                bash benchmarks/gpu_check.sh
# Figures land in $OUT (the device tool brings them back) and in the output:
#   1. the reward log-prob benchmark in bf16 at T = 16,384 with Qwen's 151,936-token vocabulary
#      (naive full logits vs the project's chunked path: tokens/s and peak memory);
#   2. the per-step time breakdown of teacher_rl (rlt/time/*) on a random-weight model of
#      Qwen2.5-0.5B's shape, bf16, 4 prompts x group 8, 512-token completions, transformers
#      rollouts (no vLLM there): is the reward at most 10% of a step?
#   3. tests/gpu, where they apply (the vLLM ones skip: no vLLM there).
# Each part has its own time limit, so one that hangs cannot take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

python -m pip install --quiet --no-deps --no-index .gpu-carry/wheels/*.whl 2>&1 | tail -3
python - <<'PY' | tee "$OUT/machine.txt"
import torch, transformers, trl
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("transformers", transformers.__version__, "trl", trl.__version__)
PY

echo "== 1. reward log-probs, bf16, T = 16384, vocabulary 151936"
timeout 180 python benchmarks/reward_bench.py --device cuda --dtype bfloat16 --seq 16384 \
  --batch 8 --chunk-size 1024 2>&1 | tee "$OUT/reward_bench.txt"

echo "== 2. teacher_rl step breakdown, random Qwen2.5-0.5B shape, bf16"
timeout 300 python benchmarks/grpo_step_times.py --random-qwen2 --tokenizer .gpu-carry/tokenizer \
  --backends transformers --json "$OUT/grpo_steps.json" \
  --set teacher_rl.dtype=bfloat16 --set teacher_rl.batch_size=32 \
  --set teacher_rl.num_generations=8 --set teacher_rl.max_completion_length=512 \
  --set teacher_rl.max_steps=3 --set teacher_rl.gradient_checkpointing=true \
  --set reward.logprob_chunk_size=1024 2>&1 | tail -40 | tee "$OUT/grpo_steps.txt"

echo "== 3. tests/gpu"
timeout 150 python -m pytest tests/gpu -m gpu -p no:cacheprovider -q -o addopts="" 2>&1 \
  | tail -20 | tee "$OUT/gpu_tests.txt"
