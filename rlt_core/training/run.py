"""What every training stage shares: its directory, resume, precision, saving, the manifest.

Layout of one run (its work area and artifact: `rlt_core.owner`):

    <store>/.work/<stage>/<key>/checkpoints/checkpoint-<step>/   while training
    <store>/<stage>/<key>/model/              the final model and its tokenizer
    <store>/<stage>/<key>/log_history.json    the trainer's log (loss, lr, grad norm per step)
    <store>/<stage>/<key>/manifest.json       resolved config, upstream digests, metrics; LAST

The key hashes the recipe, the inputs' digests and the code, so running a stage again with
the same config and inputs is the same run: finished (published) -> reused; unfinished (a
killed process) -> training resumes from the last complete checkpoint of its work area.

Precision rules: on CPU always fp32 (bf16 autocast on CPU was ~10x slower here, and fp16 is
not supported); on GPU the recipe's dtype as mixed precision (`bf16` / `fp16` autocast over
fp32 master weights, which the model is loaded in).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, Trainer

from rlt_core import devices
from rlt_core.layout import TrainedFiles
from rlt_core.models import resolve_model
from rlt_core.sft_data import end_of_turn

logger = logging.getLogger(__name__)

_FILES = TrainedFiles()  # every training stage's files (rlt_core.layout)
CHECKPOINTS = _FILES.checkpoints
MODEL = _FILES.model
LOG_HISTORY = _FILES.log_history
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under `out/checkpoints` (`out`: a run's work area), or None.

    The HF Trainer writes `trainer_state.json` last into a checkpoint, so a checkpoint whose
    state file is missing or unreadable was cut by a kill and is skipped.
    """
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("skipping incomplete checkpoint %s", path)
            continue
        return path
    return None


def precision_flags(dtype: str, *, cuda: bool | None = None) -> dict[str, bool]:
    """`bf16` / `fp16` / `use_cpu` trainer flags for the recipe's dtype on this hardware
    (module docstring).

    `cuda` defaults to whether a CUDA GPU is visible. Without one, `use_cpu` is set: only then
    do transformers' arguments join the process group that `accelerate launch` started on the
    CPU (gloo); without it every process trained alone on the whole dataset.
    """
    cuda = devices.gpu_count() > 0 if cuda is None else cuda
    if devices.run_dtype(dtype, int(cuda)) != dtype:
        logger.info("no GPU: training in float32 instead of the recipe's %s", dtype)
    if not cuda:
        return {"bf16": False, "fp16": False, "use_cpu": True}
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            "dtype 'bfloat16' (the paper's, Tables 3 and 5) is not supported by this GPU; "
            "use an Ampere or newer GPU, or set the recipe's dtype to float16 or float32."
        )
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16", "use_cpu": False}


def cosine_to_floor(peak: float, floor: float) -> dict[str, Any]:
    """Trainer arguments for a cosine decay from `peak` to `floor` (transformers'
    `cosine_with_min_lr`), the floor given as its ratio to the peak (`min_lr_rate`).

    Not as `min_lr`: transformers turns that into the ratio by reading the optimizer's
    `defaults`, which DeepSpeed's ZeRO-3 optimizer does not have, so every cosine recipe
    failed at its first step under the paper's ZeRO-3 launch (AttributeError:
    'DeepSpeedZeroOptimizer_Stage3' object has no attribute 'defaults'). The rate gives the
    same schedule, since transformers computes min_lr / peak itself.
    """
    return {
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": floor / peak},
    }


def load_tokenizer(model_ref: str) -> Any:
    """The tokenizer of `model_ref` (offline name, local path or hub id); it must chat.

    Raises ValueError for a reference that names nothing (`resolve_model`) and
    `formats.FormatError` for a tokenizer without a chat template: both before any training.
    """
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_ref))
    end_of_turn(tokenizer)  # raises a FormatError without a chat template
    return tokenizer


def load_model(model_ref: str) -> PreTrainedModel:
    """The causal LM of `model_ref` in float32: the master weights of mixed precision."""
    return AutoModelForCausalLM.from_pretrained(resolve_model(model_ref), dtype=torch.float32)


def train_resuming(trainer: Trainer, out: Path) -> dict[str, Any]:
    """Train, resuming from the last complete checkpoint under `out` (the run's work area);
    return the run's figures."""
    checkpoint = last_checkpoint(out)
    resumed = int(_CHECKPOINT.match(checkpoint.name).group(1)) if checkpoint else 0
    if checkpoint:
        logger.info("resuming from %s (step %d)", checkpoint, resumed)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    steps = result.global_step - resumed
    return {
        "global_step": result.global_step,
        "resumed_from_step": resumed,
        "steps_this_run": steps,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / steps, 3) if steps else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def save_trained(trainer: Trainer, tokenizer: Any, out: Path) -> None:
    """Save the model and tokenizer to `out/model/` and the trainer's log beside it.

    Every process calls it (the Trainer gathers sharded weights); only the main one writes
    the rest. The checkpoints stay where they are: the run's owner removes them only once the
    artifact is published (`rlt_core.owner`), so a kill now loses nothing.
    """
    trainer.save_model(str(out / MODEL))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out / MODEL)
        (out / LOG_HISTORY).write_text(json.dumps(trainer.state.log_history, indent=1))
    trainer.accelerator.wait_for_everyone()
