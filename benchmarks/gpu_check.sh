#!/usr/bin/env bash
# The one script for a lent GPU machine (one H200; Python 3.12, torch 2.11 + CUDA, transformers
# 5.17, accelerate; no vLLM, Prefect or network; TRL and datasets carried as wheels). Sized for
# a run of under 9 minutes: each part has its own time limit, so one that hangs cannot take the
# others' time; the limits add up to 510 s (the wheels 30, the rest 480). Typical times are a
# fraction of them (the models are small or random; nothing downloads).
#
# Here, first:   bash benchmarks/gpu_check.sh --dry     (toy sizes on this CPU, ~1.5 min; the smoke
#                                                       test tests/smoke/test_gpu_check_dry.py)
#                bash scripts/gpu_carry.sh              (wheels + tokenizer into .gpu-carry/)
# There:         the device tool's run with carry [".gpu-carry"] and the command
#                bash benchmarks/gpu_check.sh
# Figures land in $OUT (the device tool brings them back) and in the output; record them in
# docs/results/gpu-check.md:
#   1. the reward log-prob benchmark in bf16 at T = 16,384 with Qwen's 151,936-token vocabulary
#      (naive full logits vs the project's chunked path: tokens/s and peak memory);
#   2. the per-step time breakdown of teacher_rl (rlt/time/*) on a random-weight model of
#      Qwen2.5-0.5B's shape, bf16, 4 prompts x group 8, 512-token completions, transformers
#      rollouts (no vLLM there): is the reward at most 10% of a step?
#   3. the fit planner against measurement (benchmarks/fit_check.py), each beside `rlt plan`'s
#      estimate for the same shape (measured / estimated is the planner's error):
#      a. one student_sft step, bf16, gradient checkpointing, 16,384 tokens, random 1.5B shape;
#      b. one teacher_rl micro-step at a 16,384-token completion limit (2,048-token prompt) on
#         random 1.5B-shaped policy, reference and reward student: does it fit, peak, seconds;
#      c. the RLT reward scorer on random Qwen2.5-7B-shaped teacher and student, bf16, 16
#         samples with 7,000-token explanations: tokens/s and model FLOP utilisation;
#      d. the activations of a random 1.5B shape in bf16 at 16,384 tokens, with and without
#         checkpointing (RMSNorm's fp32 copies count there, not in the CPU figures);
#   4. tests/gpu, where they apply (the vLLM ones skip: no vLLM there).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PYTHON=${PYTHON:-python}
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0
part() {  # part SECONDS NAME COMMAND...: run one part under its limit, its output kept
  local limit=$1 name=$2
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1 < /dev/null
  local rc=$?
  tail -25 "$OUT/$name.txt"
  if [ $rc -ne 0 ]; then
    echo "gpu_check: part '$name' failed (exit $rc; 124 = over its ${limit} s)" >&2
    status=1
  fi
}

if [ $DRY -eq 1 ]; then
  echo "== dry run: toy sizes, float32, on the CPU (the figures mean nothing)"
  # the parts run in one process each (no fresh process per measurement); freed tensors still
  # leave the resident memory the CPU figures read (benchmarks/fit_check.py)
  export MALLOC_MMAP_THRESHOLD_=131072
  TOKENIZER=(--tokenizer "$("$PYTHON" -c 'from rlt_core.models import materialize_smollm2_tokenizer as m; print(m())')")
  REWARD=(--device cpu --dtype float32 --seq 64 --batch 2 --vocab 4096 --chunk-size 32
          --same-process)
  GRPO=(--toy --set teacher_rl.dtype=float32 --set teacher_rl.max_steps=1
        --set teacher_rl.max_completion_length=16)
  FIT=(--dry)
else
  part 30 wheels "$PYTHON" -m pip install --quiet --no-deps --no-index .gpu-carry/wheels/*.whl
  TOKENIZER=(--tokenizer .gpu-carry/tokenizer)
  REWARD=(--device cuda --dtype bfloat16 --seq 16384 --batch 8 --chunk-size 1024)
  GRPO=(--set teacher_rl.dtype=bfloat16 --set teacher_rl.batch_size=32
        --set teacher_rl.num_generations=8 --set teacher_rl.max_completion_length=512
        --set teacher_rl.max_steps=3 --set teacher_rl.gradient_checkpointing=true
        --set reward.logprob_chunk_size=1024)
  FIT=(--device cuda --dtype bfloat16)
  ACTIVATIONS=(--device cuda --dtype bfloat16 --model random --shape qwen2.5-1.5b
               --lengths 16384)
fi
part 20 machine "$PYTHON" -c 'import torch, transformers, trl
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
print("torch", torch.__version__, "cuda", torch.version.cuda, device)
print("transformers", transformers.__version__, "trl", trl.__version__)'

echo "== 1. reward log-probs: naive vs chunked"
part 60 reward_bench "$PYTHON" benchmarks/reward_bench.py "${REWARD[@]}"

echo "== 2. teacher_rl step breakdown, random Qwen2.5-0.5B shape"
part 100 grpo_steps "$PYTHON" benchmarks/grpo_step_times.py --random-qwen2 "${TOKENIZER[@]}" \
  --backends transformers --json "$OUT/grpo_steps.json" "${GRPO[@]}"

echo "== 3. the fit planner against measurement"
if [ $DRY -eq 1 ]; then  # toy parts take a second; one process spares three imports (~30 s)
  part 120 fit "$PYTHON" benchmarks/fit_check.py --parts sft grpo scorer activations \
    "${FIT[@]}" "${TOKENIZER[@]}" --json "$OUT/fit.json"
else
  for fit in sft grpo scorer; do
    part 70 "fit_$fit" "$PYTHON" benchmarks/fit_check.py --parts "$fit" "${FIT[@]}" \
      "${TOKENIZER[@]}" --json "$OUT/fit_$fit.json"
  done
  part 60 fit_activations "$PYTHON" benchmarks/fit_check.py --parts activations \
    "${ACTIVATIONS[@]}" "${TOKENIZER[@]}" --json "$OUT/fit_activations.json"
fi

echo "== 4. tests/gpu"
part 30 gpu_tests "$PYTHON" -m pytest tests/gpu -m gpu -p no:cacheprovider -q -o addopts=""
exit $status
