"""The rank_traces stage: section 4.5's reward-rank datasets.

"We sample 16 completions per question-solution pair from the SFT teacher, rank them by the RLT
reward, and build 16 datasets: the k-th holds the k-th best explanation of every pair." Students
distilled from each dataset then show whether a higher reward means a better student.

For each corpus row the teacher (the teacher_sft model) samples `generate_traces.num_candidates`
completions (the RLT prompt of Figure 7, Table 4 sampling). Every completion is scored with
r_RLT (Eq. 3-5, `rlt_core.reward.score.score_dataset`, teacher = the same model, student =
`reward.student_model`); a completion that never closed its explanation keeps everything it
generated as its explanation and gets the format penalty, so it ranks low, as the reward says.
Rank k (1 = best) of every pair goes into `ranks/rank-<k>.parquet`, a student SFT dataset.

Output (`<store>/rank_traces/<key>/`): `shards/part-NNNNN.parquet` (the sampled completions,
written shard by shard, resumable like generate_traces), `candidates.parquet`, `scored.parquet`,
`ranks/rank-01.parquet` .. `rank-NN.parquet`, `stats.json` (mean reward per rank), manifest last.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rlt_core import artifacts, formats
from rlt_core.config import GenerateTracesConfig, RewardConfig
from rlt_core.generation import Engine, check_backend, load_engine
from rlt_core.generation.shards import fill_shards, read_pairs, read_shards
from rlt_core.models import model_input
from rlt_core.owner import Outcome, Work
from rlt_core.reward.score import score_file
from rlt_core.stages.specs import RANK_TRACES

STAGE = RANK_TRACES.name
FILES = RANK_TRACES.outputs


def run_rank_traces(
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    teacher: str | Path,
    corpus: str | Path,
    store: str | Path,
) -> artifacts.ArtifactRef:
    """Sample, score and rank `cfg.num_candidates` explanations per pair (section 4.5).

    `teacher`: the teacher_sft artifact (or its `model/`, or any model input); `corpus`: the
    data stage's corpus.parquet. Bad input raises before any model is loaded.
    """
    return RANK_TRACES.run(
        store, {"cfg": cfg, "reward_cfg": reward_cfg}, {"teacher": teacher, "corpus": corpus}
    )


def rank_corpus(
    work: Work,
    cfg: GenerateTracesConfig,
    reward_cfg: RewardConfig,
    teacher: str | Path,
    corpus: str | Path,
) -> Outcome:
    """rank_traces' work (`RANK_TRACES.entry`): `run_rank_traces` without the owner."""
    # setup: inputs checked before any model is loaded
    check_backend(cfg)
    rows = read_pairs(corpus)
    if cfg.num_candidates < 2:
        raise ValueError(
            f"generate_traces.num_candidates={cfg.num_candidates}: ranking needs at least 2 "
            "completions per pair (section 4.5 uses 16)."
        )
    source = model_input(teacher)
    out = work.out
    # sample: every completion of every pair, shard by shard
    sample_shards(cfg, source.path, rows, out)
    candidates = read_shards(out)
    candidates.to_parquet(out / FILES.candidates, index=False)
    # score every completion with r_RLT (resumable), then rank per pair
    scored = score_file(
        source.path, reward_cfg, out / FILES.candidates, out / FILES.scored, cfg.dtype
    )
    stats = write_ranks(scored, out, cfg.num_candidates)
    (out / FILES.stats).write_text(json.dumps(stats, indent=2, sort_keys=True))
    return Outcome(stats, {"teacher": str(teacher)})


def sample_shards(
    cfg: GenerateTracesConfig, model_path: str, rows: pd.DataFrame, out: Path
) -> None:
    """Write the missing shards of sampled completions (one row per pair and completion)."""
    fill_shards(
        rows,
        cfg.shard_size,
        out,
        lambda: load_engine(cfg, model_path, batch_size=cfg.batch_size),
        lambda engine, part, number: candidate_rows(engine, part, cfg, number),
        desc=STAGE,
    )


def candidate_rows(
    engine: Engine, rows: pd.DataFrame, cfg: GenerateTracesConfig, number: int
) -> pd.DataFrame:
    """Sample the shard's completions: id `<pair id>#<k>`, pair_id, question, solution,
    explanation (closed or, when cut, everything generated) and format_ok."""
    prompts = formats.render_teacher_prompts(engine.tokenizer, rows)
    outputs = engine.generate(prompts, n=cfg.num_candidates, seed=cfg.seed + number)
    records = []
    for row, candidates in zip(rows.to_dict("records"), outputs, strict=True):
        for k, generation in enumerate(candidates):
            parsed = formats.parse_teacher_completion(generation.text)
            records.append(
                {
                    "id": f"{row['id']}#{k}",
                    "pair_id": row["id"],
                    "question": row["question"],
                    "solution": row["solution"],
                    "explanation": parsed.explanation,
                    "format_ok": parsed.complete and not generation.truncated,
                }
            )
    return pd.DataFrame.from_records(records)


def write_ranks(scored: pd.DataFrame, out: Path, num_ranks: int) -> dict[str, object]:
    """Split the scored completions into one dataset per rank; return the per-rank figures."""
    ordered = scored.sort_values(["pair_id", "reward"], ascending=[True, False], kind="stable")
    ordered = ordered.assign(rank=ordered.groupby("pair_id").cumcount() + 1)
    (out / FILES.ranks).mkdir(exist_ok=True)
    figures = {}
    for rank in range(1, num_ranks + 1):
        table = ordered[ordered["rank"] == rank]
        dataset = pd.DataFrame(
            {
                "id": table["pair_id"].tolist(),
                "question": table["question"].tolist(),
                "solution": table["solution"].tolist(),
                "thought": table["explanation"].tolist(),
                "reward": table["reward"].tolist(),
                "format_ok": table["format_ok"].tolist(),
            }
        )
        dataset.to_parquet(out / FILES.rank(rank), index=False)
        figures[str(rank)] = {
            "rows": len(dataset),
            "mean_reward": round(float(dataset["reward"].mean()), 4),
            "share_format_ok": round(float(dataset["format_ok"].mean()), 4),
        }
    return {"pairs": int(scored["pair_id"].nunique()), "ranks": figures}
