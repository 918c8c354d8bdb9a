"""What each stage run depends on, for cache keys computed before the stage runs.

The stage entry functions key their own artifact directories (config, input digests, code).
An orchestrator that wants to skip a finished stage without calling it (Prefect's task cache)
needs the same ingredients up front: `config_view` (the parts of the pipeline config the stage
reads), `code_modules` (the rlt_core source it runs: the import closure of its module,
`rlt_core.code_closure`) and the digests of its inputs.
`stage_cache_key` combines them. Keep `config_view` in step with
`rlt_core.stages.dispatch.run_stage`, which hands each stage exactly these sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlt_core import artifacts
from rlt_core.code_closure import code_fingerprint, module_closure
from rlt_core.config import PipelineConfig, to_dict
from rlt_core.stages import data, evaluate, generate_traces

STAGES = (
    "data",
    "teacher_sft",
    "teacher_rl",
    "generate_traces",
    "rank_traces",
    "student_sft",
    "student_rl",
    "evaluate",
)
# The module of each stage's entry function: its import closure is the code the stage runs.
MODULES = {
    "data": "data",
    "teacher_sft": "sft",
    "teacher_rl": "teacher_rl",
    "generate_traces": "generate_traces",
    "rank_traces": "rank_traces",
    "student_sft": "sft",
    "student_rl": "student_rl",
    "evaluate": "evaluate",
}


def stage_module(stage: str) -> str:
    """The full name of the module holding `stage`'s entry function."""
    _check_stage(stage)
    return f"rlt_core.stages.{MODULES[stage]}"


def code_modules(stage: str) -> tuple[str, ...]:
    """The rlt_core modules whose source a run of `stage` depends on (its import closure)."""
    return module_closure(stage_module(stage))


def config_view(cfg: PipelineConfig, stage: str, recipe: str | None = None) -> dict[str, Any]:
    """The parts of `cfg` a run of `stage` (and `recipe`, for the student stages) reads."""
    _check_stage(stage)
    seed = cfg.data.subset_seed
    views = {
        "data": lambda: data.data_config_view(cfg),
        "teacher_sft": lambda: {"recipe": to_dict(cfg.teacher_sft), "subset_seed": seed},
        "teacher_rl": lambda: {"recipe": to_dict(cfg.teacher_rl), "reward": to_dict(cfg.reward)},
        "generate_traces": lambda: generate_traces.key_config(cfg.generate_traces, cfg.reward),
        "rank_traces": lambda: {
            "recipe": to_dict(cfg.generate_traces),
            "reward": to_dict(cfg.reward),
        },
        "student_sft": lambda: {"recipe": to_dict(_recipe(cfg.student_sft, stage, recipe))},
        "student_rl": lambda: {"recipe": to_dict(_recipe(cfg.student_rl, stage, recipe))},
        "evaluate": lambda: evaluate.key_config(cfg.evaluate),
    }
    view = views[stage]()
    if stage in ("student_sft", "student_rl"):
        view |= {"name": recipe, "subset_seed": seed}
    return view


def stage_cache_key(
    stage: str, cfg: PipelineConfig, upstream: Mapping[str, str], recipe: str | None = None
) -> str:
    """A key that changes when the stage's config, its inputs' digests or its code change.

    `upstream` maps input names to digests (an artifact's digest, a file's sha256, or a model
    reference such as a hub id).
    """
    view = {"stage": stage, "config": config_view(cfg, stage, recipe)}
    code = code_fingerprint(stage_module(stage))
    return f"{stage}-{artifacts.stage_key(view, dict(upstream), code)}"


def _recipe(recipes: Mapping[str, Any], stage: str, recipe: str | None) -> Any:
    if recipe not in recipes:
        raise ValueError(f"{stage} has no recipe {recipe!r}; known: {sorted(recipes)}")
    return recipes[recipe]


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {list(STAGES)}")
