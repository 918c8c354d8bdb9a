"""Benchmark: chunked per-token log-probs (rlt_core.logprobs) vs a naive full-logits baseline.

Both variants score the same batch (B sequences of T tokens) with a tiny-hidden
LlamaForCausalLM (hidden 64, 2 layers) whose vocabulary is Qwen's 151,936 tokens, so the cost
is dominated by the output head and the softmax over the vocabulary, as in the RLT reward
(paper section 3.3) with 7B models where V >> what fits next to a 16K-token sequence.

- naive: one sample at a time, `model(...)` materialises the (T, V) logits, then log_softmax
  (another (T, V) tensor) and gather. This is the straightforward way to get per-token log-probs.
- chunked: `token_logprobs` runs the body once for the whole batch, then the head on
  `--chunk-size` positions at a time. Without gradients on CPU the vocabulary is cut into tiles
  too: one reused buffer of 16 MiB of logits and an online logsumexp, so no (chunk, V)
  tensor is allocated at all (see rlt_core/logprobs.py).

Both bodies run with `sdpa` attention, pinned here: eager attention materialises (B, heads, T, T)
fp32 scores, 4 GiB per tensor at B = 16, T = 4096, and several of them live at once, which is
the size of a 16.5 GiB chunked reading seen once under the old `ru_maxrss` measurement.

Throughput: scored tokens B x (T - 1) per wall-clock second, best of `--repeats` runs, under
`torch.inference_mode()`. The process CPU time (user + system, all threads) of the same run is
printed next to it: other jobs on the machine stretch wall time much more than CPU time, so
compare ratios taken under similar load; each line also prints the 1-minute load average.

Peak extra memory, measured honestly per device:
- cuda: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory
  allocated before the call (model and inputs): every byte the call allocated at its peak.
- cpu: tracemalloc does not see torch's allocations, so each variant runs in a fresh spawned
  process. Right before scoring (model, inputs and one warm-up on a 2-token batch resident) the
  kernel's peak-RSS mark is reset to the current RSS (`5` written to /proc/self/clear_refs,
  Linux) and VmRSS is read; after scoring VmHWM is read: the difference is the highest resident
  memory the scoring itself added. It counts every allocation (logits, softmax workspace,
  attention, hidden states), not only the logits. `ru_maxrss` is not used: it can never be
  reset, so it holds the model loading's peak and, in a spawned child, the RSS the child had
  right after the fork from its parent, and the scoring's own peak can hide under either.

CPU caveat (measured on 2 cores): glibc returns every freed block above its mmap threshold to
the OS, so a fresh (T, V) or (chunk, V) logits tensor is page-faulted in again on every use and
system time dominates; the naive baseline pays this on every sample. Compare memory under the
default allocator: `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` make RSS keep freed
memory, and the peak then measures heap growth, not live tensors.

Shared-machine caveat (measured): the tiled path runs short parallel regions (five ops per
tile), and each one waits for every OpenMP thread; when another process holds a core, a thread
sharing it is descheduled for whole time slices. With 1 MiB tiles the chunked path at
`--threads 2` then slowed down up to 20x in CPU time while the naive path's few long ops barely
noticed; 16 MiB tiles cut the regions 16-fold. On a loaded machine compare at `--threads 1`
too, and report the load average.

Usage:
    python benchmarks/reward_bench.py                      # CPU: T = 1024 and 4096, batch 16
    python benchmarks/reward_bench.py --device cuda --dtype bfloat16 --seq 16384
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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
        attn_implementation="sdpa",
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


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), reported there in KiB, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line; the CPU memory figure needs Linux")


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_bytes("VmRSS")


def _run(variant: str, model: LlamaForCausalLM, ids: torch.Tensor, args) -> torch.Tensor:
    if variant == "naive":
        return naive_logprobs(model, ids, args.temperature)
    return chunked_logprobs(model, ids, args.temperature, args.chunk_size)


def measure(variant: str, seq: int, args: argparse.Namespace) -> dict[str, float]:
    """Time one variant at one length and measure the peak extra memory of its runs."""
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
        before = torch.cuda.memory_allocated() if cuda else _reset_peak_rss()
        times, cpu_times = [], []
        for _ in range(args.repeats if seq <= 1024 else args.long_repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = _run(variant, model, ids, args)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        after = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    return {
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "peak_extra": after - before,
        "checksum": float(out.double().sum()),
        "load": os.getloadavg()[0],
    }


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
            f"({res['seconds']:.2f} s, cpu {res['cpu_seconds']:.2f} s)  "
            f"peak extra {res['peak_extra'] / gib:6.2f} GiB  load {res['load']:.2f}"
        )
    speedup = naive["seconds"] / chunked["seconds"]
    cpu_speedup = naive["cpu_seconds"] / chunked["cpu_seconds"]
    memory = naive["peak_extra"] / max(chunked["peak_extra"], 1)
    rel = abs(naive["checksum"] - chunked["checksum"]) / abs(naive["checksum"])
    print(
        f"T={seq:>6}   ratios: throughput x{speedup:.1f} (cpu time x{cpu_speedup:.1f}), "
        f"peak extra memory x{memory:.1f} "
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
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="measure in this process, not a fresh one per variant (a quick check of the "
        "script: each peak then includes what the runs before it left)",
    )
    return parser.parse_args()


def main() -> None:
    """Measure both variants at every requested length and print the comparison."""
    args = parse_args()
    print(
        f"device={args.device} dtype={args.dtype} batch={args.batch} vocab={args.vocab} "
        f"chunk={args.chunk_size} threads={args.threads} torch={torch.__version__} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    run = measure if args.same_process else measure_in_fresh_process
    for seq in args.seq:
        naive = run("naive", seq, args)
        chunked = run("chunked", seq, args)
        report(seq, args, naive, chunked)


if __name__ == "__main__":
    main()
