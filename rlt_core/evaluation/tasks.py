"""The evaluation tasks as lighteval task configs (section 4.1, section 4.4, Appendix B.4, Table 7).

Project tasks (aime24, math500, gpqa_diamond, countdown) read the data stage's normalised tables
(`<data artifact>/eval/<task>.parquet`: `id`, `question`, `answer`, and for countdown `numbers`,
`target`) from a local dataset directory holding `test.parquet` (`datasets.load_dataset(<dir>)`
reads it offline). Every row id travels in `Doc.specific`, with the raw question and the gold,
so the per-sample details name the benchmark's own ids (lighteval numbers docs by position).

Prompts are the student format (Figure 6): the system prompt reaches the chat template through
the model config (`system_prompt`: the one the student was trained with,
`rlt_core.models.system_prompt_of`); the user turn is built here with
`rlt_core.formats.student_question`, the one function that gives every math question a student
reads (corpus, LIMR, benchmarks) its instruction, once.
- aime24, math500: `MATH_INSTRUCTION + question`. Bespoke-Stratos-17k, the corpus the students
  are trained on, PREFIXES this instruction to every question ("Return your final response within
  \\boxed{}. What is 7 times 8?"), and so does the SkyThought evaluation code the paper reuses
  (Appendix B.4), so it is put first here too, not appended.
- gpqa_diamond: `GPQA_INSTRUCTION + question`; the question already lists the options A-D.
- countdown: the question as the data stage wrote it; it already ends with the boxed
  instruction (`rlt_core.data.countdown.countdown_question`).

Grading, pass@1 of one completion per question (Appendix B.4):
- math: lighteval's `Metrics.pass_at_k_math` (k=1, n=1, math-verify). The gold goes in as
  `$<answer>$`: math-verify extracts a bare number from "5" but no expression ("x^2+1",
  "(3,4)") unless it sits in math delimiters, and `$5$` still matches `\\boxed{5}` and "05".
- gpqa: `Metrics.gpqa_instruct_pass_at_k` (k=1, n=1): the letter of `\\boxed{B}` or "Answer: B".
- countdown: `countdown_metric`, a SampleLevelMetric over the project's verifier
  (`score_countdown_completion`: the last `\\boxed{}` must use every number once and hit the
  target exactly, section 4.4).
- livecodebench, olympiadbench (Appendix C, Table 8): lighteval's built-in configs
  (`lcb:codegeneration`; the five text-only open-ended `olympiad_bench:*` subsets), deep-copied
  with the run's generation size. They read the Hugging Face Hub, so they cannot run offline
  and are NOT tested here. Note that lighteval 0.13 grades OlympiadBench by exact match of the
  whole answer text, which is not comparable to the paper's numbers.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlt_core.evaluation.grad_mode import keep_grad_mode

with keep_grad_mode():  # lighteval turns gradients off when imported
    from lighteval.metrics.metrics import Metrics
    from lighteval.metrics.metrics_sample import SampleLevelComputation
    from lighteval.metrics.utils.metric_utils import Metric, SampleLevelMetric
    from lighteval.models.model_output import ModelResponse
    from lighteval.tasks.lighteval_task import LightevalTaskConfig
    from lighteval.tasks.requests import Doc, SamplingMethod


from rlt_core.data.benchmarks import GPQA_LETTERS
from rlt_core.data.countdown_verify import score_countdown_completion
from rlt_core.data.sources import require_columns
from rlt_core.formats import GPQA_INSTRUCTION, MATH_INSTRUCTION, student_question

DATASET_FILE = "test.parquet"
NAME_PREFIX = "rlt_"
# Tasks whose lighteval metric runs math-verify, whose timeouts use signal.alarm (main thread).
MATH_VERIFY_TASKS = ("aime24", "math500", "gpqa_diamond")


# --------------------------------------------------------------------------- prompt functions


def _specific(line: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(line["id"]), "question": line["question"], "gold": str(line["answer"])}


def math_prompt(line: Mapping[str, Any], task_name: str | None = None) -> Doc:
    """A math row (AIME24, MATH 500) as a Doc: the boxed instruction, then the question."""
    return Doc(
        task_name=task_name,
        query=student_question(line["question"], MATH_INSTRUCTION),
        choices=[f"${line['answer']}$"],
        gold_index=0,
        specific=_specific(line),
    )


def gpqa_prompt(line: Mapping[str, Any], task_name: str | None = None) -> Doc:
    """A GPQA Diamond row (question with lettered options, gold letter) as a Doc."""
    return Doc(
        task_name=task_name,
        query=student_question(line["question"], GPQA_INSTRUCTION),
        choices=list(GPQA_LETTERS),
        gold_index=GPQA_LETTERS.index(line["answer"]),
        specific=_specific(line),
    )


def countdown_prompt(line: Mapping[str, Any], task_name: str | None = None) -> Doc:
    """A countdown test row as a Doc; its numbers and target travel in `Doc.specific`."""
    numbers, target = [int(n) for n in line["numbers"]], int(line["target"])
    return Doc(
        task_name=task_name,
        query=line["question"],
        choices=[str(target)],
        gold_index=0,
        specific={
            "id": str(line["id"]),
            "question": line["question"],
            "gold": f"{target} from {numbers}",
            "numbers": numbers,
            "target": target,
        },
    )


# --------------------------------------------------------------------------- countdown metric


class CountdownCorrect(SampleLevelComputation):
    """1.0 when the graded text (the thought removed) solves the countdown problem (section 4.4)."""

    def compute(self, doc: Doc, model_response: ModelResponse, **kwargs: Any) -> float:
        """Score the first completion of `model_response` against `doc.specific`'s problem."""
        text = model_response.final_text[0]
        numbers, target = doc.specific["numbers"], doc.specific["target"]
        return float(score_countdown_completion(text, numbers, target))


def countdown_metric() -> SampleLevelMetric:
    """Countdown pass@1: the mean over questions of `CountdownCorrect` (one completion each)."""
    return SampleLevelMetric(
        metric_name="countdown_pass@1",
        sample_level_fn=CountdownCorrect(),
        category=SamplingMethod.GENERATIVE,
        corpus_level_fn=np.mean,
        higher_is_better=True,
    )


def math_metric() -> Metric:
    """Lighteval's math pass@1 (math-verify over expressions and LaTeX), one sample."""
    return Metrics.pass_at_k_math(sample_params={"k": 1, "n": 1})


def gpqa_metric() -> Metric:
    """Lighteval's GPQA instruct pass@1 (letter extraction), one sample."""
    return Metrics.gpqa_instruct_pass_at_k(sample_params={"k": 1, "n": 1})


# --------------------------------------------------------------------------- task table


@dataclass(frozen=True)
class ProjectTask:
    """A task read from the data stage's table: its columns, prompt and metric."""

    columns: tuple[str, ...]
    prompt_function: Callable[[Mapping[str, Any], str | None], Doc]
    metric: Callable[[], Metric]


PROJECT_TASKS: dict[str, ProjectTask] = {
    "aime24": ProjectTask(("id", "question", "answer"), math_prompt, math_metric),
    "math500": ProjectTask(("id", "question", "answer"), math_prompt, math_metric),
    "gpqa_diamond": ProjectTask(("id", "question", "answer"), gpqa_prompt, gpqa_metric),
    "countdown": ProjectTask(
        ("id", "question", "numbers", "target"), countdown_prompt, countdown_metric
    ),
}
# Built-in lighteval tasks: (module, the config name taken from its TASKS_TABLE, or a name
# prefix ending in ':' for every config of a family).
BUILTIN_TASKS: dict[str, tuple[str, str]] = {
    "livecodebench": ("lighteval.tasks.tasks.lcb.main", "lcb:codegeneration"),
    "olympiadbench": ("lighteval.tasks.tasks.olympiade_bench", "olympiad_bench:"),
}


def lighteval_name(task: str) -> str:
    """The lighteval config name of a project task (`rlt_aime24`); unique next to built-ins."""
    return NAME_PREFIX + task


def project_task_config(task: str, dataset_dir: Path, generation_size: int) -> LightevalTaskConfig:
    """The lighteval config of a project task over the local dataset in `dataset_dir`."""
    spec = PROJECT_TASKS[task]
    return LightevalTaskConfig(
        name=lighteval_name(task),
        prompt_function=spec.prompt_function,
        hf_repo=str(dataset_dir),
        hf_subset="default",
        metrics=[spec.metric()],
        hf_avail_splits=["test"],
        evaluation_splits=["test"],
        few_shots_split=None,
        few_shots_select=None,
        generation_size=generation_size,
        stop_sequence=[],  # a chat model stops at its end-of-turn token
        version=0,
    )


def builtin_task_configs(task: str, generation_size: int) -> list[LightevalTaskConfig]:
    """Deep copies of lighteval's own configs of a Hub-read task, with our generation size.

    Only the one built-in module the task needs is imported (the registry narrowing of
    `rlt_core.evaluation.lighteval_run` keeps the others out). LiveCodeBench is `lcb:codegeneration`
    (release v4_v5); OlympiadBench is every `olympiad_bench:*` subset of lighteval 0.13.
    """
    module_name, prefix = BUILTIN_TASKS[task]
    table = importlib.import_module(module_name).TASKS_TABLE
    chosen = [
        c for c in table if c.name == prefix or (prefix[-1] == ":" and c.name.startswith(prefix))
    ]
    configs = [copy.deepcopy(c) for c in sorted(chosen, key=lambda c: c.name)]
    for config in configs:
        config.generation_size = generation_size
    return configs


# --------------------------------------------------------------------------- local tables


def read_eval_table(task: str, eval_dir: str | Path) -> pd.DataFrame:
    """The data stage's table of a project task, with its columns and golds checked.

    Raises FileNotFoundError when `eval_dir/<task>.parquet` is missing and ValueError for
    missing columns, a GPQA gold that is not a letter A-D, or countdown numbers / target that
    are not integers: all before any model is loaded.
    """
    path = Path(eval_dir) / f"{task}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluation task {task!r} needs {path}, which does not exist. The data stage "
            f"writes it when evaluate.tasks lists {task!r}: run the data stage with the same "
            "evaluate.tasks and pass its eval/ directory (or drop the task)."
        )
    table = pd.read_parquet(path)
    require_columns(
        table,
        PROJECT_TASKS[task].columns,
        source=str(path),
        hint="Write the table with the data stage (rlt_core.stages.data), which normalises "
        "every benchmark to id / question / answer (countdown: numbers, target).",
    )
    _check_golds(table, task, path)
    return table.reset_index(drop=True)


def _check_golds(table: pd.DataFrame, task: str, path: Path) -> None:
    if task == "gpqa_diamond":
        bad = table.loc[~table["answer"].isin(list(GPQA_LETTERS)), "id"].tolist()
        fix = "GPQA golds must be one letter A-D (rlt_core.data.load_gpqa_diamond writes them)"
    elif task == "countdown":
        bad = [
            row.id
            for row in table.itertuples(index=False)
            if not _int_like(row.target) or not all(_int_like(n) for n in row.numbers)
        ]
        fix = "countdown rows need integer numbers and target (countdown_rows writes them)"
    else:
        bad = table.loc[table["answer"].astype(str).str.strip() == "", "id"].tolist()
        fix = "every math row needs a gold answer"
    if bad:
        raise ValueError(f"{path}: bad gold in row id(s) {bad[:20]}; {fix}.")


def _int_like(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def user_turns(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The user turn of every row of the project tasks' tables (to measure prompt lengths)."""
    return [
        PROJECT_TASKS[task].prompt_function(row, None).query
        for task, table in tables.items()
        for row in table.to_dict("records")
    ]


def write_task_dataset(table: pd.DataFrame, task: str, directory: Path) -> Path:
    """Write a project task's columns to `directory/test.parquet` (a local lighteval dataset)."""
    directory.mkdir(parents=True, exist_ok=True)
    table[list(PROJECT_TASKS[task].columns)].to_parquet(directory / DATASET_FILE, index=False)
    return directory


def task_configs(
    task_names: Sequence[str],
    tables: Mapping[str, pd.DataFrame],
    datasets_dir: Path,
    generation_size: int,
) -> tuple[list[LightevalTaskConfig], dict[str, str]]:
    """The lighteval configs of a run and the owner (project task) of each config name.

    Project tasks get their table written under `datasets_dir/<task>/`; built-in tasks
    (livecodebench, olympiadbench) get copies of lighteval's own configs.
    """
    configs, owners = [], {}
    for task in task_names:
        if task in PROJECT_TASKS:
            directory = write_task_dataset(tables[task], task, datasets_dir / task)
            chosen = [project_task_config(task, directory, generation_size)]
        else:
            chosen = builtin_task_configs(task, generation_size)
        configs += chosen
        owners.update({config.name: task for config in chosen})
    return configs, owners
