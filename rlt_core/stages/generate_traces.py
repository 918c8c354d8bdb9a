"""The generate_traces stage: the teacher explains every question-solution pair (section 4.1,
Appendix B.1, Table 4), and its raw explanations become a student distillation dataset.

For each corpus row the teacher sees the RLT prompt of Figure 7 with the solution PREFILLED and
samples `num_candidates` completions. A completion is usable when it closes the explanation
(`<|end_of_explanation|>`) before the length limit; it becomes a student sample with the
explanation as the thought and the solution appended back, and nothing else done to it
(section 3.2, `rlt_core.formats.teacher_output_to_student`). Rows without a usable completion
are kept out of the dataset and counted (`rejected.parquet` keeps them with the reason).

Which candidate is kept (Appendix B.1): with one candidate (7B students), that one; with more
(the 32B rule: 16), the first whose student sample fits `max_student_tokens` (16,384), else the
one with the best r_SS (Eq. 3) under the frozen student `reward.student_model`.

Output (`<store>/generate_traces/<key>/`):

    shards/part-NNNNN.parquet   every row of one shard with its outcome (written atomically)
    traces.parquet              the student SFT dataset: id, question, solution, thought, and
                                per row the keep rule, candidate index, lengths, candidate_r_ss
    rejected.parquet            rows without a usable completion, with the reason
    scored.parquet              with `score_traces`: each trace's RLT reward and its breakdown
    stats.json                  think-token lengths (Figure 8), truncation share, selection rule
    manifest.json               written last

Resume: shards are written one at a time, each atomically; a rerun with the same config and
inputs lands in the same directory and skips finished shards. Each shard is sampled with the
seed `seed + shard number`, so a resumed run gives the rows an uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from rlt_core import artifacts
from rlt_core.config import GenerateTracesConfig, RewardConfig
from rlt_core.generation import check_backend, load_engine
from rlt_core.generation.keep_rule import candidate_scorer, explain_shard
from rlt_core.generation.shards import fill_shards, read_pairs, read_shards
from rlt_core.generation.trace_stats import trace_stats
from rlt_core.models import model_input
from rlt_core.owner import Outcome, Work
from rlt_core.reward.score import SCORE_COLUMNS, score_file
from rlt_core.stages.specs import GENERATE_TRACES

logger = logging.getLogger(__name__)

STAGE = GENERATE_TRACES.name
FILES = GENERATE_TRACES.outputs


def run_generate_traces(
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    teacher: str | Path,
    corpus: str | Path,
    store: str | Path,
) -> artifacts.ArtifactRef:
    """Generate the teacher's explanations of `corpus` into `<store>/generate_traces/<key>/`.

    `teacher`: a teacher_rl (or teacher_sft) artifact directory, a model directory or a model
    reference (`rlt_core.models.model_input`). `corpus`: a table with id, question and solution
    (the data stage's corpus.parquet); its other columns but `thought` travel along. Bad input
    (backend unavailable, missing columns, an unfinished teacher artifact) raises before any
    model is loaded.
    """
    return GENERATE_TRACES.run(
        store, {"cfg": cfg, "reward_cfg": reward_cfg}, {"teacher": teacher, "corpus": corpus}
    )


def explain_corpus(
    work: Work,
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    teacher: str | Path,
    corpus: str | Path,
) -> Outcome:
    """generate_traces' work (`GENERATE_TRACES.entry`): `run_generate_traces` without the
    owner."""
    # setup: inputs checked before any model is loaded
    check_backend(cfg)
    rows = read_pairs(corpus)
    source = model_input(teacher)
    out = work.out
    # generate: shard by shard, each written atomically; finished shards are skipped
    generate_shards(cfg, reward_cfg, source.path, rows, out)
    # assemble: the student SFT dataset, the rejected rows and the statistics
    table = read_shards(out)
    traces = table[table["kept"]].drop(columns=["kept", "completion"])
    traces = traces.rename(columns={"reason": "rule"})
    traces.reset_index(drop=True).to_parquet(out / FILES.traces, index=False)
    table[~table["kept"]].reset_index(drop=True).to_parquet(out / FILES.rejected, index=False)
    stats = trace_stats(table, cfg)
    if cfg.score_traces and len(traces):
        stats["reward"] = score_traces(source.path, reward_cfg, out, cfg.dtype)
    (out / FILES.stats).write_text(json.dumps(stats, indent=2, sort_keys=True))
    return Outcome(stats, {"teacher": str(teacher)})


def generate_shards(
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    model_path: str,
    rows: pd.DataFrame,
    out: Path,
) -> None:
    """Write every missing shard of `rows`: each row's candidates sampled and one kept
    (`rlt_core.generation.keep_rule`), the r_SS scorer loaded only for the 32B rule."""
    scorer = None

    def open_engine():  # noqa: ANN202  (an Engine)
        """The engine, and the r_SS scorer on its tokenizer (32B rule only)."""
        nonlocal scorer
        engine = load_engine(cfg, model_path, batch_size=cfg.batch_size)
        scorer = candidate_scorer(cfg, reward_cfg, engine.tokenizer)
        return engine

    fill_shards(
        rows,
        cfg.shard_size,
        out,
        open_engine,
        lambda engine, part, number: explain_shard(engine, scorer, part, cfg, number),
        desc=STAGE,
    )


def score_traces(
    model_path: str, reward_cfg: RewardConfig, out: Path, dtype_name: str
) -> dict[str, float]:
    """Score every kept trace with r_RLT into `scored.parquet`; the mean of each term."""
    scored = score_file(model_path, reward_cfg, out / FILES.traces, out / FILES.scored, dtype_name)
    return {name: round(float(scored[name].mean()), 4) for name in SCORE_COLUMNS}
