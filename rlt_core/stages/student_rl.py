"""The student_rl stage: traditional RL with correctness rewards (section 2, section 4.3, Table 6).

GRPO on a student's own answers in the student format (Figure 6), rewarded -1 when unformatted,
-0.5 when formatted but wrong and +1 when right (`rlt_core.reward.correctness`): math answers
(LIMR, section 4.3) graded with math-verify, countdown answers (section 4.4) with the project's
verifier. The RL starts from a student_sft artifact's `model/` (Table 2 "+ RL", the cold start)
or from the base model (Table 2 "RL no cold-start", `cfg.cold_start` null).

The entry function reads top to bottom: setup (artifact dir, tokenizer), data, trainer, train,
save; the artifact layout and the resume behaviour are the SFT stages' (`rlt_core.training.run`).
Every GRPO value of Table 6 is set explicitly by `rlt_core.training.grpo.grpo_training_args`.

Deliberate choices:
- Prompts are plain text rendered by `formats.render_student_prompt` (the exact context the
  student sees at evaluation: the system prompt it was trained with, carried in its model
  directory, and math questions with SkyThought's boxed instruction), tokenised as they are by
  the GRPO path both GRPO stages share (`rlt_core.training.grpo_run`: training, resume, rollout
  engine, save), so a tokenizer that adds a BOS does not get a second one. - Gold columns
  travel in the dataset (`answer` for math, `numbers` and `target` for countdown) and TRL hands
  them to the reward per completion. Golds are checked before training: a math gold that
  math-verify cannot parse would otherwise stop the run at its first step. - math-verify's
  timeouts use `signal.alarm`, which only works in a process's main thread; a math run off the
  main thread is refused before any model is loaded."""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset
from math_verify import parse
from transformers import TrainerCallback
from trl import GRPOConfig

from rlt_core import artifacts, formats
from rlt_core.config import StudentRLConfig
from rlt_core.data import read_table, seeded_subset
from rlt_core.data.sources import require_columns
from rlt_core.models import record_system_prompt, resolve_model, system_prompt_of
from rlt_core.owner import Outcome, Work
from rlt_core.reward.correctness import TASK_COLUMNS, Task, correctness_reward
from rlt_core.stages.specs import STUDENT_RL
from rlt_core.training import run
from rlt_core.training.grpo import DEFAULT_MAX_PER_DEVICE_BATCH, grpo_training_args
from rlt_core.training.grpo_run import build_grpo_trainer, train_grpo

logger = logging.getLogger(__name__)

STAGE = STUDENT_RL.name
RewardFunc = Callable[..., list[float | None]]


def run_student_rl(
    cfg: StudentRLConfig,
    start_model: str | Path,
    dataset: str | Path,
    store: str | Path,
    *,
    subset_seed: int = 42,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> artifacts.ArtifactRef:
    """Train a student with GRPO and correctness rewards (Table 6) into `<store>/student_rl/<key>/`.

    Args:
        cfg: the recipe; `cfg.dataset` picks the grader ('limr': math-verify, 'countdown').
        start_model: a student_sft artifact's `model/` (cold start) or the base model reference
            (offline name, local path or hub id) when `cfg.cold_start` is null.
        dataset: a table with `id`, `question` and the gold columns: the data stage's
            `limr.parquet` (`answer`) or countdown rows (`numbers`, `target`).
        store: the artifact store's root.
        subset_seed: picks `cfg.num_train_samples` rows (`rlt_core.data.seeded_subset`).
        max_per_device_batch: the most completions per device micro-batch (memory).
        callbacks: extra trainer callbacks.

    Raises (all before training): RuntimeError for math off the main thread; ValueError for a
    model reference that names nothing, missing columns, bad golds or too few rows for a step;
    `formats.FormatError` for a tokenizer without a chat template.
    """
    require_grading_thread(correctness_reward(cfg).task)  # before the lease and any model
    resolve_model(str(start_model))  # a reference that names nothing fails here
    return STUDENT_RL.run(
        store,
        {"cfg": cfg, "subset_seed": subset_seed},
        {"start_model": start_model, "dataset": dataset},
        max_per_device_batch=max_per_device_batch,
        callbacks=callbacks,
    )


def train_student_rl(
    work: Work,
    cfg: StudentRLConfig,
    start_model: str | Path,
    dataset: str | Path,
    subset_seed: int,
    *,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> Outcome:
    """student_rl's work (`STUDENT_RL.entry`): `run_student_rl` without the owner."""
    # setup: the grader and the tokenizer
    reward = correctness_reward(cfg)
    require_grading_thread(reward.task)
    model_path = resolve_model(str(start_model))
    tokenizer = run.load_tokenizer(str(start_model))
    # data: Figure 6 prompts (plain text) with the gold columns the reward reads
    rows, row_stats = read_rl_rows(
        dataset, reward.task, num_rows=cfg.num_train_samples, seed=subset_seed
    )
    check_rows_per_step(len(rows), cfg, dataset)
    row_stats["epochs"] = round(cfg.max_steps * _prompts_per_step(cfg) / len(rows), 4)
    system = system_prompt_of(model_path)  # the prompt the cold-start student was trained on
    train_set = rl_dataset(tokenizer, rows, reward.task, system=system)
    # trainer: GRPO with every Table 6 value; the global batch split over this machine
    args = grpo_training_args(
        cfg, work.root / run.CHECKPOINTS, max_per_device_batch=max_per_device_batch
    )
    trainer = build_grpo_trainer(model_path, tokenizer, train_set, args, [reward], callbacks)
    # train (resuming when a checkpoint is there), then save model and tokenizer
    outcome = train_grpo(
        trainer,
        tokenizer,
        work,
        config={"grpo_config": args.to_dict(), "system_prompt": formats.student_system(system)},
        metrics={"data": row_stats, "batch": batch_figures(args)},
        log_figures=lambda log: {"rewards": reward_figures(log, reward.__name__)},
    )
    if trainer.is_world_process_zero():  # the RL student keeps the prompt it was trained on
        record_system_prompt(work.out / run.MODEL, system)
    return outcome


def require_grading_thread(task: Task) -> None:
    """Refuse math grading off the main thread (math-verify's timeouts need `signal.alarm`)."""
    if task == "math" and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "student_rl on math grades answers with math_verify, whose timeouts use signal.alarm "
            "and only work in the main thread; off it every answer would be graded wrong. Call "
            "run_student_rl from the main thread of its own process (e.g. a subprocess launched "
            "by the flow), not from a worker thread."
        )


def read_rl_rows(
    source: str | Path, task: Task, *, num_rows: int | None, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read RL rows (id, question and the task's gold columns), check the golds, subset them.

    With `num_rows` below the rows there, the seeded subset of `seeded_subset` is kept; with more
    asked than there are, every row is used (and a warning logged). Returns rows and counts.
    """
    table = read_table(str(source))
    require_columns(
        table,
        ("id", "question", *TASK_COLUMNS[task]),
        source=str(source),
        hint=f"student_rl ({task}) needs the question and its gold: use the data stage's "
        "limr.parquet (LIMR's raw 'prompt' column becomes 'question', see load_limr) or its "
        "countdown rows (corpus.parquet, eval/countdown.parquet), which keep numbers and target.",
    )
    stats = {"rows_read": len(table)}
    if num_rows is not None and num_rows < len(table):
        table = seeded_subset(table, num_rows, seed)
    elif num_rows is not None and num_rows > len(table):
        logger.warning("%s: %d rows asked, %d available; using all", source, num_rows, len(table))
    check_golds(table, task, source)
    stats["rows_used"] = len(table)
    return table.reset_index(drop=True), stats


def check_golds(rows: pd.DataFrame, task: Task, source: str | Path) -> None:
    """Raise ValueError naming the first row whose gold the grader could not use.

    Math: the answer must parse with math-verify (a plain value such as "5"). Countdown: the
    numbers a list of integers and the target an integer.
    """
    for row in rows.itertuples(index=False):
        if task == "math":
            if not isinstance(row.answer, str) or not parse(row.answer):
                raise ValueError(
                    f"{source}: row {row.id!r} has gold answer {row.answer!r}, which math_verify "
                    "cannot parse; store golds as plain values such as '5' or '\\frac{1}{2}' "
                    "(rlt_core.data.plain_answer, as load_limr does) or drop the row."
                )
        elif not _is_int_list(row.numbers) or not _is_int(row.target):
            raise ValueError(
                f"{source}: row {row.id!r} has numbers={row.numbers!r}, target={row.target!r}; "
                "countdown needs a list of integers and an integer target (countdown_rows "
                "writes them so)."
            )


def _is_int(value: Any) -> bool:
    # numpy's integer types (parquet's int64) register as numbers.Integral; bools do too
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_int_list(values: Any) -> bool:
    return hasattr(values, "__len__") and len(values) > 0 and all(_is_int(v) for v in values)


def rl_dataset(
    tokenizer: Any, rows: pd.DataFrame, task: Task, *, system: str | None = None
) -> Dataset:
    """TRL prompt dataset: `prompt` = the Figure 6 student prompt as text, plus id and golds.

    The system prompt is `system` (the one the start model was trained with; None: the
    default). A math question is the student's question text (`formats.student_question`:
    SkyThought's boxed instruction, once), as in the corpus the student was distilled on and
    in evaluation; LIMR's raw prompts lack it. The shared GRPO trainer tokenises the prompts
    without added special tokens (the chat template already holds every one it needs), so a
    BOS-adding tokenizer is fine.
    """
    questions = [formats.student_question(q) if task == "math" else q for q in rows["question"]]
    prompts = [formats.render_student_prompt(tokenizer, q, system) for q in questions]
    columns: dict[str, list[Any]] = {"prompt": prompts, "id": [str(i) for i in rows["id"]]}
    if task == "math":
        columns["answer"] = [str(a) for a in rows["answer"]]
    else:
        columns["numbers"] = [[int(n) for n in numbers] for numbers in rows["numbers"]]
        columns["target"] = [int(t) for t in rows["target"]]
    return Dataset.from_dict(columns)


def _prompts_per_step(cfg: StudentRLConfig) -> int:
    return cfg.batch_size // cfg.num_generations


def check_rows_per_step(num_rows: int, cfg: StudentRLConfig, source: str | Path) -> None:
    """Raise ValueError when one step's prompts (batch_size / num_generations) exceed the rows."""
    needed = _prompts_per_step(cfg)
    if num_rows < needed:
        raise ValueError(
            f"{source}: {num_rows} training rows, but one GRPO step samples batch_size / "
            f"num_generations = {cfg.batch_size} / {cfg.num_generations} = {needed} prompts. "
            "Give more rows (num_train_samples, a larger dataset) or lower batch_size."
        )


def batch_figures(args: GRPOConfig) -> dict[str, int]:
    """How the global batch of completions was laid out (Table 6: 1024 = 16 prompts x 64)."""
    return {
        "global_batch": args.generation_batch_size,
        "num_generations": args.num_generations,
        "prompts_per_step": args.generation_batch_size // args.num_generations,
        "num_devices": args.world_size,  # named as in the other training stages
        "per_device": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
    }


def reward_figures(log_history: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The correctness reward and accuracy per logged step (TRL's `rewards/<name>/mean`)."""
    key = f"rewards/{name}/mean"
    steps = [entry for entry in log_history if key in entry]
    return {
        "steps": [entry["step"] for entry in steps],
        "reward_mean": [entry[key] for entry in steps],
        "accuracy": [entry.get("correctness/accuracy") for entry in steps],
        "formatted": [entry.get("correctness/formatted") for entry in steps],
        "boxed": [entry.get("correctness/boxed") for entry in steps],
    }
