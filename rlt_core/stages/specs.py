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
- the flows' references to a stage's files: `TEACHER_RL.outputs.model`, never a literal;
- its Prefect task (`tasks.stages.stage_task`: name, parameters, description, cache policy,
  retries, tags), and how the task runs it (`runs`: in the flow's process, one child process,
  or `accelerate launch`);
- its GPU memory estimate (`fit`, `fit_profile`, `rlt plan`) and the numerics part of its
  key (`dtype`), for a stage that runs models;
- the rules of its `resources.<stage>` entry (`check_config`: the config layer knows no
  stage) and a report's title for the data set it writes (`title`).

README "Adding a stage" lists what a new stage takes: its module, this declaration, its config
section and the profile values that set it.

This module is light (no torch): the launcher, the planner and the cache policy import it
without loading any stage.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from rlt_core.artifacts import ArtifactRef, StageKey, keyed_versions
from rlt_core.batches import max_micro_batch
from rlt_core.config import (
    ConfigError,
    ConfigIssue,
    EvaluateConfig,
    GenerateTracesConfig,
    PipelineConfig,
    RefineTracesConfig,
    RewardConfig,
    StageResources,
    TeacherEvalConfig,
    TeacherRLConfig,
    TokenizerReference,
    key_dict,
)
from rlt_core.devices import numerics, runs_vllm
from rlt_core.fit import Fit, FitPlan, fit_stage
from rlt_core.formats import REFINE_RESPONSE_FORMAT, REFINE_SYSTEM_PROMPT, REFINE_USER_PROMPT
from rlt_core.identity import input_identity, references
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
# How a stage run executes: `driver` in the orchestrating process (no model, seconds);
# `process` as one child process (generation and evaluation: vLLM starts its own workers);
# `launch` under `accelerate launch` (training: ZeRO-3 over the GPUs and nodes it is given).
Runs = Literal["driver", "process", "launch"]
RUNS: tuple[str, ...] = ("driver", "process", "launch")
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
    `summary`: one line on what it does (its Prefect task's description).
    `runs`: how a run executes (`Runs`).
    `dtype(**arguments)`: the dtype its models are loaded in, from its config arguments;
    None for a stage that runs no model. The key holds the device and precision really used
    (`rlt_core.devices.numerics`) for every stage that runs a model.
    `fit`: how the GPU memory planner (`rlt_core.fit`, `rlt plan`) estimates a run: the
    trainer or engine it runs, its model and its recipe; None for a stage that runs no model.
    A `launch` stage has one with kind 'sft' or 'grpo' (its default micro-batch too).
    `default_resources`: what one run is given where the profile's `resources` does not list
    the stage: the paper's node (8 GPUs for a training launch, one for a 7B engine), as every
    config default is the paper's (configs/profiles/paper-7b.yaml states the same).
    `recipe_section`: the config section whose named recipe the stage runs (student stages);
    the profile lists the recipes it runs in `<recipe_section>_runs`.
    `title`: what a report calls the data set this stage writes (a trace source), if any.
    """

    name: str
    summary: str
    entry: str
    inputs: tuple[InputSpec, ...]
    reads: Callable[[PipelineConfig, str | None], dict[str, Any]]
    key_config: Callable[..., dict[str, Any]]
    outputs: O
    runs: Runs
    dtype: Callable[..., str] | None = None
    fit: FitPlan | None = None
    default_resources: StageResources = StageResources()
    recipe_section: str | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        if self.runs not in RUNS:
            raise ValueError(f"stage {self.name!r}: runs={self.runs!r} is not one of {RUNS}")
        if self.runs == "launch" and (self.fit is None or not self.fit.trains):
            raise ValueError(
                f"stage {self.name!r} runs under accelerate launch (runs='launch'), so it "
                "trains: declare fit=FitPlan('sft' or 'grpo', ...) (its memory plan and its "
                "default micro-batch)"
            )

    @property
    def in_driver(self) -> bool:
        """Runs in the orchestrating process (cheap, no model), never as a child."""
        return self.runs == "driver"

    @property
    def single_process(self) -> bool:
        """Runs as one child process, never under `accelerate launch`."""
        return self.runs == "process"

    @property
    def trains(self) -> bool:
        """A training stage: launched under `accelerate launch` (ZeRO-3 over several GPUs,
        `resources.<stage>.nodes` machines); its entry takes `max_per_device_batch`, the memory
        knob `resources.<stage>.micro_batch` (not keyed: the global batch is the recipe's)."""
        return self.runs == "launch"

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
        """What one run of this stage is given: `resources.<stage>` of the profile, else its
        `default_resources`."""
        return cfg.resources.get(self.name, self.default_resources)

    def entry_function(self) -> Callable[..., ArtifactRef]:
        """The entry function itself (its module imported now)."""
        module, function = self.entry.split(":")
        return getattr(importlib.import_module(module), function)

    def config_args(self, cfg: PipelineConfig, recipe: str | None = None) -> dict[str, Any]:
        """The config arguments of the entry function (checks the config against the
        declarations, `check_config`, and the recipe first)."""
        check_config(cfg)
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
        identities = references(config)
        if identities:  # what the models and data sources named in the config hold
            config = {**config, "references": identities}
        if self.dtype is not None:  # it runs models: the device and dtype it really uses
            dtype = self.dtype(**config_args)
            found = numerics(dtype, launched=self.trains, offload_optimizer=offload_optimizer)
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
        a training stage's micro-batch (`resources.<stage>.micro_batch`, or its trainer's
        default)."""
        if not self.trains or self.fit is None:
            return {}
        knob = max_micro_batch(self.fit.kind, self.resources(cfg).micro_batch)
        return {"max_per_device_batch": knob}

    def runs_of(self, cfg: PipelineConfig) -> tuple[str | None, ...]:
        """The recipes a profile runs this stage with (`<recipe_section>_runs`), or (None,)
        for a stage without recipes."""
        if self.recipe_section is None:
            return (None,)
        return tuple(getattr(cfg, f"{self.recipe_section}_runs"))

    def estimate(self, cfg: PipelineConfig, recipe: str | None = None) -> Fit:
        """The GPU memory estimate of one run (`rlt_core.fit.fit_stage` with this stage's
        `fit`)."""
        given = self.resources(cfg)
        if self.fit is not None:
            runs = self.config_args(cfg, recipe)["cfg"]  # the recipe the entry function runs
            return fit_stage(self.name, cfg, runs, plan=self.fit, given=given)
        gpus = given.gpus * given.nodes
        why = "no model (nothing to fit)" if gpus else "CPU run (no GPU to fit)"
        return Fit(self.name, "", gpus, given.gpu_memory_gib, unknown=why)

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
    data = {name: value for name, value in key_dict(cfg.data).items() if name != "subset_seed"}
    return {
        "data": data,
        "teacher_tokenizer": TokenizerReference(cfg.teacher_sft.model),
        "eval_tasks": list(cfg.evaluate.tasks),
        "limr": needs_limr(cfg),
        "countdown_train": needs_countdown_train(cfg),
    }


def recipe_key_config(cfg: Any, subset_seed: int) -> dict[str, Any]:
    """A training recipe and the seed its row subset is drawn with."""
    return {"recipe": key_dict(cfg), "subset_seed": subset_seed}


def rl_key_config(cfg: Any, reward_cfg: RewardConfig) -> dict[str, Any]:
    """A recipe and the RLT reward it trains or ranks with."""
    return {"recipe": key_dict(cfg), "reward": key_dict(reward_cfg)}


def traces_key_config(cfg: GenerateTracesConfig, reward_cfg: RewardConfig) -> dict[str, Any]:
    """The recipe, and the reward only when it is used (the 32B rule's r_SS, or
    `score_traces`), so a reward ablation does not redo plain generations."""
    uses_reward = cfg.num_candidates > 1 or cfg.score_traces
    return {"recipe": key_dict(cfg), "reward": key_dict(reward_cfg) if uses_reward else None}


def evaluate_key_config(cfg: EvaluateConfig) -> dict[str, Any]:
    """The evaluation recipe and lighteval's version (its grading)."""
    try:
        lighteval = metadata.version("lighteval")
    except metadata.PackageNotFoundError:
        lighteval = None
    return {"evaluate": key_dict(cfg), "lighteval": lighteval}


def teacher_eval_key_config(
    cfg: TeacherEvalConfig, rl_cfg: TeacherRLConfig, reward_cfg: RewardConfig
) -> dict[str, Any]:
    """The held-out evaluation's recipe, the rollout sampling of teacher_rl it copies (not the
    optimiser: it trains nothing) and the reward it scores with."""
    sampling = rl_cfg.rollout_sampling()
    return {"recipe": key_dict(cfg), "rollout": sampling, "reward": key_dict(reward_cfg)}


# How refine_traces sends its requests and where: never what comes back.
REFINE_UNKEYED = (
    "base_url",
    "api_key_env",
    "concurrency",
    "max_retries",
    "timeout_s",
    "shard_size",
)


def refine_key_config(cfg: RefineTracesConfig) -> dict[str, Any]:
    """The endpoint's model name, the sampling values and the prompts and response format it
    is asked with; not the endpoint's address, its key or how the requests are sent."""
    recipe = {k: v for k, v in key_dict(cfg).items() if k not in REFINE_UNKEYED}
    prompts = {"system": REFINE_SYSTEM_PROMPT, "user": REFINE_USER_PROMPT,
               "response_format": REFINE_RESPONSE_FORMAT}  # fmt: skip
    return {"recipe": recipe, "prompts": prompts}


def _student(section: str) -> Callable[[PipelineConfig, str | None], dict[str, Any]]:
    def reads(cfg: PipelineConfig, recipe: str | None) -> dict[str, Any]:
        """The recipe of `section` and the subset seed its rows are drawn with."""
        return {"cfg": getattr(cfg, section)[recipe], "subset_seed": cfg.data.subset_seed}

    return reads


# --- the stages -----------------------------------------------------------------------------------


def _recipe_dtype(cfg: Any, **_: Any) -> str:
    """The dtype of the recipe a stage runs (`cfg`, its first config argument)."""
    return str(cfg.dtype)


def _teacher(cfg: PipelineConfig) -> str:
    """The model a teacher-side engine loads (teacher_rl's: an upstream artifact has its
    base model's shape)."""
    return cfg.teacher_rl.model


def _first_student(cfg: PipelineConfig) -> str | None:
    """The model a student-side engine loads: the first student_sft recipe the profile runs
    (else its first recipe); None without one."""
    names = [*cfg.student_sft_runs, *cfg.student_sft]
    return cfg.student_sft[names[0]].model if names else None


DATA: StageSpec[DataFiles] = StageSpec(
    name="data",
    summary="The data stage (corpus, eval sets, countdown, LIMR, think lengths).",
    entry="rlt_core.stages.data:write_data",
    inputs=(),
    reads=lambda cfg, recipe: {"cfg": cfg},
    key_config=lambda cfg: data_key_config(cfg),
    outputs=DataFiles(),
    runs="driver",
    default_resources=StageResources(gpus=0, cpus=4),
    title="corpus (R1 / search)",
)
TEACHER_SFT: StageSpec[TrainedFiles] = StageSpec(
    name="teacher_sft",
    summary="Teacher warm-up in the RLT format (Appendix A.1).",
    entry="rlt_core.stages.sft:train_teacher_sft",
    inputs=(InputSpec("corpus", "file"),),
    reads=lambda cfg, recipe: {"cfg": cfg.teacher_sft, "subset_seed": cfg.data.subset_seed},
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    runs="launch",
    default_resources=StageResources(gpus=8, cpus=32),
    dtype=_recipe_dtype,
    fit=FitPlan("sft"),
)
TEACHER_RL: StageSpec[TeacherRLFiles] = StageSpec(
    name="teacher_rl",
    summary="GRPO with the RLT reward (section 3, Table 3).",
    entry="rlt_core.stages.teacher_rl:train_teacher_rl",
    inputs=(InputSpec("teacher_sft", "artifact", optional=True), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.teacher_rl, "reward_cfg": cfg.reward},
    key_config=rl_key_config,
    outputs=TeacherRLFiles(),
    runs="launch",
    default_resources=StageResources(gpus=8, cpus=32, micro_batch=1),
    dtype=_recipe_dtype,
    fit=FitPlan("grpo", scores_with_reward=True),
)
GENERATE_TRACES: StageSpec[TraceFiles] = StageSpec(
    name="generate_traces",
    summary="The teacher explains every pair; the student dataset (section 4.1, Appendix B.1).",
    entry="rlt_core.stages.generate_traces:explain_corpus",
    inputs=(InputSpec("teacher", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces, "reward_cfg": cfg.reward},
    key_config=traces_key_config,
    outputs=TraceFiles(),
    runs="process",
    default_resources=StageResources(gpus=1, cpus=8),
    dtype=_recipe_dtype,
    fit=FitPlan("engine", _teacher),
    title="RLT",
)
RANK_TRACES: StageSpec[RankFiles] = StageSpec(
    name="rank_traces",
    summary="Completions per pair ranked by the RLT reward into datasets (section 4.5).",
    entry="rlt_core.stages.rank_traces:rank_corpus",
    inputs=(InputSpec("teacher", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces, "reward_cfg": cfg.reward},
    key_config=rl_key_config,
    outputs=RankFiles(),
    runs="process",
    default_resources=StageResources(gpus=1, cpus=8),
    dtype=_recipe_dtype,
    fit=FitPlan("engine", _teacher),
)
STUDENT_SFT: StageSpec[TrainedFiles] = StageSpec(
    name="student_sft",
    summary="Student distillation with a Table 5 recipe.",
    entry="rlt_core.stages.sft:train_student_sft",
    inputs=(InputSpec("dataset", "file"),),
    reads=_student("student_sft"),
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    runs="launch",
    default_resources=StageResources(gpus=8, cpus=32),
    dtype=_recipe_dtype,
    fit=FitPlan("sft"),
    recipe_section="student_sft",
)
STUDENT_RL: StageSpec[TrainedFiles] = StageSpec(
    name="student_rl",
    summary="Traditional RL with correctness rewards, cold start or not (Table 6).",
    entry="rlt_core.stages.student_rl:train_student_rl",
    inputs=(InputSpec("start_model", "model"), InputSpec("dataset", "file")),
    reads=_student("student_rl"),
    key_config=recipe_key_config,
    outputs=TrainedFiles(),
    runs="launch",
    default_resources=StageResources(gpus=8, cpus=32, micro_batch=1),
    dtype=_recipe_dtype,
    fit=FitPlan("grpo"),
    recipe_section="student_rl",
)
EVALUATE: StageSpec[EvalFiles] = StageSpec(
    name="evaluate",
    summary="Lighteval pass@1 of one model (Table 7).",
    entry="rlt_core.stages.evaluate:evaluate_student",
    inputs=(InputSpec("model", "model"), InputSpec("eval_dir", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.evaluate},
    key_config=evaluate_key_config,
    outputs=EvalFiles(),
    runs="process",
    default_resources=StageResources(gpus=1, cpus=8),
    dtype=_recipe_dtype,
    fit=FitPlan("engine", _first_student),
)
RAW_TRACES: StageSpec[TraceFiles] = StageSpec(
    name="raw_traces",
    summary="A traditionally RL-trained model's raw answers as a distillation set (Table 2).",
    entry="rlt_core.stages.raw_traces:answer_corpus",
    inputs=(InputSpec("model", "model"), InputSpec("corpus", "file")),
    reads=lambda cfg, recipe: {"cfg": cfg.generate_traces},
    key_config=lambda cfg: {"recipe": key_dict(cfg)},
    outputs=TraceFiles(),
    runs="process",
    default_resources=StageResources(gpus=1, cpus=8),
    dtype=_recipe_dtype,
    fit=FitPlan("engine", _first_student),
    title="RL cold-start (raw)",
)
REFINE_TRACES: StageSpec[TraceFiles] = StageSpec(
    name="refine_traces",
    summary="A chat model on an OpenAI-compatible endpoint reformats raw answers (Table 2, GPT).",
    entry="rlt_core.stages.refine_traces:refine_corpus",
    inputs=(InputSpec("traces", "file"),),
    reads=lambda cfg, recipe: {"cfg": cfg.refine_traces},
    key_config=lambda cfg: refine_key_config(cfg),
    outputs=TraceFiles(),
    runs="process",
    default_resources=StageResources(gpus=0, cpus=1),
    title="RL cold-start (GPT)",
)
TEACHER_EVAL: StageSpec[TeacherEvalFiles] = StageSpec(
    name="teacher_eval",
    summary="teacher_sft vs teacher_rl on held-out pairs, scored with the RLT reward (project).",
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
    runs="process",
    default_resources=StageResources(gpus=1, cpus=8),
    dtype=_recipe_dtype,
    fit=FitPlan("engine", _teacher),
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
        REFINE_TRACES,
    )
}
STAGES = tuple(SPECS)


def spec_of(stage: str) -> StageSpec[Any]:
    """The declaration of `stage`, with a clear error for an unknown name."""
    if stage not in SPECS:
        raise ValueError(f"unknown stage {stage!r}; the stages are {list(SPECS)}")
    return SPECS[stage]


def fit_profile(cfg: PipelineConfig) -> list[Fit]:
    """The GPU memory estimate of every stage run the profile makes on GPUs: each stage that
    runs a model (`fit`) and is given GPUs, once per recipe it runs (`StageSpec.runs_of`)."""
    return [
        spec.estimate(cfg, recipe)
        for spec in SPECS.values()
        if spec.fit is not None and spec.resources(cfg).gpus > 0
        for recipe in spec.runs_of(cfg)
    ]


def config_issues(cfg: PipelineConfig) -> list[ConfigIssue]:
    """What the declarations refuse in a config (`rlt_core.config` sits below the stages and
    knows none of them): a `resources` entry that names no stage, and what a declared stage
    cannot be given (`_resource_issues`)."""
    issues = []
    for name in cfg.resources:
        if name not in SPECS:
            close = difflib.get_close_matches(name, list(SPECS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            message = f"no stage named {name!r}; the stages are {', '.join(SPECS)}.{hint}"
            issues.append(ConfigIssue(f"resources.{name}", message))
    for spec in SPECS.values():
        issues += _resource_issues(spec, cfg)
    return list(dict.fromkeys(issues))


def _resource_issues(spec: StageSpec[Any], cfg: PipelineConfig) -> list[ConfigIssue]:
    """Several nodes for a stage that does not train; fewer GPUs than one of its config
    sections' vLLM engine spans (`tensor_parallel_size`)."""
    given, issues = spec.resources(cfg), []
    if given.nodes > 1 and not spec.trains:
        training = ", ".join(name for name, other in SPECS.items() if other.trains)
        message = (
            f"{given.nodes} nodes, but only a training stage ({training}) runs as one launch "
            "over several machines; give it 1 node (its Ray runner already places independent "
            "runs side by side)"
        )
        issues.append(ConfigIssue(f"resources.{spec.name}.nodes", message))
    for recipe in spec.runs_of(cfg):
        if spec.recipe_section is not None and recipe not in getattr(cfg, spec.recipe_section):
            continue  # an unknown run name: the config's own check says so
        for section in spec.reads(cfg, recipe).values():
            parallel = getattr(section, "tensor_parallel_size", 1)
            if runs_vllm(section) and 0 < given.gpus < parallel:
                message = (
                    f"{given.gpus} GPU(s), but its vLLM engine spans tensor_parallel_size="
                    f"{parallel}; give it at least that many"
                )
                issues.append(ConfigIssue(f"resources.{spec.name}.gpus", message))
    return issues


def check_config(cfg: PipelineConfig) -> None:
    """Raise ConfigError listing `config_issues`, before any stage runs or is planned."""
    issues = config_issues(cfg)
    if issues:
        raise ConfigError(issues)
