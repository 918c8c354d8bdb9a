"""The scorer, the TRL reward object and `score_dataset` on tiny random models (issue 4).

Tiny 2-layer Llamas share SmolLM2's real tokenizer, so spans and formats are the real ones;
their outputs are noise, so the tests compare against an independent unchunked computation
rather than against quality expectations (those are in tests/smoke/test_reward_smoke.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from rlt_core.config import RewardConfig
from rlt_core.models import build_tiny_model, make_tiny_model
from rlt_core.reward.score import SCORE_COLUMNS, parts_dir, score_dataset
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import (
    END_EXPLANATION,
    EXPLANATION_CLOSE,
    AlignedSample,
    align_completion,
    align_text,
    encode,
)
from rlt_core.reward.terms import compute_reward
from rlt_core.reward.trl import RLTReward

CFG = RewardConfig(student_model="offline:smollm2-135m-instruct", logprob_chunk_size=7)
ROWS = [
    ("What is 2 + 3?", "2 + 3 = 5.", "Two plus three is five."),
    ("What is 6 * 7?", "6 * 7 = 42. The answer is 42.", "Six sevens: 7, 14, 21, 28, 35, 42."),
    ("Name a prime.", "7 is prime.", ""),
]


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))


@pytest.fixture(scope="module")
def teacher(tok):
    return build_tiny_model(tok, seed=0)


@pytest.fixture(scope="module")
def student(tok):
    return build_tiny_model(tok, seed=1)


@pytest.fixture(scope="module")
def samples(tok) -> list[AlignedSample]:
    return [align_text(tok, str(i), q, s, e) for i, (q, s, e) in enumerate(ROWS)]


def _full_logprobs(model, ids: list[int], temperature: float) -> torch.Tensor:
    """Unchunked reference: full (T, V) log-softmax of one unpadded sequence, (T - 1, V)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float() / temperature
    return torch.log_softmax(logits, dim=-1)[:-1]


def _picked(logp: torch.Tensor, ids: list[int], span: slice) -> torch.Tensor:
    # Token i is predicted by row i - 1 of the (T - 1, V) log-probs.
    rows = torch.arange(span.start - 1, span.stop - 1)
    return logp[rows, torch.tensor(ids[span], dtype=torch.long)]


def _pad(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(v) for v in values))
    out, mask = torch.zeros(len(values), width), torch.zeros(len(values), width, dtype=torch.bool)
    for row, v in enumerate(values):
        out[row, : len(v)], mask[row, : len(v)] = v, True
    return out, mask


def _reference(teacher, student, samples, cfg: RewardConfig):
    """compute_reward on log-probs taken one sample at a time from plain full logits."""
    parts: dict[str, list[torch.Tensor]] = {"t": [], "s": [], "sol": [], "kl": []}
    for sample in samples:
        t_logp = _full_logprobs(teacher, sample.teacher_ids, cfg.temperature)
        s_logp = _full_logprobs(student, sample.student_ids, cfg.temperature)
        parts["t"].append(_picked(t_logp, sample.teacher_ids, sample.teacher_think))
        parts["s"].append(_picked(s_logp, sample.student_ids, sample.student_think))
        parts["sol"].append(_picked(s_logp, sample.student_ids, sample.student_solution))
        t_rows = t_logp[sample.teacher_think.start - 1 : sample.teacher_think.stop - 1]
        s_rows = s_logp[sample.student_think.start - 1 : sample.student_think.stop - 1]
        parts["kl"].append((t_rows.exp() * (t_rows - s_rows)).sum(-1))
    (t, think_mask), (s, _), (sol, sol_mask), (kl, _) = (_pad(parts[k]) for k in parts)
    return compute_reward(
        student_solution_logprobs=sol,
        solution_mask=sol_mask,
        teacher_think_logprobs=t,
        student_think_logprobs=s,
        think_mask=think_mask,
        format_ok=torch.tensor([x.format_ok for x in samples]),
        estimator=cfg.kl_estimator,
        full_kl=kl,
        lam=cfg.lam,
        alpha=cfg.alpha,
        format_penalty=cfg.format_penalty,
    )


@pytest.mark.parametrize("estimator", ["sampled", "k3", "full"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_scorer_matches_unchunked_reference(teacher, student, tok, samples, estimator, batch_size):
    cfg = replace(CFG, kl_estimator=estimator)
    got = RLTScorer(teacher, student, tok, cfg, batch_size=batch_size).score(samples)
    want = _reference(teacher, student, samples, cfg)
    for name in ("r_ss", "r_kl", "reward"):
        assert torch.isfinite(getattr(got, name)).all()
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-5, rtol=1e-5)
    assert got.think_len.tolist() == [len(s.think_ids) for s in samples]
    # The third explanation is empty: avg and max are each +1 by the reference rule, so
    # r_KL = 1 + alpha * 1, and it is counted.
    assert got.r_kl[2].item() == pytest.approx(1.0 + CFG.alpha) and got.n_empty_think == 1


def test_lambda_zero_reduces_the_reward_to_r_ss(teacher, student, tok, samples) -> None:
    got = RLTScorer(teacher, student, tok, replace(CFG, lam=0.0)).score(samples)
    torch.testing.assert_close(got.reward, got.r_ss)


def test_missing_closing_tag_gets_the_penalty(teacher, student, tok) -> None:
    question, solution, explanation = ROWS[0]
    closed = encode(tok, explanation + EXPLANATION_CLOSE) + [tok.eos_token_id]
    # cut right before the closing tag: the blank line above it was written, the tag was not
    open_ = encode(tok, explanation + EXPLANATION_CLOSE)[: -len(encode(tok, END_EXPLANATION))]
    pair = [
        align_completion(tok, i, question, solution, ids)
        for i, ids in (("a", closed), ("b", open_))
    ]
    got = RLTScorer(teacher, student, tok, CFG).score(pair)
    # Same think and solution tokens, so the same r_SS and r_KL; only the -1 differs.
    assert got.penalty.tolist() == [0.0, -1.0]
    torch.testing.assert_close(got.r_ss[0], got.r_ss[1])
    torch.testing.assert_close(got.reward[0] - 1.0, got.reward[1])


def test_student_offload_keeps_it_on_cpu_and_scores_alike(teacher, tok, samples) -> None:
    student = build_tiny_model(tok, seed=1)
    plain = RLTScorer(teacher, student, tok, CFG).score(samples)
    offloaded = RLTScorer(teacher, student, tok, CFG, offload_student=True).score(samples)
    torch.testing.assert_close(plain.reward, offloaded.reward)
    assert next(student.parameters()).device.type == "cpu"
    assert not any(p.requires_grad for p in student.parameters())


def test_student_with_another_tokenizer_is_refused(teacher, student, tok, smollm2_tokenizer_path):
    other = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))
    other.add_tokens(["<|not_in_the_teacher|>"])
    with pytest.raises(ValueError, match="49152 tokens but student tokenizer"):
        RLTScorer(teacher, student, tok, CFG, student_tokenizer=other)


def test_model_smaller_than_the_vocabulary_is_refused(teacher, tok) -> None:
    small = build_tiny_model(tok, seed=2)
    small.resize_token_embeddings(1000)
    with pytest.raises(ValueError, match="student model's embedding has 1000 rows"):
        RLTScorer(teacher, small, tok, CFG)


def test_scorer_without_teacher_says_to_set_one(student, tok, samples) -> None:
    with pytest.raises(RuntimeError, match="set_teacher"):
        RLTScorer(None, student, tok, CFG).score(samples)


# --------------------------------------------------------------------------- TRL reward object


def _trl_batch(tok):
    """Two completions of one prompt as TRL passes them: ids end with EOS; one has no tag."""
    question, solution, explanation = ROWS[1]
    ids = [
        encode(tok, explanation + EXPLANATION_CLOSE) + [tok.eos_token_id],
        encode(tok, explanation + " and so on"),
    ]
    return {
        "prompts": [[{"role": "user", "content": question}]] * 2,
        "completions": [[{"role": "assistant", "content": tok.decode(i)}] for i in ids],
        "completion_ids": ids,
        "question": [question] * 2,
        "solution": [solution] * 2,
    }


def test_trl_reward_returns_floats_and_keeps_the_breakdown(teacher, student, tok) -> None:
    reward = RLTReward(RLTScorer(None, student, tok, CFG), max_completion_length=512)
    reward.set_policy(teacher)
    metrics: dict[str, float] = {}
    extras: dict[str, list] = {}
    values = reward(
        **_trl_batch(tok),
        log_metric=metrics.__setitem__,
        log_extra=extras.__setitem__,
        trainer_state=None,
    )
    assert reward.__name__ == "rlt_reward"
    assert len(values) == 2 and all(isinstance(v, float) for v in values)
    assert reward.last_breakdown is not None
    assert reward.last_breakdown.penalty.tolist() == [0.0, -1.0]
    assert values == reward.last_breakdown.reward.tolist()
    assert metrics["rlt/penalty_rate"] == 0.5
    assert set(metrics) >= {"rlt/r_ss", "rlt/r_kl", "rlt/think_len", "rlt/retokenized"}
    assert 0.0 <= metrics["rlt/solution_copy"] <= 1.0
    assert extras["rlt_r_ss"] == pytest.approx(reward.last_breakdown.r_ss.tolist())


def test_trl_reward_logs_how_much_of_the_solution_the_explanations_restate(
    teacher, student, tok
) -> None:
    question, solution, explanation = ROWS[1]
    reward = RLTReward(RLTScorer(teacher, student, tok, CFG), max_completion_length=512)

    def copy_share(text: str) -> float:
        ids = [encode(tok, text + EXPLANATION_CLOSE) + [tok.eos_token_id]]
        metrics: dict[str, float] = {}
        reward(prompts=[question], completions=[text], completion_ids=ids, question=[question],
               solution=[solution], log_metric=metrics.__setitem__)  # fmt: skip
        return metrics["rlt/solution_copy"]

    assert copy_share(f"Restated: {solution}") > 0.8
    assert copy_share("Think about each step before answering.") == 0.0


def test_trl_reward_penalises_completions_at_the_length_limit(teacher, student, tok) -> None:
    batch = _trl_batch(tok)
    limit = len(batch["completion_ids"][0])  # the first (closed) completion hits the limit
    reward = RLTReward(RLTScorer(teacher, student, tok, CFG), max_completion_length=limit)
    reward(**batch)
    assert reward.last_breakdown.penalty.tolist() == [-1.0, -1.0]


def test_trl_reward_uses_the_live_policy(teacher, student, tok) -> None:
    reward = RLTReward(RLTScorer(teacher, student, tok, CFG), max_completion_length=512)
    before = reward(**_trl_batch(tok))
    reward.set_policy(build_tiny_model(tok, seed=5))
    after = reward(**_trl_batch(tok))
    # r_SS depends on the student only; r_KL (and so the reward) on the teacher too.
    assert before != after


def test_trl_reward_scores_each_row_under_its_own_system_prompt(teacher, student, tok) -> None:
    # teacher_rl keeps the corpus' `system` column: the frozen student reads each row's text.
    reward = RLTReward(RLTScorer(teacher, student, tok, CFG), max_completion_length=512)
    batch = _trl_batch(tok)
    default = reward(**batch)
    same = reward(**batch, system=[None, None])
    other = reward(**batch, system=["Answer like a pirate.", None])
    assert same == default
    assert other[0] != default[0] and other[1] == default[1]


def test_trl_reward_names_a_missing_column(teacher, student, tok) -> None:
    batch = _trl_batch(tok)
    del batch["solution"]
    reward = RLTReward(RLTScorer(teacher, student, tok, CFG), max_completion_length=512)
    with pytest.raises(KeyError, match="'solution'"):
        reward(**batch)


# --------------------------------------------------------------------------- score_dataset


@pytest.fixture(scope="module")
def student_path(tmp_path_factory, smollm2_tokenizer_path: Path) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("student"), smollm2_tokenizer_path, seed=1)


def _traces(path: Path, n: int, explanation_column: str = "explanation") -> Path:
    rows = [
        {
            "id": f"q{i}",
            "question": f"What is {i} + {i}?",
            "solution": f"{i} + {i} = {2 * i}.",
            explanation_column: f"Double {i} to get {2 * i}." * (i % 3),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_dataset_resumes_without_rescoring(tmp_path, tiny_model_path, student_path) -> None:
    data, out = _traces(tmp_path / "traces.jsonl", 7), tmp_path / "scored.parquet"
    args = (str(tiny_model_path), str(student_path), data, out)
    first = score_dataset(*args, cfg=CFG, batch_size=2, max_batches=2)
    assert (first.scored, first.skipped, first.out) == (4, 0, None)  # 2 batches of 2, no output
    assert not out.exists()
    second = score_dataset(*args, cfg=CFG, batch_size=2)
    assert (second.scored, second.skipped, second.out) == (3, 4, out)  # 7 - 4 left
    parts = sorted(p.name for p in parts_dir(out).glob("part-*.parquet"))
    assert parts == [f"part-00000{i}.parquet" for i in range(4)]  # 2 + 2 batches, none redone
    scored = pd.read_parquet(out)
    assert scored["id"].tolist() == [f"q{i}" for i in range(7)]
    assert scored[list(SCORE_COLUMNS)].notna().all().all()
    # Deleting one part file rescores exactly its rows, to the same values.
    (parts_dir(out) / "part-000001.parquet").unlink()
    third = score_dataset(*args, cfg=CFG, batch_size=2)
    assert (third.scored, third.skipped) == (2, 5)
    pd.testing.assert_frame_equal(pd.read_parquet(out), scored)


def test_score_dataset_accepts_a_thought_column(tmp_path, tiny_model_path, student_path) -> None:
    data = _traces(tmp_path / "r1.jsonl", 2, explanation_column="thought")
    run = score_dataset(
        str(tiny_model_path), str(student_path), data, tmp_path / "o.jsonl", cfg=CFG
    )
    scored = pd.read_json(run.out, lines=True)
    assert list(scored.columns[:5]) == ["id", "question", "solution", "thought", "r_ss"]


def test_rerun_with_other_settings_is_refused(tmp_path, tiny_model_path, student_path) -> None:
    data, out = _traces(tmp_path / "t.jsonl", 2), tmp_path / "s.parquet"
    score_dataset(str(tiny_model_path), str(student_path), data, out, cfg=CFG)
    with pytest.raises(ValueError, match=r"other settings \(changed: \['reward_config'"):
        score_dataset(str(tiny_model_path), str(student_path), data, out, cfg=replace(CFG, lam=0.0))


def test_score_resume_is_keyed_on_what_the_models_and_data_hold(
    tmp_path, tiny_model_path, smollm2_tokenizer_path
) -> None:
    student = make_tiny_model(tmp_path / "student", smollm2_tokenizer_path, seed=1)
    data, out = _traces(tmp_path / "t.jsonl", 2), tmp_path / "s.parquet"
    args = (str(tiny_model_path), str(student), data, out)
    # A typo in the teacher fails before anything is written: the corrected rerun goes on.
    with pytest.raises(ValueError, match="neither an offline model"):
        score_dataset("teachr-typo", str(student), data, out, cfg=CFG)
    assert not parts_dir(out).exists()
    score_dataset(*args, cfg=CFG, max_batches=0)
    make_tiny_model(tmp_path / "student", smollm2_tokenizer_path, seed=2)  # retrained in place
    with pytest.raises(ValueError, match=r"other settings \(changed: \['student'\]\)"):
        score_dataset(*args, cfg=CFG)
    shutil.rmtree(parts_dir(out))
    score_dataset(*args, cfg=CFG, max_batches=0)
    _traces(data, 3)  # a row more
    with pytest.raises(ValueError, match=r"other settings \(changed: \['data'\]\)"):
        score_dataset(*args, cfg=CFG)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "q", "explanation": "e"}], r"missing column\(s\) \['solution'\]"),
        ([{"question": "q", "solution": "s"}], r"explanation \(or thought\)"),
        ([{"id": "a", "question": "q", "solution": " ", "explanation": "e"}], r"empty .*\['a'\]"),
    ],
)
def test_bad_input_fails_before_any_model_loads(tmp_path, rows, message) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The model references do not exist: the error must come from validation, not loading.
    with pytest.raises(ValueError, match=message):
        score_dataset("no/such-model", "no/such-model", data, tmp_path / "o.parquet", cfg=CFG)
