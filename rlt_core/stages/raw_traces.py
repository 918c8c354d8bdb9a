"""The raw_traces stage: a model trained with traditional RL answers the corpus questions, and its
raw outputs become a student distillation dataset (Table 2, "RL cold-start (raw) + RL").

Section 4.3's baseline teacher is a model trained with traditional RL (the student format and
the correctness reward: the pipeline's student_rl from the base model). The dataset that
cold-starts the second RL iteration is that model's own reasoning on the corpus questions:
the student prompt of Figure 6 with the question only (no solution), one completion per
question sampled with Table 4's generation values (generate_traces' recipe), and its raw
output used as it is: the sample's `response`, which student_sft trains on verbatim
(`rlt_core.sft_data`). Nothing is refined, and answers are not filtered by correctness (the
"raw" variant; the GPT-4.1-mini post-processed variant is `rlt_core.stages.refine_traces` on
these rows).
When the answer is in the student format (all four tags), its thought and solution are also
split out (`thought`, `solution`, `think_tokens`, `format_ok`), for the statistics.

An empty completion has nothing to distil: its row is rejected and counted
(`rejected.parquet`, with the reason). A completion cut at the length limit is kept as it is
(raw) and counted (`truncated`, `stats.json`): the paper avoids incomplete traces with a long
generation limit (Table 4), not by filtering, so raise `generate_traces.max_new_tokens` when the
share is high.

Output (`<store>/raw_traces/<key>/`): `shards/` (written atomically, one seed per shard, so a
resumed run regenerates exactly), `traces.parquet` (id, question, response, thought, solution,
format_ok, think_tokens, reference_solution = the corpus'), `rejected.parquet`, `stats.json`
and `manifest.json` last.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlt_core import artifacts, formats
from rlt_core.config import GenerateTracesConfig
from rlt_core.data import row_systems
from rlt_core.generation import Engine, check_backend, load_engine
from rlt_core.generation.shards import fill_shards, read_pairs, read_shards
from rlt_core.generation.trace_stats import length_stats
from rlt_core.models import model_input
from rlt_core.owner import Outcome, Work
from rlt_core.reward.spans import encode
from rlt_core.stages.specs import RAW_TRACES

logger = logging.getLogger(__name__)

STAGE = RAW_TRACES.name
FILES = RAW_TRACES.outputs


def run_raw_traces(
    cfg: GenerateTracesConfig, model: str | Path, corpus: str | Path, store: str | Path
) -> artifacts.ArtifactRef:
    """Sample `model`'s answer to every corpus question into `<store>/raw_traces/<key>/`.

    `model`: a student_rl artifact (its `model/`), a model directory or reference. `corpus`: a
    table with id, question and solution (the data stage's corpus.parquet). Bad input (backend
    unavailable, missing columns, an unfinished model artifact) raises before any model loads.
    """
    return RAW_TRACES.run(store, {"cfg": cfg}, {"model": model, "corpus": corpus})


def answer_corpus(
    work: Work, cfg: GenerateTracesConfig, model: str | Path, corpus: str | Path
) -> Outcome:
    """raw_traces' work (`RAW_TRACES.entry`): `run_raw_traces` without the owner."""
    check_backend(cfg)
    rows = read_pairs(corpus)
    source = model_input(model)
    out = work.out
    fill_shards(
        rows,
        cfg.shard_size,
        out,
        lambda: load_engine(cfg, source.path, batch_size=cfg.batch_size),
        lambda engine, part, number: answer_shard(engine, part, cfg.seed + number),
        desc=STAGE,
    )
    table = read_shards(out)
    kept = table[table["kept"]].drop(columns=["kept", "completion"]).reset_index(drop=True)
    if kept.empty:
        raise ValueError(
            f"{model}: none of its {len(table)} answers can be distilled (reasons: "
            f"{table['reason'].value_counts().to_dict()}); every answer was empty. Check the "
            "model (it should answer the student prompt) and generate_traces' sampling values."
        )
    kept.to_parquet(out / FILES.traces, index=False)
    table[~table["kept"]].reset_index(drop=True).to_parquet(out / FILES.rejected, index=False)
    stats = raw_trace_stats(table)
    (out / FILES.stats).write_text(json.dumps(stats, indent=2, sort_keys=True))
    return Outcome(stats, {"model": str(model)})


def answer_shard(engine: Engine, rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One completion per row from the question alone (student prompt), as a table: the row's
    id and question, the raw `response`, its thought and solution when in the student format
    (`format_ok`), `truncated`, `kept`, `reason` ("raw", or "empty": rejected),
    `think_tokens` and the corpus' `reference_solution`."""
    tokenizer = engine.tokenizer
    systems = row_systems(rows)
    prompts = [
        formats.render_student_prompt(tokenizer, q, system)
        for q, system in zip(rows["question"], systems, strict=True)
    ]
    outputs = engine.generate(prompts, n=1, seed=seed)
    records = []
    for row, system, (generation,) in zip(rows.to_dict("records"), systems, outputs, strict=True):
        parsed = formats.parse_student_text(generation.text)
        reason = "raw" if generation.text.strip() else "empty"
        in_format = parsed.complete and reason == "raw"
        records.append({
            "id": row["id"], "question": row["question"], "system": system,
            "response": generation.text.strip() if reason == "raw" else None,
            "thought": parsed.thought if in_format else None,
            "solution": parsed.solution if in_format else None,
            "format_ok": in_format, "truncated": generation.truncated,
            "kept": reason == "raw", "reason": reason,
            "think_tokens": len(encode(tokenizer, parsed.thought)) if in_format else 0,
            "reference_solution": row["solution"], "completion": generation.text,
        })  # fmt: skip
    return pd.DataFrame.from_records(records)


def raw_trace_stats(table: pd.DataFrame) -> dict[str, Any]:
    """Rows answered, kept (and in the student format) and rejected (by reason), and the
    think-token lengths of the kept answers in the student format."""
    kept = table[table["kept"]]
    return {
        "rows": len(table),
        "kept": len(kept),
        "in_student_format": int(kept["format_ok"].sum()),
        "truncated": int(kept["truncated"].sum()),
        "dropped": {
            str(k): int(v) for k, v in table.loc[~table["kept"], "reason"].value_counts().items()
        },
        "think_tokens": length_stats(
            np.asarray(kept.loc[kept["format_ok"], "think_tokens"], dtype=float)
        ),
    }
