"""The data stage: files on disk, counts, caching, unfinished runs redone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.data import DataValidationError, score_countdown_completion
from rlt_core.stages import run_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
BESPOKE = [
    f"data.corpus_source={FIXTURES / 'bespoke_sample.jsonl'}",
    "data.corpus_schema=bespoke",
    "data.validation=lenient",
    "student_sft_runs=[1k]",
    "student_sft.1k.num_train_samples=2",
    "student_rl_runs=[]",
    "evaluate.tasks=[aime24,math500]",
    f"data.eval_sources.aime24={FIXTURES / 'aime24_sample.jsonl'}",
    f"data.eval_sources.math500={FIXTURES / 'math500_sample.jsonl'}",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_path):
    return AutoTokenizer.from_pretrained(smollm2_tokenizer_path)


def test_tiny_profile_writes_countdown_corpus_and_test_set(tmp_path, tokenizer):
    cfg = load_config("tiny")
    out = run_data(cfg, tmp_path, tokenizer=tokenizer)
    corpus = pd.read_parquet(out.path / "corpus.parquet")
    test = pd.read_parquet(out.path / "eval" / "countdown.parquet")
    # tiny: 32 train / 16 test problems (configs/profiles/tiny.yaml), disjoint.
    assert (len(corpus), len(test)) == (32, 16)
    assert not set(corpus.question) & set(test.question)
    assert all(
        score_countdown_completion(r.solution, list(r.numbers), int(r.target))
        for r in corpus.itertuples()
    )
    assert out.report["corpus"] == {"total": 32, "kept": 32, "dropped": {}, "dropped_ids": {}}
    assert out.report["think_tokens"]["count"] == 32
    lengths = pd.read_parquet(out.path / "think_tokens.parquet")  # per row, for Figure 8
    assert lengths["id"].tolist() == corpus["id"].tolist() and lengths["think_tokens"].gt(0).all()
    preview = (out.path / "preview.md").read_text()
    assert "<|begin_of_explanation|>\n\n\n```" in preview and "<|im_start|>system" in preview
    manifest = json.loads((out.path / "manifest.json").read_text())
    assert manifest["stage"] == "data" and manifest["digest"] == out.ref.digest


def test_bespoke_corpus_lenient_counts_drops(tmp_path):
    out = run_data(load_config("tiny", BESPOKE), tmp_path)
    # The fixture has 7 rows: 4 valid, a duplicate, a blank question, a missing end tag.
    assert (out.report["corpus"]["total"], out.report["corpus"]["kept"]) == (7, 4)
    assert sum(out.report["corpus"]["dropped"].values()) == 3
    # No subset files: the training stages draw their rows themselves (data.subset_seed).
    assert not (out.path / "subsets").exists()
    assert out.report["eval"] == {"aime24": 5, "math500": 5}
    assert "think_tokens" not in out.report  # no tokenizer given


def test_strict_mode_fails_with_row_ids_and_leaves_no_finished_artifact(tmp_path):
    cfg = load_config("tiny", [*BESPOKE, "data.validation=strict"])
    with pytest.raises(DataValidationError, match="empty_question"):
        run_data(cfg, tmp_path)
    assert not any(artifacts.is_complete(p) for p in (tmp_path / "data").glob("*"))


def test_finished_run_is_reused_and_unfinished_one_is_redone(tmp_path):
    cfg = load_config("tiny")
    first = run_data(cfg, tmp_path)
    assert run_data(cfg, tmp_path).ref == first.ref
    (first.path / "manifest.json").unlink()  # as if killed before the manifest
    (first.path / "corpus.parquet").write_bytes(b"half-written")
    again = run_data(cfg, tmp_path)
    assert again.ref.digest == first.ref.digest  # rebuilt, same bytes
    other = run_data(load_config("tiny", ["data.countdown_seed=1"]), tmp_path)
    assert other.path != first.path
