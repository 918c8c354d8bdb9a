"""The whole pipeline's config: one frozen section per stage plus the runs a profile makes.

Which students a profile trains: `student_sft` and `student_rl` hold named recipes (the
columns of Tables 5 and 6); `student_sft_runs` and `student_rl_runs` list the names that run.
A student RL recipe with `cold_start: <sft recipe>` starts from that SFT student (Table 2),
so the recipe it names must be in `student_sft_runs`.
"""

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from rlt_core.config.checks import finalize
from rlt_core.config.data import DataConfig
from rlt_core.config.errors import ConfigIssue
from rlt_core.config.grpo import StudentRLConfig, TeacherRLConfig
from rlt_core.config.resources import StageResources
from rlt_core.config.reward import RewardConfig
from rlt_core.config.sampling import (
    EvaluateConfig,
    GenerateTracesConfig,
    RefineTracesConfig,
    TeacherEvalConfig,
)
from rlt_core.config.sft import StudentSFTConfig, TeacherSFTConfig

# Table 5: columns "Full fine-tuning" (16,710 samples), "1K subset", "Countdown".
PAPER_STUDENT_SFT: Mapping[str, StudentSFTConfig] = MappingProxyType(
    {
        "full": StudentSFTConfig(),
        "1k": StudentSFTConfig(
            num_train_samples=1000,
            num_epochs=5.0,
            batch_size=16,
            weight_decay=1e-4,
            adam_beta2=0.95,
            warmup_ratio=0.05,
        ),
        "countdown": StudentSFTConfig(num_train_samples=16000, dataset="countdown"),
    }
)

# Table 6: columns "LIMR data traditional RL" and "Countdown data traditional RL".
PAPER_STUDENT_RL: Mapping[str, StudentRLConfig] = MappingProxyType(
    {
        "limr": StudentRLConfig(cold_start="full"),
        "countdown": StudentRLConfig(
            max_steps=250, batch_size=256, num_train_samples=16000, dataset="countdown"
        ),
    }
)


@dataclass(frozen=True)
class ExperimentsConfig:
    """The student recipe each experiment flow trains (a student_sft recipe name)."""

    ablation_student: str = field(
        default="full",
        metadata={
            "help": "flows.ablation's students (Table 9: every row is 'Data size 17K', the "
            "Table 5 'full' recipe)"
        },
    )
    reward_rank_student: str = field(
        default="full",
        metadata={
            "help": "flows.reward_rank's students (section 4.5 ranks every pair of the 17K "
            "data set: the 'full' recipe)"
        },
    )
    transfer_student: str = field(
        default="full",
        metadata={
            "help": "flows.countdown_transfer's students of the main corpus (Figure 4 left: "
            "the RLT-7B and Bespoke-7B students of section 4.2, 17K rows, evaluated on "
            "countdown untrained on it; the Bespoke one is also the cold start of countdown "
            "RL): the 'full' recipe"
        },
    )


def _sub(factory: type) -> Any:
    """A section field whose default is `factory()` and whose help is its docstring's line."""
    return field(default_factory=factory, metadata={"help": factory.__doc__.splitlines()[0]})


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage of the RLT pipeline, resolved from a profile (configs/profiles/*.yaml)."""

    profile: str = field(default="paper-7b", metadata={"help": "name of the profile"})
    data: DataConfig = _sub(DataConfig)
    reward: RewardConfig = _sub(RewardConfig)
    teacher_sft: TeacherSFTConfig = _sub(TeacherSFTConfig)
    teacher_rl: TeacherRLConfig = _sub(TeacherRLConfig)
    generate_traces: GenerateTracesConfig = _sub(GenerateTracesConfig)
    student_sft: Mapping[str, StudentSFTConfig] = field(
        default_factory=lambda: PAPER_STUDENT_SFT,
        metadata={"help": "student distillation recipes by name (Table 5)"},
    )
    student_rl: Mapping[str, StudentRLConfig] = field(
        default_factory=lambda: PAPER_STUDENT_RL,
        metadata={"help": "student RL recipes by name (Table 6)"},
    )
    evaluate: EvaluateConfig = _sub(EvaluateConfig)
    teacher_eval: TeacherEvalConfig = _sub(TeacherEvalConfig)
    refine_traces: RefineTracesConfig = _sub(RefineTracesConfig)
    student_sft_runs: tuple[str, ...] = field(
        default=("1k", "full"),
        metadata={"help": "student_sft recipes this profile trains (Table 1: 1K and 17K)"},
    )
    student_rl_runs: tuple[str, ...] = field(
        default=("limr",),
        metadata={"help": "student_rl recipes this profile trains (Table 2)"},
    )
    experiments: ExperimentsConfig = _sub(ExperimentsConfig)
    resources: Mapping[str, StageResources] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata={
            "help": "GPUs and CPU cores of one run of each stage, by stage name; a stage not "
            "listed gets its declaration's default_resources, the paper's node "
            "(rlt_core.stages.specs; checked there too: check_config)"
        },
    )
    strict_env: bool = field(
        default=False,
        metadata={
            "help": "key every stage on the versions of the packages that shape it (torch, "
            "transformers, trl, vllm, ...): an upgrade reruns everything. Off by default: a "
            "patch release should not throw away days of GPU time; `rlt plan` shows a cached "
            "stage made under other versions either way (flows: --strict-env)"
        },
    )

    def held_out_task(self) -> str | None:
        """The evaluation task whose pairs teacher_eval explains: `teacher_eval.held_out`, else
        the first of `HELD_OUT_TABLES` (countdown, math500, aime24) that `evaluate.tasks`
        lists; None when it lists none."""
        if self.teacher_eval.held_out is not None:
            return self.teacher_eval.held_out
        return next((task for task in HELD_OUT_TABLES if task in self.evaluate.tasks), None)

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = _run_issues("student_sft_runs", self.student_sft_runs, self.student_sft)
        issues += _run_issues("student_rl_runs", self.student_rl_runs, self.student_rl)
        for name in self.student_rl_runs:
            cold_start = self.student_rl[name].cold_start if name in self.student_rl else None
            if cold_start is not None and cold_start not in self.student_sft_runs:
                message = (
                    f"{cold_start!r} is not in student_sft_runs {list(self.student_sft_runs)}: "
                    "the RL run starts from that SFT student; add it to student_sft_runs or "
                    "set cold_start: null"
                )
                issues.append(ConfigIssue(f"student_rl.{name}.cold_start", message))
        return issues + self._cross_stage_issues()

    def _cross_stage_issues(self) -> list[ConfigIssue]:
        issues = []
        if self.reward.temperature != self.teacher_rl.temperature:
            message = (
                f"{self.reward.temperature!r} differs from teacher_rl.temperature "
                f"{self.teacher_rl.temperature!r}: the reward scores log-probs at the sampling "
                "temperature (Table 3); set both to the same value"
            )
            issues.append(ConfigIssue("reward.temperature", message))
        for task in self.evaluate.tasks:
            if task != "countdown" and task not in self.data.eval_sources:
                message = f"{task!r} has no data.eval_sources.{task}; add its hub id or path"
                issues.append(ConfigIssue("evaluate.tasks", message))
        for experiment in fields(self.experiments):
            name = experiment.name
            recipe = getattr(self.experiments, name)
            if recipe not in self.student_sft:
                close = difflib.get_close_matches(recipe, list(self.student_sft), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                message = (
                    f"{recipe!r} is not a student_sft recipe ({', '.join(self.student_sft)}): "
                    f"the experiment's students train with it.{hint}"
                )
                issues.append(ConfigIssue(f"experiments.{name}", message))
        held_out = self.teacher_eval.held_out
        if held_out is not None and (
            held_out not in self.evaluate.tasks or held_out not in HELD_OUT_TABLES
        ):
            message = (
                f"{held_out!r} is not a table of question-solution pairs the data stage "
                f"writes: teacher_eval reads eval/<task>.parquet of a task in evaluate.tasks "
                f"{list(self.evaluate.tasks)} with solutions ({', '.join(HELD_OUT_TABLES)}); "
                "set teacher_eval.held_out to one of those, or null (the first one there)"
            )
            issues.append(ConfigIssue("teacher_eval.held_out", message))
        return issues


HELD_OUT_TABLES = ("countdown", "math500", "aime24")  # eval tables with a solution column


def _run_issues(
    key: str, runs: tuple[str, ...], recipes: Mapping[str, object]
) -> list[ConfigIssue]:
    issues = []
    for index, name in enumerate(runs):
        if name not in recipes:
            close = difflib.get_close_matches(name, list(recipes), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            message = f"no recipe named {name!r}; known: {', '.join(recipes)}.{hint}"
            issues.append(ConfigIssue(f"{key}[{index}]", message))
    if len(set(runs)) != len(runs):
        issues.append(ConfigIssue(key, f"{list(runs)} repeats a name; list each recipe once."))
    return issues
