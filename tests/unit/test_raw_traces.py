"""raw_traces (Table 2's "RL cold-start (raw) + RL"): a model's raw answers to the corpus
questions as a distillation set, on a scripted tiny model whose answer is known."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from rlt_core import artifacts, formats, sft_data
from rlt_core.config import load_config
from rlt_core.stages.raw_traces import run_raw_traces
from rlt_core.stages.specs import RAW_TRACES
from tests.fixtures_models import scripted_rows, train_scripted_model

FILES = RAW_TRACES.outputs
RECIPE = dataclasses.replace(
    load_config("tiny").generate_traces, backend="transformers", max_new_tokens=64,
    shard_size=3, batch_size=4,
)  # fmt: skip
# The corpus: 4 of the scripted rows, and a short answer (the scripted student's training time
# grows with both).
ROWS = scripted_rows().head(4)
THOUGHT, SOLUTION = "Add.", "5."
ANSWER = formats.student_assistant_text(THOUGHT, SOLUTION)


@pytest.fixture(scope="module")
def scripted_student(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path):
    """A tiny Llama that answers the student prompt of every `ROWS` question with `ANSWER` (a
    student-format thought and solution)."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    prompts = [formats.render_student_prompt(tokenizer, q) for q in ROWS["question"]]
    out = tmp_path_factory.mktemp("scripted-student")
    return train_scripted_model(out, smollm2_tokenizer_path, prompts, ANSWER)


def test_raw_answers_become_student_rows_distilled_verbatim(
    scripted_student: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.parquet"
    ROWS.to_parquet(corpus, index=False)
    ref = run_raw_traces(RECIPE, scripted_student, corpus, tmp_path / "store")
    out = Path(ref.uri)
    assert out.parent == tmp_path / "store" / "raw_traces" and artifacts.is_complete(out)
    traces = pd.read_parquet(out / FILES.traces)
    assert len(traces) == 4 and len(list((out / FILES.shards).iterdir())) == 2  # 3 + 1
    assert traces["response"].tolist() == [ANSWER] * 4  # the raw answer, nothing changed
    assert traces["format_ok"].all() and not traces["truncated"].any()
    assert traces["thought"].tolist() == [THOUGHT] * 4
    assert traces["solution"].tolist() == [SOLUTION] * 4  # the model's own answer
    assert traces["reference_solution"].tolist() == ROWS["solution"].tolist()
    stats = json.loads((out / FILES.stats).read_text())
    assert stats["rows"] == stats["kept"] == stats["in_student_format"] == 4
    assert stats["truncated"] == 0 and stats["dropped"] == {}
    # student_sft trains on the answer exactly as the model wrote it
    tokenizer = AutoTokenizer.from_pretrained(scripted_student)
    rows, _ = sft_data.read_sft_rows(out / FILES.traces, num_rows=None, seed=0)
    _, completions = sft_data.student_pairs(tokenizer, rows)
    assert completions == [ANSWER + sft_data.end_of_turn(tokenizer)] * 4
    # a finished run is returned as it is
    assert run_raw_traces(RECIPE, scripted_student, corpus, tmp_path / "store") == ref


def test_cut_answers_are_kept_raw_and_counted(scripted_student: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.parquet"
    ROWS.head(3).to_parquet(corpus, index=False)
    cut = dataclasses.replace(RECIPE, max_new_tokens=4)
    out = Path(run_raw_traces(cut, scripted_student, corpus, tmp_path / "store").uri)
    traces = pd.read_parquet(out / FILES.traces)
    assert traces["truncated"].all() and not traces["format_ok"].any()
    assert all(ANSWER.startswith(response) for response in traces["response"])
    stats = json.loads((out / FILES.stats).read_text())
    assert stats["truncated"] == 3 and stats["in_student_format"] == 0


def test_bad_corpus_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.parquet"
    pd.DataFrame({"id": ["a"], "question": ["q"]}).to_parquet(corpus)
    with pytest.raises(ValueError, match="solution"):
        run_raw_traces(RECIPE, tmp_path / "no-model", corpus, tmp_path / "store")
