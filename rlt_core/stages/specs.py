"""One declaration per stage: its inputs, the config it reads, its entry function, its files.

Everything else about a stage derives from its `StageSpec`, so nothing is kept in step by hand:

- dispatch (`StageSpec.call`): the entry function gets exactly `reads(cfg, recipe)` as config
  arguments plus its inputs by name, so it cannot depend on a config value its key lacks;
- the subprocess launcher (`rlt_core.stages.launch`): input names, which may be model
  references, whether the stage needs a recipe, whether it runs as one process;
- the key (`StageSpec.key`): the config part is `key_config` of those same arguments, the
  upstream part the identities of the inputs (`rlt_core.identity.input_identity`), the code
  part the import closure of the entry function's module (`rlt_core.code_closure`). The run's
  owner (`StageSpec.run`, `rlt_core.owner`) keys the artifact directory with it, once,
  and the orchestration layer's cache (Prefect) uses the very same key before running anything;
- the flows' references to a stage's files: `TEACHER_RL.outputs.model`, never a literal.

This module is light (no torch): the launcher, the planner and the cache policy import it
without loading any stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from rlt_core.artifacts import ArtifactRef, StageKey, keyed_versions
from rlt_core.batches import max_micro_batch
from rlt_core.config import (
    EvaluateConfig,
    GenerateTracesConfig,
    PipelineConfig,
    RewardConfig,
    StageResources,
    TeacherEvalConfig,
    TeacherRLConfig,
    to_dict,
)
from rlt_core.devices import numerics
from rlt_core.identity import REFERENCE_FIELDS, input_identity, references
from rlt_core.layout import (  # noqa: F401  (the stages' files, re-exported with them)
    DataFiles,
    EvalFiles,
    RankFiles,
    TeacherEvalFiles,
    TeacherRLFiles,
    TraceFiles,
    TrainedFiles,
)
from rlt_core.owner import Launch, Work, own

InputKind = Literal["artifact", "file", "model"]
O = TypeVar("O")  # noqa: E741  (the outputs type of a StageSpec)


@dataclass(frozen=True)
class InputSpec:
    """One input of a stage entry function, by its parameter name.

    kind: `artifact` (a finished artifact directory of another stage), `file` (a file or folder
    inside one, or any local table), `model` (a model directory, an artifact holding `model/`,
    or a model reference: an offline name or a hub id).
    """

    name: str
    kind: InputKind
    optional: bool = False


# --- the declaration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec(Generic[O]):
    """A stage, declared once (module docstring).

    `entry`: "module:function"; the function takes the run's work area
    (`rlt_core.owner.Work`), the arguments of `reads` (config) and the inputs by name,
    writes the artifact's files into `work.out` and returns an `Outcome` (its figures). Keying,
    the lease, resuming and publishing are the owner's (`run`), never the entry's.
    `reads(cfg, recipe)`: the config arguments of the entry function, from the pipeline config.
    `key_config(**arguments)`: what of those arguments the key holds (all of it, but where a
    value provably does not shape the output, e.g. the reward of an unscored generation).
    `recipe_section`: the config section whose named recipe the stage runs (student stages).
    `in_driver`: runs in the orchestrating process (cheap, no model), never as a child.
    `single_process`: generation stages; vLLM starts its own workers, so no accelerate.
    `trains`: a training stage; its entry takes `max_per_device_batch`, the memory knob
    `resources.<stage>.micro_batch` (not keyed: the global batch is the recipe's).
    """

    name: str
    entry: str
    inputs: tuple[InputSpec, ...]
    reads: Callable[[PipelineConfig, str | None], dict[str, Any]]
    key_config: Callable[..., dict[str, Any]]
    outputs: O
    recipe_section: str | None = None
    in_driver: bool = False
    single_process: bool = False
    trains: bool = False

    @property
    def module(self) -> str:
        """The module of the entry function: its import closure is the stage's code."""
        return self.entry.split(":")[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        """The entry function's input parameters, in order."""
        return tuple(i.name for i in self.inputs)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        """The inputs a run cannot do without."""
        return tuple(i.name for i in self.inputs if not i.optional)

    @property
    def model_inputs(self) -> tuple[str, ...]:
        """Inputs that may be a model reference (an offline name, a hub id), not a path."""
        return tuple(i.name for i in self.inputs if i.kind == "model")

    def resources(self, cfg: PipelineConfig) -> StageResources:
        """What one run of this stage is given (`resources.<stage>` of the profile)."""
        return cfg.stage_resources(self.name)

    def entry_function(self) -> Callable[..., ArtifactRef]:
        """The entry function itself (its module imported now)."""
        module, function = self.entry.split(":")
        return getattr(importlib.import_module(module), function)

    def config_args(self, cfg: PipelineConfig, recipe: str | None = None) -> dict[str, Any]:
        """The config arguments of the entry function (checks the recipe first)."""
        self.check_recipe(recipe)
        if self.recipe_section is not None:
            recipes = getattr(cfg, self.recipe_section)
            if recipe not in recipes:
                raise ValueError(
                    f"{self.recipe_section} has no recipe {recipe!r}; this profile's recipes "
                    f"are {sorted(recipes)}"
                )
        return self.reads(cfg, recipe)

    def key_of(
        self,
        config_args: Mapping[str, Any],
        upstream: Mapping[str, str],
        *,
        strict_env: bool = False,
        offload_optimizer: bool = False,
    ) -> StageKey:
        """The key of a run with these config arguments and input identities; with
        `strict_env`, the package versions too (`PipelineConfig.strict_env`);
        `offload_optimizer`: the run launches with the offload config (`offloads`)."""
        config = self.key_config(**config_args)
        identities = references(config, REFERENCE_FIELDS)
        if identities:  # what the models and data sources named in the config hold
            config = {**config, "references": identities}
        dtype = next((v["dtype"] for v in config.values() if isinstance(v, Mapping)
                      and isinstance(v.get("dtype"), str)), None)  # fmt: skip
        if dtype is not None:  # a stage that runs a model: the device and dtype it really uses
            launched = not (self.single_process or self.in_driver)
            found = numerics(dtype, launched=launched, offload_optimizer=offload_optimizer)
            config = {**config, "numerics": found}
        if strict_env:
            config = {**config, "environment": keyed_versions()}
        return StageKey.of(self.name, config, upstream, self.module)

    def key(self, cfg: PipelineConfig, recipe: str | None, upstream: Mapping[str, str]) -> StageKey:
        """The key of this stage's run on `cfg` (and `recipe`) with these input identities:
        the artifact directory `<store>/<stage>/<digest>` and the orchestrator's cache key."""
        return self.key_of(
            self.config_args(cfg, recipe),
            upstream,
            strict_env=cfg.strict_env,
            offload_optimizer=self.offloads(cfg),
        )

    def check_recipe(self, recipe: str | None) -> None:
        """Raise ValueError for a recipe missing on a recipe stage or given to another."""
        if (self.recipe_section is not None) != (recipe is not None):
            need = (
                f"needs --recipe NAME (a key of its config section {self.recipe_section})"
                if recipe is None
                else f"takes no recipe (got {recipe!r})"
            )
            raise ValueError(f"stage {self.name!r} {need}")

    def check_inputs(self, inputs: Mapping[str, str | Path | None]) -> None:
        """Raise ValueError for a missing or unknown input name or a path that does not exist
        (model inputs may be references)."""
        given = {name for name, value in inputs.items() if value is not None}
        missing = [name for name in self.required_inputs if name not in given]
        if missing:
            flags = ", ".join(f"{name}=PATH" for name in missing)
            raise ValueError(f"stage {self.name!r} needs input(s) {missing}: pass --input {flags}")
        unknown = sorted(given - set(self.input_names))
        if unknown:
            raise ValueError(
                f"stage {self.name!r} takes no input(s) {unknown}; its inputs are "
                f"{list(self.input_names)}"
            )
        for name in given:
            path = inputs[name]
            if name not in self.model_inputs and not Path(str(path)).expanduser().exists():
                raise ValueError(
                    f"input {name}={path} of stage {self.name!r} does not exist: fix the path"
                )

    def call(
        self,
        cfg: PipelineConfig,
        store: str | Path,
        inputs: Mapping[str, str | Path | None],
        recipe: str | None = None,
        *,
        launch: Launch | None = None,
    ) -> ArtifactRef:
        """Run the stage: its entry function with its config arguments and inputs (checked).
        `launch`: run the work in a child process (`rlt_core.owner.own`)."""
        args = self.config_args(cfg, recipe)
        self.check_inputs(inputs)
        given = {name: inputs.get(name) for name in self.input_names}
        return self.run(
            store,
            args,
            given,
            launch=launch,
            strict_env=cfg.strict_env,
            offload_optimizer=self.offloads(cfg),
            **self.options(cfg),
        )

    def offloads(self, cfg: PipelineConfig) -> bool:
        """Whether a run launches with the optimizer offloaded to CPU (a training stage's
        `resources.<stage>.offload_optimizer`): its accelerate config, so its key, differ."""
        return self.trains and self.resources(cfg).offload_optimizer

    def options(self, cfg: PipelineConfig) -> dict[str, Any]:
        """What the profile sets that shapes how the run uses its machine, not its output:
        a training stage's micro-batch (`resources.<stage>.micro_batch`, or its default)."""
        if not self.trains:
            return {}
        return {"max_per_device_batch": max_micro_batch(self.name, self.resources(cfg).micro_batch)}

    def run(
        self,
        store: str | Path,
        config_args: Mapping[str, Any],
        inputs: Mapping[str, str | Path | None],
        *,
        launch: Launch | None = None,
        strict_env: bool = False,
        offload_optimizer: bool = False,
        **options: Any,
    ) -> ArtifactRef:
        """One run of the stage in the local store `store`, owned by `rlt_core.owner`:
        keyed once, here, on exactly the config arguments and inputs the entry function then
        receives (with `options`, which shape nothing: memory bounds, callbacks)."""
        upstream = {name: input_identity(v) for name, v in inputs.items() if v is not None}
        key = self.key_of(
            config_args, upstream, strict_env=strict_env, offload_optimizer=offload_optimizer
        )

        def body(work: Work) -> Any:
            """The entry function on the work area, with exactly what the key holds."""
            return self.entry_function()(work, **config_args, **inputs, **options)

        return own(key, store, body, launch=launch)


# --- what each stage's key holds ------------------------------------------------------------------


def needs_countdown_train(cfg: PipelineConfig) -> bool:
    """Whether a student run of `cfg` trains on countdown rows."""
    sft = any(cfg.student_sft[name].dataset == "countdown" for name in cfg.student_sft_runs)
    rl = any(cfg.student_rl[name].dataset == "countdown" for name in cfg.student_rl_runs)
    return sft or rl


def needs_limr(cfg: PipelineConfig) -> bool:
    """Whether a student RL run of `cfg` trains on LIMR."""
    return any(cfg.student_rl[name].dataset == "limr" for name in cfg.student_rl_runs)


def data_key_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The data stage's sources and what the runs need of it: the data section (but the subset
    seed: the training stages draw their own subsets), the tokenizer think lengths are measured
    in, the evaluation tasks and the optional tables."""
    data = {name: value for name, value in to_dict(cfg.data).items() if name != "subset_seed"}
    return {
        "data": data,
        "teacher_tokenizer": cfg.teacher_sft.model,
        "eval_tasks": list(cfg.evaluate.tasks),
        "limr": needs_limr(cfg),
        "countdown_train": needs_countdown_train(cfg),
    }


def recipe_key_config(cfg: Any, subset_seed: int) -> dict[str, Any]:
    """A training recipe and the seed its row subset is drawn with."""
    return {"recipe": to_dict(cfg), "subset_seed": subset_seed}


def rl_key_config(cfg: Any, reward_cfg: RewardConfig) -> dict[str, Any]:
    """A recipe and the RLT reward it trains or ranks with."""
    return {"recipe": to_dict(cfg), "reward": to_dict(reward_cfg)}


def traces_key_config(cfg: GenerateTracesConfig, reward_cfg: RewardConfig) -> dict[str, Any]:
    """The recipe, and the reward only when it is used (the 32B rule's r_SS, or
    `score_traces`), so a reward ablation does not redo plain generations."""
    uses_reward = cfg.num_candidates > 1 or cfg.score_traces
    return {"recipe": to_dict(cfg), "reward": to_dict(reward_cfg) if uses_reward else None}


def evaluate_key_config(cfg: EvaluateConfig) -> dict[str, Any]:
    """The evaluation recipe and lighteval's version (its grading)."""
    try:
        lighteval = metadata.version("lighteval")
    except metadata.PackageNotFoundError:
        lighteval = None
    return {"evaluate": to_dict(cfg), "lighteval": lighteval}


def teacher_eval_key_config(
    cfg: TeacherEvalConfig, rl_cfg: TeacherRLConfig, reward_cfg: RewardConfig
) -> dict[str, Any]:
    """The held-out evaluation's recipe, the rollout sampling of teacher_rl it copies (not the
    optimiser: it trains nothing) and the reward it scores with."""
    sampling = rl_cfg.rollout_sampling()
    return {"recipe": to_dict(cfg), "rollout": sampling, "reward": to_dict(reward_cfg)}


def _student(section: str) -> Callable[[PipelineConfig, str | None], dict[str, Any]]:
    def reads(cfg: PipelineConfig, recipe: str | None) -> dict[str, Any]:
        """The recipe of `section` and the subset seed its rows are drawn with."""
        return {"cfg": getattr(cfg, section)[recipe], "subset_seed": cfg.data.subset_seed}

    return reads


# --- the stages -----------------------------------------------------------------------------------

DATA: StageSpec[DataFiles] = StageSpec(
    name="data",
    entry="rlt_core.stages.data:write_data",
    inputs=(),
    reads=lambda cfg, recipe: {"cfg": cfg},
    key_config=lambda cfg: data_key_config(cfg),
    outputs=DataFiles(),
    in_driver=True,
)
TEACHER_SFT: StageSpec[TrainedFiles] = StageSpec(
    name="teacher_sft",
    entry="rlt_core.stages.sft:train_teacher_sft",
    inputs=(InputSpec("corpus", "file"),),
    reads=lambda cfg, recipe: {"cfg": cfg.teacher_sft, "subset_seed": cfg.data.subset_seed},
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    trains=True,
)
TEACHER_RL: StageSpec[TeacherRLFiles] = StageSpec(
    name="teacher_rl",
    entry="rlt_core.stages.teacher_rl:train_teacher_rl",
    inputs=(InputSpec("teacher_sft", "artifact", optional=True), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.teacher_rl, "reward_cfg": cfg.reward},
    key_config=rl_key_config,
    outputs=TeacherRLFiles(),
    trains=True,
)
GENERATE_TRACES: StageSpec[TraceFiles] = StageSpec(
    name="generate_traces",
    entry="rlt_core.stages.generate_traces:explain_corpus",
    inputs=(InputSpec("teacher", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces, "reward_cfg": cfg.reward},
    key_config=traces_key_config,
    outputs=TraceFiles(),
    single_process=True,
)
RANK_TRACES: StageSpec[RankFiles] = StageSpec(
    name="rank_traces",
    entry="rlt_core.stages.rank_traces:rank_corpus",
    inputs=(InputSpec("teacher", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces, "reward_cfg": cfg.reward},
    key_config=rl_key_config,
    outputs=RankFiles(),
    single_process=True,
)
STUDENT_SFT: StageSpec[TrainedFiles] = StageSpec(
    name="student_sft",
    entry="rlt_core.stages.sft:train_student_sft",
    inputs=(InputSpec("dataset", "file"),),
    reads=_student("student_sft"),
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    recipe_section="student_sft",
    trains=True,
)
STUDENT_RL: StageSpec[TrainedFiles] = StageSpec(
    name="student_rl",
    entry="rlt_core.stages.student_rl:train_student_rl",
    inputs=(InputSpec("start_model", "model"), InputSpec("dataset", "file")),
    reads=_student("student_rl"),
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    recipe_section="student_rl",
    trains=True,
)
EVALUATE: StageSpec[EvalFiles] = StageSpec(
    name="evaluate",
    entry="rlt_core.stages.evaluate:evaluate_student",
    inputs=(InputSpec("model", "model"), InputSpec("eval_dir", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.evaluate},
    key_config=evaluate_key_config,
    outputs=EvalFiles(),
    single_process=True,
)
RAW_TRACES: StageSpec[TraceFiles] = StageSpec(
    name="raw_traces",
    entry="rlt_core.stages.raw_traces:answer_corpus",
    inputs=(InputSpec("model", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces},
    key_config=lambda cfg: {"recipe": to_dict(cfg)},
    outputs=TraceFiles(),
    single_process=True,
)
TEACHER_EVAL: StageSpec[TeacherEvalFiles] = StageSpec(
    name="teacher_eval",
    entry="rlt_core.stages.teacher_eval:compare_teachers",
    inputs=(
        InputSpec("teacher_sft", "model"),
        InputSpec("teacher_rl", "model"),
        InputSpec("pairs", "file"),
    ),
    reads=lambda cfg, recipe: {
        "cfg": cfg.teacher_eval,
        "rl_cfg": cfg.teacher_rl,
        "reward_cfg": cfg.reward,
    },
    key_config=teacher_eval_key_config,
    outputs=TeacherEvalFiles(),
    single_process=True,
)

SPECS: dict[str, StageSpec[Any]] = {
    spec.name: spec
    for spec in (
        DATA,
        TEACHER_SFT,
        TEACHER_RL,
        GENERATE_TRACES,
        RANK_TRACES,
        STUDENT_SFT,
        STUDENT_RL,
        EVALUATE,
        TEACHER_EVAL,
        RAW_TRACES,
    )
}
STAGES = tuple(SPECS)


def spec_of(stage: str) -> StageSpec[Any]:
    """The declaration of `stage`, with a clear error for an unknown name."""
    if stage not in SPECS:
        raise ValueError(f"unknown stage {stage!r}; the stages are {list(STAGES)}")
    return SPECS[stage]
