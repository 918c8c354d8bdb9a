"""The correctness reward of section 2 / Table 6: -1 unformatted, -0.5 wrong, +1 right."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rlt_core.config import PAPER_STUDENT_RL, StudentRLConfig
from rlt_core.formats import student_assistant_text
from rlt_core.reward.correctness import (
    CorrectnessReward,
    correctness_reward,
    countdown_is_correct,
    math_is_correct,
    student_solution,
)

THOUGHT = "Let me think.\n\nHalf of one is a half."


def formatted(solution: str) -> str:
    """A completion in the student format of Figure 6 with `solution` as its solution section."""
    return student_assistant_text(THOUGHT, solution)


# --------------------------------------------------------------------------- format


def test_student_solution_returns_the_solution_section_of_a_formatted_completion() -> None:
    text = formatted("The answer is \\boxed{5}.") + "<|im_end|>"  # trailing text is allowed
    assert student_solution(text) == "The answer is \\boxed{5}."


@pytest.mark.parametrize(
    "text",
    [
        "The answer is \\boxed{5}.",  # no tags at all
        "<|begin_of_thought|>t<|end_of_thought|>\\boxed{5}",  # no solution section
        "<|begin_of_thought|>t<|end_of_thought|><|begin_of_solution|>\\boxed{5}",  # not closed
        # both sections present, solution first: out of order
        "<|begin_of_solution|>\\boxed{5}<|end_of_solution|><|begin_of_thought|>t<|end_of_thought|>",
        # closing thought tag before its opening tag
        "<|end_of_thought|>t<|begin_of_thought|><|begin_of_solution|>5<|end_of_solution|>",
        # a second solution section (a way to hedge two answers)
        formatted("\\boxed{4}") + "<|begin_of_solution|>\\boxed{5}<|end_of_solution|>",
    ],
)
def test_student_solution_is_none_for_unformatted_completions(text: str) -> None:
    assert student_solution(text) is None


# --------------------------------------------------------------------------- math


@pytest.mark.parametrize(
    ("solution", "gold", "expected"),
    [
        ("The answer is \\boxed{5}.", "5", True),
        ("So $x = \\boxed{\\frac{1}{2}}$.", "0.5", True),  # 1/2 == 0.5
        ("\\boxed{0.5}", "\\frac{1}{2}", True),  # same, the other way round
        ("\\boxed{\\dfrac{2}{4}}", "\\frac{1}{2}", True),  # 2/4 simplifies to 1/2
        ("The answer is \\boxed{6}.", "5", False),
        ("\\boxed{0.51}", "\\frac{1}{2}", False),  # 0.51 != 0.5
    ],
)
def test_math_is_correct_matches_equivalent_answers(
    solution: str, gold: str, expected: bool
) -> None:
    assert math_is_correct(solution, gold) is expected


def test_math_reward_values_for_right_wrong_and_unformatted() -> None:
    reward = CorrectnessReward(task="math")
    row = {"answer": "\\frac{1}{2}"}
    assert reward.score(formatted("\\boxed{0.5}"), row) == 1.0
    assert reward.score(formatted("\\boxed{0.25}"), row) == -0.5
    # right answer but no tags: the format comes first, -1
    assert reward.score("\\boxed{0.5}", row) == -1.0


def test_math_gold_that_does_not_parse_names_the_row() -> None:
    with pytest.raises(ValueError, match="row 'limr-000007': gold answer ''"):
        CorrectnessReward(task="math").score(
            formatted("\\boxed{1}"), {"id": "limr-000007", "answer": ""}
        )


def test_math_off_the_main_thread_raises_instead_of_grading_wrong() -> None:
    errors: list[BaseException] = []

    def grade() -> None:
        try:
            math_is_correct("\\boxed{\\frac{1}{2}}", "0.5")
        except RuntimeError as error:
            errors.append(error)

    worker = threading.Thread(target=grade)
    worker.start()
    worker.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


# --------------------------------------------------------------------------- countdown


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("3 * 5 + 7 = 22\n\nThe answer is \\boxed{3 * 5 + 7}.", True),  # 15 + 7 = 22
        ("\\boxed{(7 + 5) * 3}", False),  # 36, not 22
        ("\\boxed{5 * 5 - 3}", False),  # 22, but uses 5 twice and not 7
        ("3 * 5 + 7 = 22", False),  # no boxed expression
        ("\\boxed{3 * 5 + 7 = 22}", True),  # states the target: a true equality
        ("\\boxed{3 * 5 + 7 = 99}", False),  # 15 + 7 = 22, so "= 99" is a false equality
        ("\\boxed{3 * 5 + 7 = -22}", False),  # a stated result must be the target itself
    ],
)
def test_countdown_is_correct(solution: str, expected: bool) -> None:
    assert countdown_is_correct(solution, [3, 5, 7], 22) is expected


def test_countdown_reward_accepts_numpy_numbers_and_works_off_the_main_thread() -> None:
    reward = CorrectnessReward(task="countdown")
    row = {"numbers": np.array([3, 5, 7]), "target": np.int64(22)}  # as read from parquet
    results: list[float] = []
    worker = threading.Thread(
        target=lambda: results.append(reward.score(formatted("\\boxed{3*5+7}"), row))
    )
    worker.start()
    worker.join()
    assert results == [1.0]


def test_countdown_reward_grades_a_false_stated_result_wrong() -> None:
    # Table 6 values: +1 right, -0.5 formatted but wrong. The expression alone is right
    # (3 * 5 + 7 = 22), yet the answer claims it equals 99: wrong, as in evaluation.
    reward = CorrectnessReward(task="countdown")
    row = {"numbers": [3, 5, 7], "target": 22}
    assert reward.score(formatted("\\boxed{3 * 5 + 7 = 22}"), row) == 1.0
    assert reward.score(formatted("\\boxed{3 * 5 + 7 = 99}"), row) == -0.5


# --------------------------------------------------------------------------- TRL interface


def test_call_scores_conversational_completions_and_logs_rates() -> None:
    reward = CorrectnessReward(task="countdown")
    completions = [
        [{"role": "assistant", "content": formatted("\\boxed{3 * 5 + 7}")}],  # right: +1
        [{"role": "assistant", "content": formatted("\\boxed{3 + 5 + 7}")}],  # 15: -0.5
        [{"role": "assistant", "content": formatted("\\boxed{5 + 7 - 3}")}],  # 9: -0.5
        [{"role": "assistant", "content": "\\boxed{3 * 5 + 7}"}],  # no tags: -1
    ]
    logged: dict[str, float] = {}
    rewards = reward(
        prompts=[None] * 4,
        completions=completions,
        completion_ids=[[1]] * 4,
        numbers=[[3, 5, 7]] * 4,
        target=[22] * 4,
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert rewards == [1.0, -0.5, -0.5, -1.0]
    # 3 of 4 formatted, 1 of 4 right
    assert logged == {
        "correctness/formatted": 0.75,
        "correctness/accuracy": 0.25,
        "correctness/boxed": 1.0,  # every answer holds a \boxed{...}, formatted or not
    }
    logged.clear()
    reward(
        prompts=[None] * 2,
        completions=[formatted("22"), formatted("\\boxed{3 * 5 + 7}")],
        numbers=[[3, 5, 7]] * 2,
        target=[22] * 2,
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert logged["correctness/boxed"] == 0.5
    assert reward.__name__ == "correctness_reward"


def test_call_without_the_gold_column_names_it() -> None:
    with pytest.raises(KeyError, match="needs the dataset column 'answer'"):
        CorrectnessReward(task="math")(
            prompts=["q"],
            completions=[formatted("\\boxed{1}")],
            completion_ids=[[1]],
            question=["q"],
        )


def test_bad_task_and_reward_order_are_rejected() -> None:
    with pytest.raises(ValueError, match="task='code' is unknown"):
        CorrectnessReward(task="code")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unformatted <= wrong < correct"):
        CorrectnessReward(task="math", wrong=1.0)


def test_correctness_reward_follows_the_table_6_recipe() -> None:
    limr = correctness_reward(PAPER_STUDENT_RL["limr"])
    countdown = correctness_reward(PAPER_STUDENT_RL["countdown"])
    assert (limr.task, countdown.task) == ("math", "countdown")
    assert (limr.unformatted, limr.wrong, limr.correct) == (-1.0, -0.5, 1.0)  # section 2
    custom = correctness_reward(StudentRLConfig(reward_wrong=-0.25))
    assert custom.wrong == -0.25
