"""Running lighteval 0.13 offline on the project's tasks (section 4.1, Appendix B.4, Table 7).

`evaluate_model` generates with a student and grades through lighteval's Pipeline;
`score_predictions` grades saved generations through the same Pipeline (a `ReplayModel`
answers each question with its saved text), which is how the tests check the grading and how
a user rescores the `details/<task>.parquet` of an evaluate artifact.

Registry narrowing (the one override of lighteval's task loading). `Registry.__init__` imports
every built-in task module, and `lighteval.tasks.tasks.tiny_benchmarks` downloads a file at
import, so offline the registry (and the plain `lighteval` CLI) fails. `Registry.__init__`
calls `Registry.load_all_task_configs` by the base class's own name, so overriding that static
method in a subclass changes nothing: `ProjectRegistry` overrides `__init__` (five assignments)
to take its configs only from the custom-tasks module, an in-memory module holding the project
tasks plus deep copies of the built-in configs a run asks for (`tasks.builtin_task_configs`
imports just that one module). `Pipeline` builds its registry as `Registry(...)` by the name
bound in `lighteval.pipeline`, so `narrowed_registry()` rebinds that single name while the
Pipeline is constructed; the rebinding is process-global, so it is held under a lock.

Reasoning tags: the Pipeline strips `<|begin_of_thought|> ... <|end_of_thought|>` (lighteval's
`remove_reasoning_tags` / `reasoning_tags`) before grading, so the metric sees the solution
section, not the thought. A thought that is never closed (a completion cut by the length
limit) is left in place by lighteval, and graded as it is.

Threads: lighteval's math and GPQA metrics run math-verify, which bounds parsing with
`signal.alarm`; off the main thread every such metric call raises "signal only works in main
thread" (tested), so lighteval stops with that error rather than grading wrong.
`require_grading_thread` refuses those tasks off the main thread before any model is loaded;
countdown is graded by the project's verifier and runs in any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from rlt_core.evaluation.grad_mode import keep_grad_mode

with keep_grad_mode():  # lighteval turns gradients off when imported
    import lighteval.pipeline as lighteval_pipeline
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.models.abstract_model import LightevalModel, ModelConfig
    from lighteval.models.model_output import ModelResponse
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters
    from lighteval.tasks.lighteval_task import LightevalTaskConfig
    from lighteval.tasks.registry import Registry
    from lighteval.tasks.requests import Doc
    from lighteval.utils.cache_management import SampleCache

from transformers import AutoTokenizer

from rlt_core import formats
from rlt_core.config import EvaluateConfig
from rlt_core.data import read_table
from rlt_core.data.sources import require_columns
from rlt_core.evaluation import engines, tasks
from rlt_core.models import system_prompt_of

REASONING_TAGS = [(formats.BEGIN_THOUGHT, formats.END_THOUGHT)]
_REGISTRY_LOCK = threading.Lock()


# --------------------------------------------------------------------------- registry narrowing


class ProjectRegistry(Registry):
    """A lighteval Registry over the custom-tasks module only (no built-in module imported)."""

    def __init__(
        self, tasks: str, load_multilingual: bool = False, custom_tasks: ModuleType | None = None
    ) -> None:
        self.tasks_list = self._get_full_task_list_from_input_string(tasks)
        self._load_multilingual = load_multilingual
        self._custom_tasks = custom_tasks
        self._task_registry = self._extract_configs(custom_tasks) if custom_tasks else {}
        self.task_to_configs = self._update_task_configs()


@contextmanager
def narrowed_registry() -> Iterator[None]:
    """Make `lighteval.pipeline` build a `ProjectRegistry` inside the block (module docstring)."""
    with _REGISTRY_LOCK:
        original = lighteval_pipeline.Registry
        lighteval_pipeline.Registry = ProjectRegistry
        try:
            yield
        finally:
            lighteval_pipeline.Registry = original


def tasks_module(configs: Sequence[LightevalTaskConfig]) -> ModuleType:
    """An in-memory custom-tasks module: lighteval reads its `TASKS_TABLE`."""
    module = ModuleType("rlt_lighteval_tasks")
    module.TASKS_TABLE = list(configs)
    return module


def require_grading_thread(task_names: Sequence[str]) -> None:
    """Refuse math-verify tasks off the main thread (module docstring), before any model loads."""
    math = [t for t in task_names if t in tasks.MATH_VERIFY_TASKS]
    if math and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"evaluation of {math} grades with math-verify, whose timeouts use signal.alarm and "
            "only work in the main thread; lighteval would stop at the first answer. Run the "
            "evaluation from the main thread of its own process (e.g. a subprocess of the flow)."
        )


# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class LightevalOutcome:
    """Scores per task (pass@1 in [0, 1]), per-sample details and lighteval's own aggregates."""

    scores: dict[str, float]
    details: dict[str, pd.DataFrame]
    lighteval: dict[str, dict[str, float]]
    generation: dict[str, Any] = field(default_factory=dict)


def _detail_row(detail: Any) -> dict[str, Any]:
    """One sample: id, question, gold, the full prediction, the graded text, correct (0/1)."""
    doc, response = detail.doc, detail.model_response
    value = float(next(iter(detail.metric.values())))  # one metric per task config
    spec = doc.specific or {}
    row = {
        "id": spec.get("id", doc.id),
        "question": spec.get("question", doc.query),
        "gold": spec.get("gold", " | ".join(map(str, doc.get_golds()))),
        "prediction": response.text[0],
        "graded": response.final_text[0],
        "correct": int(value >= 1.0),
        "score": value,
    }
    row.update({k: spec[k] for k in ("numbers", "target") if k in spec})
    return row


def collect_outcome(
    results: Mapping[str, Any], details: Mapping[str, list[Any]], owners: Mapping[str, str]
) -> LightevalOutcome:
    """Group lighteval's details and aggregates by project task (`owners`: config -> task).

    A task's score is the mean per-sample score over all its lighteval configs (one for every
    task but OlympiadBench, whose subsets are pooled).
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    pooled = {task for task in owners.values() if list(owners.values()).count(task) > 1}
    for full_name, samples in details.items():
        config = full_name.rsplit("|", 1)[0]
        prefix = f"{config}/" if owners[config] in pooled else ""  # ids unique across subsets
        for sample in samples:
            row = _detail_row(sample)
            row["id"] = f"{prefix}{row['id']}"
            rows.setdefault(owners[config], []).append(row)
    frames = {t: pd.DataFrame(r).sort_values("id", ignore_index=True) for t, r in rows.items()}
    scores = {task: float(frames[task]["score"].mean()) for task in frames}
    aggregates = {
        name.rsplit(":", 1)[0]: {k: float(v) for k, v in values.items()}
        for name, values in results.get("results", {}).items()
        if name != "all"
    }
    return LightevalOutcome(scores, frames, aggregates)


# --------------------------------------------------------------------------- the pipeline


def run_pipeline(
    configs: Sequence[LightevalTaskConfig],
    model: Any,
    *,
    work_dir: Path,
    model_config: ModelConfig | None = None,
    max_samples: int | None = None,
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Evaluate `model` on `configs` with lighteval's Pipeline; return its results and details.

    `model` is a LightevalModel, or a transformers model together with its `model_config`.
    `max_samples` keeps that many questions per task (lighteval's seeded shuffle picks them).
    """
    params = PipelineParameters(
        launcher_type=ParallelismManager.NONE,  # one process; vLLM runs its own workers
        custom_tasks_directory=tasks_module(configs),
        max_samples=max_samples,
        remove_reasoning_tags=True,
        reasoning_tags=REASONING_TAGS,
    )
    tracker = EvaluationTracker(output_dir=str(work_dir / "lighteval"), save_details=False)
    spec = ",".join(f"{config.name}|0" for config in configs)
    with narrowed_registry():
        pipeline = Pipeline(
            tasks=spec,
            pipeline_parameters=params,
            evaluation_tracker=tracker,
            model=model,
            model_config=model_config,
        )
    pipeline.evaluate()
    return pipeline.get_results(), pipeline.get_details()


def evaluate_model(
    cfg: EvaluateConfig,
    model_path: str,
    tables: Mapping[str, pd.DataFrame],
    *,
    label: str,
    work_dir: Path,
) -> LightevalOutcome:
    """Generate one completion per question with the student at `model_path` and grade it.

    `tables` holds the project tasks' rows (`tasks.read_eval_table`); `label` is lighteval's
    model name (`engines.student_label`); lighteval's datasets and prediction cache go under
    `work_dir`. The backend is `cfg.backend` (checked by the caller, `engines.check_backend`).
    """
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    system = system_prompt_of(model_path)  # the prompt the student was trained with, if known
    budget = engines.plan_budget(
        cfg.max_new_tokens,
        engines.longest_prompt(tokenizer, tasks.user_turns(tables), system),
        engines.model_context(model_path),
        builtin=any(t in tasks.BUILTIN_TASKS for t in cfg.tasks),
    )
    size = budget.max_new_tokens
    configs, owners = tasks.task_configs(cfg.tasks, tables, work_dir / "datasets", size)
    engine = engines.EngineRun(label, work_dir / "lighteval_cache", budget, system)
    if cfg.backend == "vllm":
        model, model_config = engines.vllm_model(cfg, model_path, engine), None
    else:
        model, model_config = engines.transformers_model(cfg, model_path, engine)
    with torch.random.fork_rng(devices=[]), keep_grad_mode():  # lighteval turns grads off
        torch.manual_seed(cfg.seed)  # the transformers engine samples from torch's generator
        results, details = run_pipeline(
            configs,
            model,
            model_config=model_config,
            work_dir=work_dir,
            max_samples=cfg.max_samples,
        )
    outcome = collect_outcome(results, details, owners)
    outcome.generation.update(budget.to_dict())
    outcome.generation["system_prompt"] = "model" if system else "default"
    return outcome


# --------------------------------------------------------------------------- rescoring


class ReplayModel(LightevalModel):
    """A lighteval model that answers each question with a saved prediction.

    `predictions` maps a lighteval task name (`rlt_countdown`) to {row id: completion text};
    the row id is the one in `Doc.specific` (the benchmark's own id).
    """

    def __init__(self, predictions: Mapping[str, Mapping[str, str]], cache_dir: Path) -> None:
        self.config = ModelConfig(model_name="replay", cache_dir=str(cache_dir))
        self._predictions = predictions
        self._cache = SampleCache(self.config)  # the Pipeline hands it the registry; unused

    @property
    def tokenizer(self) -> None:
        """No tokenizer: nothing is tokenised."""
        return None

    @property
    def add_special_tokens(self) -> bool:
        """Unused (nothing is tokenised)."""
        return False

    @property
    def max_length(self) -> int:
        """Unused (nothing is generated)."""
        return 0

    def greedy_until(self, docs: list[Doc]) -> list[ModelResponse]:
        """The saved completion of every doc, by task and row id."""
        task_of = {doc.task_name: doc.task_name.rsplit("|", 1)[0] for doc in docs}
        return [
            ModelResponse(text=[self._predictions[task_of[d.task_name]][d.specific["id"]]])
            for d in docs
        ]

    def loglikelihood(self, docs: list[Doc]) -> list[ModelResponse]:
        """Not available: a replay holds generations only."""
        raise NotImplementedError("ReplayModel replays generations; no log-likelihood tasks")

    def loglikelihood_rolling(self, docs: list[Doc]) -> list[ModelResponse]:
        """Not available: a replay holds generations only."""
        raise NotImplementedError("ReplayModel replays generations; no perplexity tasks")


def score_predictions(
    predictions: Mapping[str, pd.DataFrame | str | Path], eval_dir: str | Path, work_dir: Path
) -> LightevalOutcome:
    """Grade saved completions of project tasks through lighteval (no model is loaded).

    `predictions` maps a task (aime24, math500, gpqa_diamond, countdown) to a table with `id`
    and `prediction` (e.g. an evaluate artifact's `details/<task>.parquet`); only the rows with
    a prediction are graded. Raises ValueError for a built-in (Hub-read) task, missing columns
    or ids the evaluation set does not have.
    """
    require_grading_thread(list(predictions))
    tables, answers = {}, {}
    for task, source in predictions.items():
        if task not in tasks.PROJECT_TASKS:
            raise ValueError(
                f"cannot rescore {task!r} offline: only {list(tasks.PROJECT_TASKS)} are read "
                "from local files; built-in lighteval tasks read the Hub."
            )
        frame = source if isinstance(source, pd.DataFrame) else read_table(str(source))
        require_columns(frame, ("id", "prediction"), source=str(task), hint="one row per answer")
        table = tasks.read_eval_table(task, eval_dir)
        unknown = sorted(set(frame["id"].astype(str)) - set(table["id"].astype(str)))
        if unknown:
            raise ValueError(f"{task}: prediction ids {unknown[:20]} are not in the eval set")
        tables[task] = table[table["id"].astype(str).isin(set(frame["id"].astype(str)))]
        answers[tasks.lighteval_name(task)] = dict(
            zip(frame["id"].astype(str), frame["prediction"], strict=True)
        )
    configs, owners = tasks.task_configs(list(tables), tables, work_dir / "datasets", 1)
    model = ReplayModel(answers, work_dir / "lighteval_cache")
    with keep_grad_mode():
        results, details = run_pipeline(configs, model, work_dir=work_dir)
    return collect_outcome(results, details, owners)
