"""The RLT reward on the real SmolLM2-135M-Instruct (teacher = student), and `rlt score`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rlt_core.config import RewardConfig
from rlt_core.formats import teacher_completion_text
from rlt_core.reward.score import SCORE_COLUMNS, app
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import align_completion, align_text, encode
from rlt_core.sft_data import end_of_turn

pytestmark = pytest.mark.smoke

QUESTION = "Using the numbers [4, 6, 9], create an equation that equals 33."
SOLUTION = "4 * 6 + 9 = 33. The answer is <answer>4 * 6 + 9</answer>."
STEPS = (
    "We need 33 from 4, 6 and 9. Multiply 4 by 6 to get 24. Then add 9: 24 + 9 = 33. "
    "So the equation is 4 * 6 + 9 = 33."
)
UNRELATED = (
    "The Eiffel Tower is in Paris. It was finished in 1889 and is made of wrought iron. "
    "Many tourists visit it every summer."
)


@pytest.fixture(scope="module")
def scorer(smollm2_model_path: Path) -> RLTScorer:
    ref = str(smollm2_model_path)
    return RLTScorer.from_refs(ref, ref, cfg=RewardConfig(student_model=ref))


def _sampled(tokenizer, text: str) -> list[int]:
    """A completion as teacher_sft teaches the teacher to sample it (explanation, tag, EOS)."""
    return encode(tokenizer, teacher_completion_text(text) + end_of_turn(tokenizer))


def test_explanation_with_the_steps_ranks_above_an_unrelated_one(scorer: RLTScorer) -> None:
    # The student reads the ids student_sft trains on (one-piece completion), each section
    # from tag to tag (the authors' spans). Measured here (lambda 3, alpha 0.01): steps r_SS
    # -2.274, unrelated -2.720; r_RLT with the full KL -3.746 and -4.263; with the sampled KL
    # -1.859 and -1.809 (benchmarks/reward_layout.py prints them).
    tok = scorer.tokenizer
    full = RLTScorer(
        scorer.teacher, scorer.student, tok, dataclasses.replace(scorer.cfg, kl_estimator="full")
    )
    pairs = (("steps", STEPS), ("unrelated", UNRELATED))
    for samples in (
        [align_text(tok, name, QUESTION, SOLUTION, text) for name, text in pairs],
        [align_completion(tok, name, QUESTION, SOLUTION, _sampled(tok, t)) for name, t in pairs],
    ):
        assert not any(sample.retokenized for sample in samples)
        got = scorer.score(samples)
        # Eq. 3: the student finds the solution likelier after an explanation that states it.
        assert got.r_ss[0] > got.r_ss[1]
        # Teacher and student are the same model, yet their contexts differ (the teacher sees
        # the solution), so the sampled-token KL is finite and not exactly 0.
        assert got.r_kl.isfinite().all() and (got.r_kl != 0).all()
        # On text the teacher did not sample, the sampled estimator is a log-likelihood ratio,
        # not a KL: here it is negative and orders the two the wrong way round (README,
        # `rlt score --help`). The exact KL is non-negative, and the whole reward (Eq. 5) then
        # keeps the order of Eq. 3.
        assert (got.r_kl < 0).all()
        exact = full.score(samples)
        assert (exact.r_kl > 0).all()
        assert exact.reward[0] > exact.reward[1]


def test_rlt_score_command_end_to_end(tmp_path: Path, smollm2_model_path: Path) -> None:
    rows = [
        {"id": f"r{i}", "question": QUESTION, "solution": SOLUTION, "thought": text}
        for i, text in enumerate([STEPS, UNRELATED, STEPS[:40], ""])
    ]
    data, out = tmp_path / "traces.jsonl", tmp_path / "scored.parquet"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ref = str(smollm2_model_path)
    # `app` has the one `score` command, so it runs without the subcommand name; mounted in
    # rlt_core.cli with `add_typer(app)` it is `rlt score ...`.
    args = ["--teacher", ref, "--student", ref, "--data", str(data), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--set", "reward.lambda=0"])
    assert result.exit_code == 0, result.output
    assert "scored 4 rows (0 already scored)" in result.output
    scored = pd.read_parquet(out)
    assert scored["id"].tolist() == ["r0", "r1", "r2", "r3"]
    assert scored[list(SCORE_COLUMNS)].notna().all().all()
    assert scored["reward"].tolist() == pytest.approx(scored["r_ss"].tolist())  # lambda = 0
    assert scored["r_ss"][0] > scored["r_ss"][1]
    rerun = CliRunner().invoke(app, [*args, "--batch-size", "2", "--set", "reward.lambda=0"])
    assert "scored 0 rows (4 already scored)" in rerun.output
