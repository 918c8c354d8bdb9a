"""The two SFT stages: the teacher's warm-up (teacher_sft) and student distillation (student_sft).

- teacher_sft (Appendix A.1): the teacher learns the RLT format (Figure 7) on the corpus'
  reasoning traces before RL, with the loss on the explanation and its closing tag only; the
  recipe is Table 5's 1K recipe at double the epochs (`TeacherSFTConfig`).
- student_sft (section 4.1, Table 5): a student learns from the teacher's traces in the student
  format (Figure 6), loss on the assistant turn only.

Each entry function reads top to bottom: setup (artifact dir, tokenizer), data, trainer, train,
save. Batches are the paper's global batches, split by `rlt_core.training.plan_batch`; a killed
run resumes from its last checkpoint when called again with the same config and input
(`rlt_core.training.run`). The training arguments are built before the model is loaded, as
DeepSpeed ZeRO-3 needs them to shard the weights while loading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from rlt_core import artifacts, sft_data
from rlt_core.batches import SFT_MICRO_BATCH
from rlt_core.config import StudentSFTConfig, TeacherSFTConfig
from rlt_core.config.sft import SFTRecipe
from rlt_core.models import record_system_prompt
from rlt_core.owner import Outcome, Work
from rlt_core.stages.specs import STUDENT_SFT, TEACHER_SFT
from rlt_core.training import run
from rlt_core.training.batching import BatchPlan, count_devices, plan_batch


def run_teacher_sft(
    cfg: TeacherSFTConfig,
    corpus: str | Path,
    store: str | Path,
    *,
    subset_seed: int = 42,
    max_per_device_batch: int = SFT_MICRO_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> artifacts.ArtifactRef:
    """Warm the teacher up in the RLT format (Appendix A.1) into `<store>/teacher_sft/<key>/`.

    `corpus`: a table with the corpus contract's columns (the data stage's corpus.parquet);
    rows without a thought are dropped and counted. `subset_seed` picks `num_train_samples`
    rows (data.subset_seed); `max_per_device_batch` bounds the micro-batch (memory).
    Prompt = Figure 7 system prompt + question + prefilled solution; completion = explanation.
    """
    return TEACHER_SFT.run(
        store,
        {"cfg": cfg, "subset_seed": subset_seed},
        {"corpus": corpus},
        max_per_device_batch=max_per_device_batch,
        callbacks=callbacks,
    )


def run_student_sft(
    cfg: StudentSFTConfig,
    dataset: str | Path,
    store: str | Path,
    *,
    subset_seed: int = 42,
    max_per_device_batch: int = SFT_MICRO_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> artifacts.ArtifactRef:
    """Distil a student on reasoning traces (Table 5) into `<store>/student_sft/<key>/`.

    `dataset`: rows with id, question, solution and thought (generate_traces' output, or the
    corpus itself for the baseline traces of Table 1); the recipe's `num_train_samples` rows
    are kept (seeded by `subset_seed`), samples longer than `max_length` are cut and counted.
    Prompt = Figure 6 system prompt + question; completion = thought and solution sections.
    """
    return STUDENT_SFT.run(
        store,
        {"cfg": cfg, "subset_seed": subset_seed},
        {"dataset": dataset},
        max_per_device_batch=max_per_device_batch,
        callbacks=callbacks,
    )


def train_teacher_sft(
    work: Work,
    cfg: TeacherSFTConfig,
    corpus: str | Path,
    subset_seed: int,
    *,
    max_per_device_batch: int = SFT_MICRO_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> Outcome:
    """teacher_sft's work (`TEACHER_SFT.entry`): `run_teacher_sft` without the owner."""
    return _train_sft(
        work, cfg, corpus, sft_data.teacher_pairs, subset_seed, max_per_device_batch, callbacks
    )


def train_student_sft(
    work: Work,
    cfg: StudentSFTConfig,
    dataset: str | Path,
    subset_seed: int,
    *,
    max_per_device_batch: int = SFT_MICRO_BATCH,
    callbacks: Sequence[TrainerCallback] = (),
) -> Outcome:
    """student_sft's work (`STUDENT_SFT.entry`): `run_student_sft` without the owner."""
    return _train_sft(
        work, cfg, dataset, sft_data.student_pairs, subset_seed, max_per_device_batch, callbacks,
        student=True,
    )  # fmt: skip


PairsFn = Callable[[Any, Any], tuple[list[str], list[str]]]


def _train_sft(
    work: Work,
    cfg: SFTRecipe,
    rows_path: str | Path,
    pairs: PairsFn,
    subset_seed: int,
    max_per_device_batch: int,
    callbacks: Sequence[TrainerCallback],
    *,
    student: bool = False,
) -> Outcome:
    """The SFT work both SFT stages do; they differ in format (`pairs`:
    `sft_data.teacher_pairs` or `student_pairs`). A `student` carries the system prompt it
    was trained with beside its weights (`rlt_core.models.system_prompt_of`)."""
    # setup: the tokenizer (a model without a chat template fails here, before training)
    tokenizer = run.load_tokenizer(cfg.model)
    # data: the seeded subset in the stage's format, tokenised as prompt + completion
    rows, row_stats = sft_data.read_sft_rows(
        rows_path, num_rows=cfg.num_train_samples, seed=subset_seed
    )
    prompts, completions = pairs(tokenizer, rows)
    dataset, token_stats = sft_data.tokenize_pairs(tokenizer, prompts, completions, cfg.max_length)
    # trainer: global batch split over this machine's devices, checkpoints in the work area
    plan = plan_batch(cfg.batch_size, count_devices(), max_per_device_batch)
    trainer = build_sft_trainer(cfg, tokenizer, dataset, work.root, plan, callbacks)
    # train (resuming when a checkpoint is there), then save model and tokenizer
    figures = run.train_resuming(trainer, work.root)
    run.save_trained(trainer, tokenizer, work.out)
    if student:
        prompt, row_stats["system_prompts"] = sft_data.trained_system_prompt(rows)
        if trainer.is_world_process_zero():
            record_system_prompt(work.out / run.MODEL, prompt)
    metrics = {"data": row_stats | token_stats, "batch": plan.to_dict(), "train": figures}
    return Outcome(metrics, {"sft_config": sft_arguments(cfg, work.root, plan)})


def sft_arguments(cfg: SFTRecipe, out: Path, plan: BatchPlan) -> dict[str, Any]:
    """Every paper value of the recipe as TRL `SFTConfig` keyword arguments (Table 5);
    checkpoints go to `out/checkpoints` (`out`: the run's work area).

    Set explicitly, never left to TRL's defaults (which differ: lr 2e-5, linear decay, bf16 on).
    The cosine decay ends at `final_learning_rate` (1e-5 -> 1e-6) through transformers'
    `cosine_with_min_lr` schedule; the warmup ratio goes in `warmup_steps` (a float below 1 is
    a ratio of the total steps in transformers 5).
    """
    if cfg.lr_scheduler == "cosine":
        schedule = run.cosine_to_floor(cfg.learning_rate, cfg.final_learning_rate)
    else:
        schedule = {"lr_scheduler_type": "constant_with_warmup", "lr_scheduler_kwargs": {}}
    return {
        "output_dir": str(out / run.CHECKPOINTS),
        "learning_rate": cfg.learning_rate,
        **schedule,
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "adam_beta1": cfg.adam_beta1,
        "adam_beta2": cfg.adam_beta2,
        "adam_epsilon": cfg.adam_epsilon,
        "optim": "adamw_torch",
        "max_grad_norm": cfg.max_grad_norm,
        "num_train_epochs": cfg.num_epochs,
        "per_device_train_batch_size": plan.per_device,
        "gradient_accumulation_steps": plan.grad_accum,
        "max_length": cfg.max_length,
        "completion_only_loss": True,
        "packing": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        **run.precision_flags(cfg.dtype),
        "seed": cfg.seed,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": 2,
        "logging_steps": 1,
        "report_to": "none",
    }


def build_sft_trainer(
    cfg: SFTRecipe,
    tokenizer: Any,
    dataset: Any,
    out: Path,
    plan: BatchPlan,
    callbacks: Sequence[TrainerCallback] = (),
) -> SFTTrainer:
    """An SFTTrainer on `cfg.model` with `sft_arguments` and a tokenized prompt/completion set.

    Raises ValueError when the trainer does not see the processes the batch plan split over
    (each process would then train alone on the whole dataset).
    """
    args = SFTConfig(**sft_arguments(cfg, out, plan))
    if args.world_size != plan.num_devices:
        raise ValueError(
            f"the batch was split over {plan.num_devices} processes (WORLD_SIZE) but the "
            f"trainer sees {args.world_size}: each would train on the whole dataset. Launch "
            "with `accelerate launch` (configs/accelerate/zero3_cpu.yaml or ddp.yaml on CPU) "
            "or unset WORLD_SIZE."
        )
    return SFTTrainer(
        model=run.load_model(cfg.model),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
