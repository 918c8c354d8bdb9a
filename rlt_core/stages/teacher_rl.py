"""The teacher's RL phase (teacher_rl): GRPO with the RLT reward (section 3, Table 3).

One prompt per corpus row: the Figure 7 system prompt, the question and the assistant turn
PREFILLED with the solution, as plain text ending in `<|begin_of_explanation|>\\n\\n`; the
policy generates the explanation. The `id`, `question`, `solution` and `system` (the row's
student system prompt, None for the default) columns stay in the dataset, because the reward
(`rlt_core.reward.trl.RLTReward`) rebuilds the teacher and student sequences from them (section
3.3). The reward's teacher log-probs come from the LIVE policy (`set_policy(trainer.model)`,
the reference behaviour), its student is the frozen `reward.student_model`. Every reward term
is logged per step (`rlt/*` in the trainer's log), copied into `reward_log.json` beside the
model and drawn as `reward_curves.png`.

The entry function reads top to bottom like the SFT stages (`rlt_core.stages.sft`): setup
(inputs, artifact dir, tokenizer), data, reward, trainer, train (resuming from the last
checkpoint of a killed run), save. The policy starts from the teacher_sft artifact's model
(Appendix A.1), or from the recipe's `model` when no warm-up ran.

Training, resume, the rollout engine and the save are the GRPO path both GRPO stages share
(`rlt_core.training.grpo_run`), with its one TRL override (prompts tokenised without added
special tokens, as the reward rebuilds them).

Known limitation (TRL): checkpoints hold the policy, optimizer and RNG states but not the
reference model; after a resume TRL rebuilds the reference from the starting weights, and it
catches up at the next sync (every `ref_model_sync_steps`, mixup `ref_model_mixup_alpha`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback

from rlt_core import artifacts, formats
from rlt_core.config import RewardConfig, TeacherRLConfig
from rlt_core.data import read_table, row_systems
from rlt_core.data.sources import is_text, require_columns
from rlt_core.figures import reward_curve_figure
from rlt_core.models import resolve_model
from rlt_core.owner import Outcome, Work
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.trl import RLTReward
from rlt_core.stages.specs import TEACHER_RL
from rlt_core.training import run
from rlt_core.training.grpo import (
    DEFAULT_MAX_PER_DEVICE_BATCH,
    grpo_batch_plan,
    grpo_config_kwargs,
    grpo_training_args,
)
from rlt_core.training.grpo_run import (
    PrefilledPromptGRPOTrainer,
    build_grpo_trainer,
    train_grpo,
)

logger = logging.getLogger(__name__)

STAGE = TEACHER_RL.name
PROMPT_COLUMNS = ("id", "question", "solution")
REWARD_LOG = TEACHER_RL.outputs.reward_log
REWARD_CURVES = TEACHER_RL.outputs.reward_curves  # the log's terms per step (rlt_core.figures)
# What the per-step reward log keeps from each trainer log entry, besides every `rlt/*` term.
_LOGGED = ("reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length")


def run_teacher_rl(
    cfg: TeacherRLConfig,
    reward_cfg: RewardConfig,
    teacher_sft: str | Path | None,
    corpus: str | Path,
    store: str | Path,
    *,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> artifacts.ArtifactRef:
    """Train the teacher with GRPO on the RLT reward (Table 3) into `<store>/teacher_rl/<key>/`.

    `teacher_sft`: the teacher_sft artifact dir, whose `model/` the policy starts from (None:
    start from `cfg.model`). `corpus`: a table with id, question and solution columns (the data
    stage's corpus.parquet). `max_per_device_batch` bounds the completions per micro-batch.
    Bad input (missing columns or model, unfinished teacher_sft, a reward temperature other than
    the sampling one) raises before any training.
    """
    check_reward_config(cfg, reward_cfg)
    policy_start(cfg, teacher_sft)  # an unfinished teacher_sft fails before the lease
    return TEACHER_RL.run(
        store,
        {"cfg": cfg, "reward_cfg": reward_cfg},
        {"teacher_sft": teacher_sft, "corpus": corpus},
        max_per_device_batch=max_per_device_batch,
        callbacks=callbacks,
    )


def train_teacher_rl(
    work: Work,
    cfg: TeacherRLConfig,
    reward_cfg: RewardConfig,
    teacher_sft: str | Path | None,
    corpus: str | Path,
    *,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> Outcome:
    """teacher_rl's work (`TEACHER_RL.entry`): `run_teacher_rl` without the owner."""
    # setup: inputs checked, the tokenizer of the policy's starting point
    check_reward_config(cfg, reward_cfg)
    policy = policy_start(cfg, teacher_sft)
    tokenizer = run.load_tokenizer(policy)
    # data: one prefilled RLT prompt per row, question and solution kept for the reward
    dataset, data_stats = teacher_prompts(tokenizer, corpus)
    # trainer: Table 3's GRPOConfig, the RLT reward on a frozen student and the live policy
    trainer, _ = build_rlt_trainer(
        cfg, reward_cfg, policy, tokenizer, dataset, work.root, max_per_device_batch, callbacks
    )
    # train (resuming when a checkpoint is there), then save the reward log and the model
    grpo_kwargs, batch = resolved_arguments(
        cfg, work.root, trainer.args.world_size, max_per_device_batch
    )
    return train_grpo(
        trainer,
        tokenizer,
        work,
        config={"policy_start": policy, "grpo_config": grpo_kwargs},
        metrics={"data": data_stats, "batch": batch},
        log_figures=lambda log: {"reward": reward_summary(reward_history(log))},
        log_files={REWARD_LOG: reward_history},
        log_plots={REWARD_CURVES: draw_reward_curves},
    )


def resolved_arguments(
    cfg: TeacherRLConfig, out: Path, world_size: int, max_per_device_batch: int
) -> tuple[dict[str, Any], dict[str, int]]:
    """The GRPOConfig arguments the run used and its batch layout, for the manifest."""
    plan = grpo_batch_plan(cfg.batch_size, cfg.num_generations, world_size, max_per_device_batch)
    on_gpu = torch.cuda.is_available()
    kwargs = grpo_config_kwargs(cfg, out / run.CHECKPOINTS, plan=plan, on_gpu=on_gpu)
    batch = plan.to_dict() | {"prompts_per_step": cfg.batch_size // cfg.num_generations}
    return kwargs, batch


def check_reward_config(cfg: TeacherRLConfig, reward_cfg: RewardConfig) -> None:
    """Raise ValueError when the reward scores at another temperature than the rollouts'.

    The reference code takes both models' log-probs at the sampling temperature (0.7, Table 3);
    the pipeline config checks this too, but the two configs can reach this stage separately.
    """
    if reward_cfg.temperature != cfg.temperature:
        raise ValueError(
            f"reward.temperature={reward_cfg.temperature} differs from teacher_rl.temperature="
            f"{cfg.temperature}: the RLT reward scores log-probs at the sampling temperature "
            "(section 3.3, Table 3). Set both to the same value (the paper: 0.7)."
        )


def policy_start(cfg: TeacherRLConfig, teacher_sft: str | Path | None) -> str:
    """The model the policy starts from (a local path or hub id): the teacher_sft artifact's
    `model/`, or `cfg.model` (in the key through the recipe) when no warm-up ran.
    Raises FileNotFoundError for an artifact dir that is missing or unfinished.
    """
    if teacher_sft is None:
        return resolve_model(cfg.model)
    model_dir = Path(teacher_sft) / run.MODEL
    if not artifacts.is_complete(teacher_sft) or not model_dir.is_dir():
        raise FileNotFoundError(
            f"teacher_sft artifact {teacher_sft} is missing, unfinished (no manifest.json) or "
            f"has no {run.MODEL}/ directory; the RL policy starts from its model. Run the "
            "teacher_sft stage first (it resumes if it was cut) and pass the dir it returns."
        )
    return str(model_dir)


def teacher_prompts(tokenizer: Any, corpus: str | Path) -> tuple[Dataset, dict[str, int]]:
    """The RL dataset: `prompt` (Figure 7, solution prefilled) plus id, question, solution.

    Rows with an empty question or solution have nothing to explain or to score (Eq. 3 needs
    solution tokens): they are dropped and counted. Raises ValueError for missing columns.
    """
    table = read_table(str(corpus))
    require_columns(
        table,
        PROMPT_COLUMNS,
        source=str(corpus),
        hint="teacher_rl reads the corpus contract (rlt_core.data.corpus): pass the data "
        "stage's corpus.parquet, or rename your columns to these.",
    )
    filled = table["question"].map(is_text) & table["solution"].map(is_text)
    rows = table[filled]
    if rows.empty:
        raise ValueError(
            f"{corpus}: none of its {len(table)} rows has both a question and a solution; the "
            "teacher explains a given solution (section 3.2). Fill those columns."
        )
    if len(rows) < len(table):
        logger.warning(
            "%s: dropped %d rows without question or solution", corpus, len(table) - len(rows)
        )
    dataset = Dataset.from_dict(
        {
            "prompt": formats.render_teacher_prompts(tokenizer, rows),
            "id": [str(i) for i in rows["id"]],
            "question": list(rows["question"]),
            "solution": list(rows["solution"]),
            "system": row_systems(rows),  # the reward's student reads each row's own prompt
        }
    )
    return dataset, {"rows_read": len(table), "dropped_empty": len(table) - len(rows)}


def frozen_student(reward_cfg: RewardConfig, tokenizer: Any, dtype: str) -> RLTScorer:
    """An `RLTScorer` on the frozen student `reward_cfg.student_model`, teacher unset.

    The student's tokenizer must share the policy's vocabulary (checked: Eq. 4 compares the
    two models' log-probs of the same token ids).
    """
    return RLTScorer.with_student(reward_cfg, tokenizer, dtype=getattr(torch, dtype))


def build_rlt_trainer(
    cfg: TeacherRLConfig,
    reward_cfg: RewardConfig,
    policy: str,
    tokenizer: Any,
    dataset: Dataset,
    out: Path,
    max_per_device_batch: int = DEFAULT_MAX_PER_DEVICE_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[PrefilledPromptGRPOTrainer, RLTReward]:
    """A GRPOTrainer with every Table 3 value and the RLT reward wired to its live policy.

    The arguments are built before any model loads (DeepSpeed ZeRO-3 needs them to shard);
    TRL loads the policy and its reference from `policy` in the precision of the hardware.
    """
    args = grpo_training_args(cfg, out / run.CHECKPOINTS, max_per_device_batch=max_per_device_batch)
    scorer = frozen_student(reward_cfg, tokenizer, args.model_init_kwargs["dtype"])
    reward = RLTReward(scorer, max_completion_length=cfg.max_completion_length)
    trainer = build_grpo_trainer(policy, tokenizer, dataset, args, [reward], callbacks)
    scorer.student.to(trainer.accelerator.device)
    reward.set_policy(trainer.model)  # teacher log-probs from the policy being trained
    return trainer, reward


def reward_history(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step reward terms of a trainer log: `rlt/*` (r_SS, r_KL, penalty rate, think
    length, ...), TRL's group reward figures and the KL to the reference, one entry per step."""
    steps = []
    for entry in log_history:
        terms = {key: value for key, value in entry.items() if key.startswith("rlt/")}
        if terms:
            kept = {key: entry[key] for key in _LOGGED if key in entry}
            steps.append({"step": entry["step"], **terms, **kept})
    return steps


def draw_reward_curves(log_history: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """`reward_curves.png`: the reward log's terms per step (`rlt_core.figures`); nothing when
    no step was logged."""
    steps = reward_history(log_history)
    return reward_curve_figure({"teacher_rl": steps}, out) if steps else None


def reward_summary(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Manifest figures of the reward log: steps logged, the first and last step's terms."""
    if not steps:
        return {"steps_logged": 0}
    return {"steps_logged": len(steps), "first": dict(steps[0]), "last": dict(steps[-1])}
