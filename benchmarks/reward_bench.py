"""Benchmark: chunked per-token log-probs (rlt_core.logprobs) vs a naive full-logits baseline.

Both variants score the same batch (B sequences of T tokens) with a tiny-hidden
LlamaForCausalLM (hidden 64, 2 layers) whose vocabulary is Qwen's 151,936 tokens, so the cost
is dominated by the output head and the softmax over the vocabulary, as in the RLT reward
(paper section 3.3) with 7B models where V >> what fits next to a 16K-token sequence.

- naive: one sample at a time, `model(...)` materialises the (T, V) logits, then log_softmax
  (another (T, V) tensor) and gather. This is the straightforward way to get per-token log-probs.
- chunked: `token_logprobs` runs the body once for the whole batch, then the head on
  `--chunk-size` positions at a time with a fused logsumexp, never holding more than one chunk.

Throughput: scored tokens B x (T - 1) per wall-clock second, best of `--repeats` runs, under
`torch.inference_mode()`.

Peak extra memory, measured honestly per device:
- cuda: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory
  allocated before the call (model and inputs): every byte the call allocated at its peak.
- cpu: tracemalloc does not see torch's allocations, so each variant runs in a fresh spawned
  process and we read the process's peak resident set size (`ru_maxrss`, monotonic) right
  before scoring (model, inputs and one warm-up on a 2-token batch already resident) and after
  it: the difference is the highest resident memory the scoring itself added. It counts every
  allocation (logits, softmax workspace, attention, hidden states), not only the logits.

CPU caveat (measured on 2 cores): glibc returns every freed block above its mmap threshold to
the OS, so each fresh logits chunk is page-faulted again and system time dominates both
variants. Running with `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296`
made the chunked path about 3x faster, but then RSS keeps freed memory and the peak-RSS figure
measures heap growth, not live tensors: compare memory under the default allocator.

Usage:
    python benchmarks/reward_bench.py                      # CPU: T = 1024 and 4096, batch 16
    python benchmarks/reward_bench.py --device cuda --dtype bfloat16 --seq 16384
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlt_core.logprobs import token_logprobs

QWEN_VOCAB = 151_936


def build_model(args: argparse.Namespace) -> LlamaForCausalLM:
    """The tiny-hidden, full-vocabulary Llama used by both variants (seeded)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max(args.seq) + 1,
    )
    dtype = getattr(torch, args.dtype)
    return LlamaForCausalLM(config).to(device=args.device, dtype=dtype).eval()


def naive_logprobs(
    model: LlamaForCausalLM, input_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """One sample at a time with the full (T, V) logits and log_softmax materialised: (B, T-1)."""
    rows = []
    for row in input_ids:
        logits = model(input_ids=row[None]).logits[0].float()  # (T, V)
        logp = torch.log_softmax(logits / temperature, dim=-1)  # (T, V)
        rows.append(logp[:-1].gather(-1, row[1:, None]).squeeze(-1))
    return torch.stack(rows)


def chunked_logprobs(
    model: LlamaForCausalLM, input_ids: torch.Tensor, temperature: float, chunk_size: int
) -> torch.Tensor:
    """The library path: one batched body forward, the head chunk by chunk: (B, T-1)."""
    mask = torch.ones_like(input_ids)
    return token_logprobs(model, input_ids, mask, temperature=temperature, chunk_size=chunk_size)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _run(variant: str, model: LlamaForCausalLM, ids: torch.Tensor, args) -> torch.Tensor:
    if variant == "naive":
        return naive_logprobs(model, ids, args.temperature)
    return chunked_logprobs(model, ids, args.temperature, args.chunk_size)


def measure(variant: str, seq: int, args: argparse.Namespace) -> dict[str, float]:
    """Time one variant at one length and measure the peak extra memory of its first run."""
    torch.set_num_threads(args.threads)
    model = build_model(args)
    gen = torch.Generator().manual_seed(seq)
    ids = torch.randint(0, args.vocab, (args.batch, seq), generator=gen).to(args.device)
    with torch.inference_mode():
        _run(variant, model, ids[:, :2], args)  # warm-up: kernels and allocator, not memory
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else _peak_rss_bytes()
        times = []
        for _ in range(args.repeats if seq <= 1024 else args.long_repeats):
            start = time.perf_counter()
            out = _run(variant, model, ids, args)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        after = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
    checksum = float(out.double().sum())
    return {"seconds": min(times), "peak_extra": after - before, "checksum": checksum}


def _child(variant: str, seq: int, args: argparse.Namespace, queue: mp.Queue) -> None:
    queue.put(measure(variant, seq, args))


def measure_in_fresh_process(variant: str, seq: int, args: argparse.Namespace) -> dict:
    """Run `measure` in a spawned process so one variant's peak RSS cannot hide another's."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(variant, seq, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def report(seq: int, args: argparse.Namespace, naive: dict, chunked: dict) -> None:
    """Print one length's figures and the chunked/naive ratios."""
    tokens = args.batch * (seq - 1)
    gib = 1024**3
    for name, res in (("naive", naive), ("chunked", chunked)):
        print(
            f"T={seq:>6} {name:>8}: {tokens / res['seconds']:>10.0f} tok/s "
            f"({res['seconds']:.2f} s)  peak extra {res['peak_extra'] / gib:6.2f} GiB"
        )
    speedup = naive["seconds"] / chunked["seconds"]
    memory = naive["peak_extra"] / max(chunked["peak_extra"], 1)
    rel = abs(naive["checksum"] - chunked["checksum"]) / abs(naive["checksum"])
    print(
        f"T={seq:>6}   ratios: throughput x{speedup:.1f}, peak extra memory x{memory:.1f} "
        f"lower; checksum relative difference {rel:.1e}"
    )
    sys.stdout.flush()


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults: the CPU run of the issue)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seq", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=QWEN_VOCAB)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs at T <= 1024")
    parser.add_argument("--long-repeats", type=int, default=1, help="timed runs at T > 1024")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    return parser.parse_args()


def main() -> None:
    """Measure both variants at every requested length and print the comparison."""
    args = parse_args()
    print(
        f"device={args.device} dtype={args.dtype} batch={args.batch} vocab={args.vocab} "
        f"chunk={args.chunk_size} threads={args.threads} torch={torch.__version__}"
    )
    for seq in args.seq:
        naive = measure_in_fresh_process("naive", seq, args)
        chunked = measure_in_fresh_process("chunked", seq, args)
        report(seq, args, naive, chunked)


if __name__ == "__main__":
    main()
