"""The evaluate stage: Lighteval pass@1 of a student (section 4.1, Appendix B.4, Table 7).

One sampled completion per question at the Table 7 settings (temperature 0.7, top-p 1, no
top-k, min-p 0, repetition penalty 1, at most 32,764 new tokens; the `tiny` profile: 128),
prompted in the student format (Figure 6) and graded on the solution with the thought removed
(`rlt_core.evaluation`). Default tasks AIME 2024, MATH 500, GPQA Diamond (section 4.1); also
LiveCodeBench and OlympiadBench (Appendix C, read from the Hub by lighteval) and the countdown
test set (section 4.4).

The entry function reads top to bottom: check every input before any model is loaded, find the
artifact directory, generate and grade, write. Output, `<store>/evaluate/<key>/`:

    results.json             pass@1 per task, lighteval's aggregates (with stderr), the budget
    details/<task>.parquet   per sample: id, question, gold, prediction (the full completion),
                             graded (the text graded: the thought removed), correct (0/1), score
    results.md               this student's row in the paper's layout (`rlt_core.evaluation.tables`:
                             model, data size, each benchmark, Overall)
    manifest.json            written LAST; metrics = the per-task scores

The key (`rlt_core.stages.specs.EVALUATE`) hashes the EvaluateConfig, lighteval's version, the
model's identity (its artifact's digest, or the digest of its files for another local
directory, so weights retrained at the same path get a new key), the evaluation folder's
identity (the data artifact it is in) and the code. lighteval's scratch (the local datasets
it reads, its prediction cache) lives in `work/` of the run's work area (`rlt_core.owner`)
while the stage runs and is removed before the artifact is published: predictions can only
ever be served to the weights that made them. A killed run is evaluated again from scratch.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from rlt_core import artifacts
from rlt_core.config import EvaluateConfig
from rlt_core.evaluation import engines, tables, tasks
from rlt_core.evaluation.lighteval_run import (
    LightevalOutcome,
    evaluate_model,
    require_grading_thread,
)
from rlt_core.generation import check_backend
from rlt_core.models import model_input
from rlt_core.owner import Outcome, Work
from rlt_core.stages.specs import EVALUATE
from rlt_core.training import run

logger = logging.getLogger(__name__)

STAGE = EVALUATE.name
RESULTS = EVALUATE.outputs.results
TABLE = EVALUATE.outputs.table
DETAILS = EVALUATE.outputs.details
WORK = EVALUATE.outputs.work


def run_evaluate(
    cfg: EvaluateConfig, model: str | Path, eval_dir: str | Path, store: str | Path
) -> artifacts.ArtifactRef:
    """Evaluate a student on `cfg.tasks` into `<store>/evaluate/<key>/` (Table 7).

    Args:
        cfg: the evaluation recipe (tasks, sampling values, engine).
        model: a model input (`rlt_core.models.model_input`): a student_sft / student_rl
            artifact directory or its `model/`, another local checkpoint, `offline:<name>`,
            or a hub id.
        eval_dir: the data stage's `eval/` directory (`<task>.parquet` per project task).
        store: the artifact store's root.

    A finished key is returned as it is, without loading a model. Raises before any model is
    loaded: ValueError for backend 'vllm' without the vllm package, CUDA or enough GPUs;
    RuntimeError for math grading off the main thread; FileNotFoundError / ValueError for a
    missing evaluation file, missing columns or bad golds; ValueError for a model reference
    that names nothing; `formats.FormatError` for a tokenizer without a chat template.
    """
    return EVALUATE.run(store, {"cfg": cfg}, {"model": model, "eval_dir": eval_dir})


def evaluate_student(
    work: Work, cfg: EvaluateConfig, model: str | Path, eval_dir: str | Path
) -> Outcome:
    """evaluate's work (`EVALUATE.entry`): `run_evaluate` without the owner."""
    # checks: every input before any model is loaded
    check_backend(cfg)
    require_grading_thread(cfg.tasks)
    tables = {t: tasks.read_eval_table(t, eval_dir) for t in cfg.tasks if t in tasks.PROJECT_TASKS}
    model_path = model_input(model).path
    run.load_tokenizer(model_path)  # raises FormatError without a chat template
    out = work.fresh()  # a killed run's partial results are never reused
    # generate and grade with lighteval, its scratch inside the work area
    label = engines.student_label(work.key.upstream["model"])
    outcome = evaluate_model(cfg, model_path, tables, label=label, work_dir=work.root / WORK)
    # write the results, drop the scratch
    write_results(out, outcome, cfg, model_title(model))
    shutil.rmtree(work.root / WORK)
    logger.info("evaluate: %s", outcome.scores)
    return Outcome(outcome.scores)


def model_title(model: str | Path) -> str:
    """The row name of a model: `<stage>/<key>` for an artifact (or its `model/`), else the
    reference as given."""
    path = Path(model).expanduser()
    if path.name == run.MODEL:
        path = path.parent
    if artifacts.is_complete(path):
        return f"{path.parent.name}/{path.name}"
    return str(model)


def write_results(out: Path, outcome: LightevalOutcome, cfg: EvaluateConfig, title: str) -> None:
    """`details/<task>.parquet`, `results.json` and `results.md` (module docstring)."""
    (out / DETAILS).mkdir(exist_ok=True)
    for task, frame in outcome.details.items():
        frame.to_parquet(out / DETAILS / f"{task}.parquet", index=False)
    summary = {
        "model": title,
        "tasks": {
            task: {
                "pass@1": score,
                "num_samples": len(outcome.details[task]),
                "num_correct": int(outcome.details[task]["correct"].sum()),
            }
            for task, score in outcome.scores.items()
        },
        "overall": _overall(outcome.scores, cfg.tasks),
        "lighteval": outcome.lighteval,
        "generation": outcome.generation,
    }
    (out / RESULTS).write_text(json.dumps(summary, indent=2, sort_keys=True))
    row = tables.ReportRow({"Model": title, "Data size": "—"}, outcome.scores)
    table = tables.score_table([row], label_columns=("Model", "Data size"), tasks=cfg.tasks)
    note = (
        f"pass@1 of one completion per question at temperature {cfg.temperature} (top-p "
        f"{cfg.top_p}), at most {outcome.generation['max_new_tokens']} new tokens, "
        f"{cfg.backend} engine"
        + (f"; {cfg.max_samples} questions per task at most." if cfg.max_samples else ".")
    )
    (out / TABLE).write_text(f"# Evaluation (Table 7 settings)\n\n{table}\n{note}\n")


def _overall(scores: dict[str, float], task_names: tuple[str, ...]) -> float | None:
    """The paper's Overall (mean over the tasks); None when a task has no score (JSON-safe)."""
    value = tables.overall(scores, task_names)
    return None if math.isnan(value) else value


def read_results(path: str | Path) -> dict[str, Any]:
    """The `results.json` of a finished evaluate artifact (for publishing tables)."""
    artifacts.read_manifest(path)  # raises for an unfinished directory
    return json.loads((Path(path) / RESULTS).read_text())
