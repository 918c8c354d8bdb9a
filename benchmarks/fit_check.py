"""Figures: measured memory and time beside the fit planner's estimate (`rlt_core.fit`), the
planner's error as measured / estimated.

Parts (`--parts`, default all but `activations`):
- `activations`: the forward and backward of one sequence through TRL's fused LM head (as
  both trainers run it), with and without gradient checkpointing, at each `--lengths`: what
  the forward leaves for backward against `fit.activation_bytes` (without the layer that
  checkpointing recomputes in backward), and the peak of forward and backward against the
  activations, `fit.output_head_bytes` and the gradients. Default model: SmolLM2-135M-Instruct
  (shipped offline), so this part runs on a CPU; `--model random` takes a random model of
  `--shape` (the GPU check: 1.5B in bf16, where RMSNorm's fp32 copies also count).
- `sft`: one student_sft micro-step of one `--sft-length`-token sequence on a random model of
  `--shape`: forward and backward through TRL's fused head with gradient checkpointing, then
  AdamW's step; the peak against `rlt plan`'s estimate of student_sft for that shape on one GPU
  (model states, activations, output head; headroom left out).
- `grpo`: one teacher_rl micro-step at full length on random `--shape` models (policy,
  reference and the reward's student): the RLT reward of a `--prompt` + `--completion`-token
  sample (the live policy as teacher, `rlt_core.reward.scorer.RLTScorer`), the reference's
  log-probabilities, the policy's forward and backward of GRPO's loss through TRL's fused
  head, AdamW's step; against `rlt plan`'s teacher_rl estimate without colocated rollouts
  (no vLLM there, and a random model would not stop sampling: the completion is given).
- `scorer`: `RLTScorer.score` of `--samples` samples with `--explanation`-token explanations
  on a random teacher and student of `--scorer-shape`: scored tokens per second, model FLOP
  utilisation against `--peak-tflops` (H100/H200 dense bf16: 989), and the peak against the
  two models' weights plus the reward's logits chunk.

Memory: on CUDA, `torch.cuda.max_memory_allocated` after a reset (what the caching allocator
handed out, which is what an out-of-memory error is about); on CPU, the process' resident
memory (VmRSS; the peak is VmHWM after `5` is written to /proc/self/clear_refs), each part
in a fresh process with glibc's mmap threshold at 128 KiB, so freed tensors leave RSS.

`--dry`: every part at toy sizes, float32 on the CPU, in seconds: checks this script (a test
runs it), all in this process. The figures of a dry run mean nothing.

Usage:
    python benchmarks/fit_check.py --parts activations               # CPU, SmolLM2, ~1 min
    python benchmarks/fit_check.py --device cuda --json out.json     # GPU: sft, grpo, scorer
    python benchmarks/fit_check.py --dry
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from qwen_shapes import QWEN_SHAPES

WORDS = ("the sum of each term is then checked against the given value so we add one more step "
         "and the result follows because both sides agree").split()  # fmt: skip


# --------------------------------------------------------------------------- measuring


class Meter:
    """Bytes in use and the peak since `reset`, on CUDA (allocator) or on a CPU (RSS)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()

    def current(self) -> int:
        self.sync()
        return torch.cuda.memory_allocated() if self.cuda else _status("VmRSS")

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int:
        self.sync()
        return torch.cuda.max_memory_allocated() if self.cuda else _status("VmHWM")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _gib(value: float) -> float:
    return round(value / 2**30, 3)


# --------------------------------------------------------------------------- models


def random_model(shape: dict, dtype: torch.dtype, device: str, tokenizer: Any) -> Any:
    """A random-weight Qwen2 of `shape`, built directly on `device` in `dtype`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         max_position_embeddings=32768)  # fmt: skip
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def shape_dir(shape: dict, root: Path, name: str) -> Path:
    """A directory holding only `config.json`: what `rlt plan` reads a model's shape from."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**shape, "model_type": "qwen2"}))
    return out


def fused(model: Any, **kwargs: Any) -> Any:
    """The model with TRL's fused LM head, as SFTTrainer and GRPOTrainer patch it."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, **kwargs)
    return model


def random_ids(tokenizer: Any, length: int, seed: int = 0) -> torch.Tensor:
    """Token ids of ordinary text (no special tokens), `length` of them."""
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(length * 2))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:length]
    return torch.tensor([ids])


def planned(stage: str, shape_path: Path, args: argparse.Namespace, extra: list[str]) -> Any:
    """`rlt plan`'s estimate (`StageSpec.estimate`) of `stage` for this shape on one GPU."""
    from rlt_core.config import load_config
    from rlt_core.stages.specs import spec_of

    dtype = args.dtype
    if stage == "student_sft":
        sets = [f"student_sft.countdown.model={shape_path}",
                f"student_sft.countdown.max_length={args.sft_length}",
                f"student_sft.countdown.dtype={dtype}",
                "student_sft.countdown.gradient_checkpointing=true"]  # fmt: skip
        recipe = "countdown"
    else:
        sets = [f"teacher_rl.model={shape_path}", f"reward.student_model={shape_path}",
                f"teacher_rl.max_completion_length={args.completion}",
                f"teacher_rl.dtype={dtype}", "teacher_rl.gradient_checkpointing=true",
                "teacher_rl.generation_backend=transformers",
                f"reward.logprob_chunk_size={args.chunk}"]  # fmt: skip
        recipe = None
    resources = [f"resources.{stage}.gpus=1", f"resources.{stage}.micro_batch=1",
                 f"resources.{stage}.gpu_memory_gib=1000"]  # fmt: skip
    return spec_of(stage).estimate(load_config("tiny", [*sets, *resources, *extra]), recipe)


# --------------------------------------------------------------------------- the parts


def part_activations(args: argparse.Namespace, length: int, checkpointing: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlt_core.fit import DTYPE_BYTES, ModelShape, activation_bytes, output_head_bytes
    from rlt_core.models import resolve_model

    meter = Meter(args.device)
    dtype = getattr(torch, args.dtype)
    if args.model == "random":  # a random model of --shape (the GPU check: bf16, 1.5B)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        config = {**QWEN_SHAPES[args.shape], "model_type": "qwen2"}
        model = random_model(QWEN_SHAPES[args.shape], dtype, args.device, tokenizer)
    else:
        path = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(args.device)
        config = model.config.to_dict()
    shape = ModelShape.from_config(config, args.model)
    e = DTYPE_BYTES[args.dtype]
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    fused(model)
    ids = random_ids(tokenizer, length).to(args.device)
    with torch.no_grad():  # every weight read once: memory-mapped weights are resident now
        model(input_ids=ids[:, :2])
    before = meter.current()
    meter.reset()
    out = model(input_ids=ids, labels=ids, fused_lm_head=True)
    saved = meter.current() - before  # what the forward left for backward
    out.loss.backward()
    step = meter.peak() - before  # forward and backward: activations, head, gradients
    tokens = ids.shape[1]
    planned_saved = activation_bytes(shape, tokens, e, checkpointing)
    if checkpointing:  # the recomputed layer lives only during backward
        planned_saved -= shape.layer_activation_bytes(tokens, e)
    planned_step = (activation_bytes(shape, tokens, e, checkpointing)
                    + output_head_bytes(shape, tokens - 1, e) + e * shape.params)  # fmt: skip
    return {"part": "activations", "tokens": tokens, "checkpointing": checkpointing,
            "saved_gib": _gib(saved), "saved_estimated_gib": _gib(planned_saved),
            "saved_ratio": round(saved / planned_saved, 3),
            "step_gib": _gib(step), "step_estimated_gib": _gib(planned_step),
            "step_ratio": round(step / planned_step, 3)}  # fmt: skip


def part_sft(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    meter = Meter(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    shape = QWEN_SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        estimate = planned("student_sft", shape_dir(shape, Path(tmp), "model"), args, [])
    base = meter.current()
    meter.reset()
    model = random_model(shape, getattr(torch, args.dtype), args.device, tokenizer)
    model.train()
    model.gradient_checkpointing_enable({"use_reentrant": False})
    fused(model, outputs=("log_probs", "entropy", "is_top1"))
    optimizer = _adamw(model, args.device)
    ids = random_ids(tokenizer, args.sft_length).to(args.device)
    start = time.perf_counter()
    out = model(input_ids=ids, labels=ids, fused_lm_head=True)
    out.loss.backward()
    optimizer.step()
    meter.sync()
    seconds = time.perf_counter() - start
    peak = meter.peak() - base
    expected = round(estimate.peak_gib - estimate.parts.get("headroom", 0.0), 2)
    return {"part": "sft", "shape": args.shape, "tokens": args.sft_length,
            "seconds": round(seconds, 2), "measured_gib": _gib(peak), "estimated_gib": expected,
            "estimate_parts": estimate.parts, "ratio": round(_gib(peak) / expected, 3)}  # fmt: skip


def part_grpo(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from rlt_core.config import RewardConfig
    from rlt_core.reward.scorer import RLTScorer
    from rlt_core.reward.spans import align_text

    meter = Meter(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    shape, dtype = QWEN_SHAPES[args.shape], getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        estimate = planned("teacher_rl", shape_dir(shape, Path(tmp), "model"), args, [])
    base = meter.current()
    meter.reset()
    policy = random_model(shape, dtype, args.device, tokenizer)
    reference = random_model(shape, dtype, args.device, tokenizer).eval().requires_grad_(False)
    student = random_model(shape, dtype, args.device, tokenizer)
    policy.train()
    policy.gradient_checkpointing_enable({"use_reentrant": False})
    fused(policy, temperature=0.7, outputs=("log_probs", "entropy"))
    fused(reference, temperature=0.7)
    optimizer = _adamw(policy, args.device)
    scorer = RLTScorer(policy, student, tokenizer, RewardConfig(logprob_chunk_size=args.chunk),
                       batch_size=1)  # fmt: skip
    prompt = random_ids(tokenizer, args.prompt, seed=1)
    completion = random_ids(tokenizer, args.completion, seed=2)
    text = tokenizer.decode
    sample = align_text(tokenizer, "s0", text(prompt[0][: args.prompt // 2]),
                        text(prompt[0][args.prompt // 2 :]), text(completion[0]))  # fmt: skip
    ids = torch.cat([prompt, completion], dim=1).to(args.device)
    labels = ids.clone()
    labels[:, : args.prompt] = -100
    start = time.perf_counter()
    reward = scorer.score([sample]).reward  # the policy as the reward's teacher, no gradients
    with torch.no_grad():
        ref_lp = reference(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    logps = policy(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    mask = labels[:, 1:] != -100  # log_probs[:, i] is token i + 1's
    delta = ref_lp - logps  # GRPO's loss with beta 0.04 and advantage 1, one micro-batch
    per_token = -torch.exp(logps - logps.detach()) + 0.04 * (torch.exp(delta) - delta - 1)
    ((per_token * mask).sum() / mask.sum()).backward()
    optimizer.step()
    meter.sync()
    seconds = time.perf_counter() - start
    peak = meter.peak() - base
    expected = round(estimate.peak_gib - estimate.parts.get("headroom", 0.0), 2)
    return {"part": "grpo", "shape": args.shape, "tokens": int(ids.shape[1]),
            "reward_tokens": len(sample.teacher_ids) + len(sample.student_ids),
            "reward": round(float(reward[0]), 3), "seconds": round(seconds, 2),
            "measured_gib": _gib(peak), "estimated_gib": expected,
            "estimate_parts": estimate.parts, "ratio": round(_gib(peak) / expected, 3)}  # fmt: skip


def part_scorer(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from rlt_core.config import RewardConfig
    from rlt_core.fit import DTYPE_BYTES, ModelShape
    from rlt_core.reward.scorer import RLTScorer
    from rlt_core.reward.spans import align_text

    meter = Meter(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config, dtype = QWEN_SHAPES[args.scorer_shape], getattr(torch, args.dtype)
    shape = ModelShape.from_config({**config, "model_type": "qwen2"}, args.scorer_shape)
    base = meter.current()
    meter.reset()
    teacher = random_model(config, dtype, args.device, tokenizer).eval()
    student = random_model(config, dtype, args.device, tokenizer)
    scorer = RLTScorer(teacher, student, tokenizer, RewardConfig(logprob_chunk_size=args.chunk),
                       batch_size=args.scorer_batch)  # fmt: skip
    text = tokenizer.decode
    samples = [
        align_text(tokenizer, f"s{i}", text(random_ids(tokenizer, 200, seed=3 * i)[0]),
                   text(random_ids(tokenizer, 300, seed=3 * i + 1)[0]),
                   text(random_ids(tokenizer, args.explanation, seed=3 * i + 2)[0]))
        for i in range(args.samples)
    ]  # fmt: skip
    scorer.score(samples[:1])  # warm-up: kernels chosen, allocator primed
    meter.sync()
    start = time.perf_counter()
    scorer.score(samples)
    meter.sync()
    seconds = time.perf_counter() - start
    tokens = sum(len(s.teacher_ids) + len(s.student_ids) for s in samples)
    flops = sum(
        forward_flops(shape, len(s.teacher_ids), _span(s.teacher_think))
        + forward_flops(shape, len(s.student_ids), _span(s.student_think, s.student_solution))
        for s in samples
    )  # fmt: skip
    e = DTYPE_BYTES[args.dtype]
    expected = _gib(2 * e * shape.params + args.chunk * 2 * shape.vocab * 4)
    peak = _gib(meter.peak() - base)
    return {"part": "scorer", "shape": args.scorer_shape, "samples": args.samples,
            "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds),
            "tflops": round(flops / seconds / 1e12, 1),
            "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 3),
            "measured_gib": peak, "estimated_gib": expected,
            "ratio": round(peak / expected, 3)}  # fmt: skip


def forward_flops(shape: Any, tokens: int, scored: int) -> float:
    """A forward's FLOPs: 2 per weight per token in the layers, causal attention (QK^T and AV
    over half the T x T square), and the output head on the `scored` positions only."""
    layer_weights = shape.layers * (shape.layer_params - 2 * shape.hidden)
    attention = 2 * shape.layers * tokens * tokens * shape.heads * shape.head_dim
    return 2.0 * layer_weights * tokens + attention + 2.0 * shape.hidden * shape.vocab * scored


def _span(*spans: slice) -> int:
    return sum(span.stop - span.start for span in spans)


def _adamw(model: Any, device: str) -> torch.optim.Optimizer:
    """AdamW as the Trainer makes it on a GPU (fused) and on a CPU (for-loop)."""
    cuda = device.startswith("cuda")
    return torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda, foreach=False)


# --------------------------------------------------------------------------- running


def _in_child(job: tuple[str, argparse.Namespace, tuple]) -> dict:
    name, args, extra = job
    torch.set_num_threads(args.threads)
    return PARTS[name](args, *extra)


PARTS = {"activations": part_activations, "sft": part_sft, "grpo": part_grpo,
         "scorer": part_scorer}  # fmt: skip


def jobs(args: argparse.Namespace) -> list[tuple[str, argparse.Namespace, tuple]]:
    out = []
    for name in args.parts:
        if name == "activations":
            out += [
                (name, args, (length, ckpt)) for length in args.lengths for ckpt in (False, True)
            ]
        else:
            out.append((name, args, ()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=list(PARTS), default=["sft", "grpo", "scorer"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--model",
        default="offline:smollm2-135m-instruct",
        help="activations: a model reference, or 'random' (a model of --shape)",
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--shape", default="qwen2.5-1.5b", choices=list(QWEN_SHAPES))
    parser.add_argument("--sft-length", type=int, default=16384)
    parser.add_argument("--prompt", type=int, default=2048, help="rlt_core.fit.PROMPT_TOKENS")
    parser.add_argument("--completion", type=int, default=16384)
    parser.add_argument("--scorer-shape", default="qwen2.5-7b", choices=list(QWEN_SHAPES))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--explanation", type=int, default=7000)
    parser.add_argument("--scorer-batch", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=1024, help="reward.logprob_chunk_size")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--tokenizer", default=None, help="default: SmolLM2's")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--dry", action="store_true", help="toy sizes, float32, CPU, in this process"
    )
    args = parser.parse_args()
    if args.tokenizer is None:
        from rlt_core.models import materialize_smollm2_tokenizer

        args.tokenizer = str(materialize_smollm2_tokenizer())
    if args.dry:
        args.device, args.dtype, args.shape, args.scorer_shape = "cpu", "float32", "toy", "toy"
        args.model = "random"
        args.lengths, args.sft_length, args.prompt, args.completion = [64], 128, 32, 96
        args.samples, args.explanation, args.scorer_batch, args.chunk = 2, 64, 2, 32
    if args.device == "cpu":  # freed tensors leave RSS, so RSS follows live memory
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    rows = []
    context = mp.get_context("spawn")
    for job in jobs(args):  # each part in a fresh process: its own peak, nothing left over
        if args.dry:  # a check of the script at toy sizes: the figures mean nothing anyway
            row = _in_child(job)
        else:
            with context.Pool(1) as pool:
                row = pool.apply(_in_child, (job,))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
