"""`run_stage`: one model stage's entry function called with its section of the pipeline config.

The single place that knows which config sections and inputs each stage function takes; the
stage command line (`python -m rlt_core.stages`) and the orchestration layer's inline runs both
go through it, and `rlt_core.stages.plan.config_view` mirrors it for cache keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from rlt_core.artifacts import ArtifactRef
from rlt_core.config import PipelineConfig
from rlt_core.stages import (
    run_evaluate,
    run_generate_traces,
    run_rank_traces,
    run_student_rl,
    run_student_sft,
    run_teacher_rl,
    run_teacher_sft,
)
from rlt_core.training.launch import check_stage_request

T = TypeVar("T")


def recipe_of(recipes: Mapping[str, T], section: str, recipe: str) -> T:
    """The recipe `recipe` of config section `section`, with a clear error when it is absent."""
    if recipe not in recipes:
        raise ValueError(
            f"{section} has no recipe {recipe!r}; this profile's recipes are {sorted(recipes)}"
        )
    return recipes[recipe]


def run_stage(
    stage: str, cfg: PipelineConfig, store: Path, inputs: Mapping[str, str], recipe: str | None
) -> ArtifactRef:
    """Call the entry function of `stage` with its config section and `inputs` (checked first)."""
    check_stage_request(stage, inputs, recipe)
    seed = cfg.data.subset_seed
    if stage == "teacher_sft":
        return run_teacher_sft(cfg.teacher_sft, inputs["corpus"], store, subset_seed=seed)
    if stage == "teacher_rl":
        teacher_sft = inputs.get("teacher_sft")
        return run_teacher_rl(cfg.teacher_rl, cfg.reward, teacher_sft, inputs["corpus"], store)
    if stage == "evaluate":
        return run_evaluate(cfg.evaluate, inputs["model"], inputs["eval_dir"], store)
    if stage == "rank_traces":
        return run_rank_traces(
            cfg.generate_traces, cfg.reward, inputs["teacher"], inputs["corpus"], store
        )
    if stage == "generate_traces":
        return run_generate_traces(
            cfg.generate_traces, cfg.reward, inputs["teacher"], inputs["corpus"], store
        )
    assert recipe is not None  # check_stage_request: the recipe stages have one
    if stage == "student_sft":
        sft = recipe_of(cfg.student_sft, "student_sft", recipe)
        return run_student_sft(sft, inputs["dataset"], store, subset_seed=seed)
    rl = recipe_of(cfg.student_rl, "student_rl", recipe)
    return run_student_rl(rl, inputs["start_model"], inputs["dataset"], store, subset_seed=seed)
