"""Countdown (section 4.4, Appendix B.2): generator, safe verifier, written search, corpus rows."""

from __future__ import annotations

import pytest

from rlt_core.data.countdown import (
    CountdownProblem,
    countdown_question,
    countdown_rows,
    countdown_solution,
    countdown_splits,
    generate_countdown,
    search_trace,
)
from rlt_core.data.countdown_search import search_countdown
from rlt_core.data.countdown_verify import (
    MAX_EXPRESSION_CHARS,
    BoxedAnswer,
    extract_answer,
    parse_boxed_answer,
    score_countdown_completion,
    verify_countdown,
    verify_countdown_answer,
)

NUMBERS = [19, 36, 55, 7]


def _key(problem: CountdownProblem) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(problem.numbers)), problem.target


@pytest.fixture(scope="module")
def problems() -> list[CountdownProblem]:
    return generate_countdown(2000, seed=7)


# --- generator ---------------------------------------------------------------------------------


def test_every_generated_problem_is_solvable_by_its_expression_and_by_the_search(problems):
    for p in problems:
        own = verify_countdown(p.solution_expr, p.numbers, p.target)
        assert own.correct, (p, own)
        found = search_countdown(p.numbers, p.target, seed=0)
        assert verify_countdown(found.expression, p.numbers, p.target).correct, (p, found)
        # The trace ends with the expression it found.
        assert found.paragraphs[-1].startswith(f"So {found.expression} = {p.target}.")


def test_generated_problems_respect_the_settings_and_are_distinct(problems):
    assert {len(p.numbers) for p in problems} == {3, 4}
    assert all(1 <= n <= 99 for p in problems for n in p.numbers)
    assert all(1 <= p.target <= 100 for p in problems)
    assert len({_key(p) for p in problems}) == len(problems)
    assert problems[12].id == "countdown-00012"


def test_same_seed_same_problems_shorter_n_is_a_prefix_and_other_seeds_differ():
    first = generate_countdown(200, seed=3)
    assert generate_countdown(200, seed=3) == first
    assert generate_countdown(50, seed=3) == first[:50]
    other = {_key(p) for p in generate_countdown(200, seed=4)}
    # About 16K distinct (numbers, target) pairs exist for 3 numbers alone: two seeds share few.
    assert len(other & {_key(p) for p in first}) < 20


def test_tree_moves_by_hand_two_fives():
    # Only numbers (5, 5): 5 + 5 = 10, 5 * 5 = 25, 5 / 5 = 1; 5 - 5 = 0 is not a positive
    # integer, so exactly three problems exist.
    got = generate_countdown(3, seed=0, num_numbers=(2,), number_range=(5, 5))
    assert sorted(p.target for p in got) == [1, 10, 25]
    # max_intermediate=10 drops 25 (25 > 10): two problems remain, a third cannot be made.
    capped = dict(num_numbers=(2,), number_range=(5, 5), max_intermediate=10)
    assert sorted(p.target for p in generate_countdown(2, seed=0, **capped)) == [1, 10]
    with pytest.raises(ValueError, match="only 2 distinct problems"):
        generate_countdown(3, seed=0, **capped)


def test_too_small_a_space_says_so():
    # Numbers from {1, 2}, two of them: {1,1} -> 2 (1+1), 1 (1*1 = 1/1); {1,2} -> 3, 2 (1*2 =
    # 2/1), 1 (2-1); {2,2} -> 4 (2+2 = 2*2), 1 (2/2). That is 2 + 3 + 2 = 7 problems.
    tiny = dict(num_numbers=(2,), number_range=(1, 2))
    assert len(generate_countdown(7, seed=0, **tiny)) == 7
    with pytest.raises(ValueError, match="widen them or lower n"):
        generate_countdown(8, seed=0, **tiny)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n=-1), "n=-1"),
        (dict(n=5, num_numbers=(1,)), "num_numbers"),
        (dict(n=5, num_numbers=()), "num_numbers"),
        (dict(n=5, number_range=(0, 9)), "number_range"),
        (dict(n=5, number_range=(9, 3)), "number_range"),
        (dict(n=5, max_target=0), "max_target"),
    ],
)
def test_bad_generator_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_countdown(seed=0, **kwargs)


def test_splits_are_disjoint_sized_and_named():
    train, test = countdown_splits(600, 200, seed=1)
    assert (len(train), len(test)) == (600, 200)
    assert not {_key(p) for p in train} & {_key(p) for p in test}
    assert train[0].id == "countdown-train-00000"
    assert test[-1].id == "countdown-test-00199"
    assert countdown_splits(600, 200, seed=1) == (train, test)


def test_default_splits_are_the_papers_16k_and_1k():
    train, test = countdown_splits(seed=0)
    assert (len(train), len(test)) == (16000, 1000)


# --- verifier ----------------------------------------------------------------------------------


def test_right_answer():
    # 55 + 36 = 91; 91 - 7 = 84; 84 - 19 = 65.
    verdict = verify_countdown("55 + 36 - 7 - 19", NUMBERS, 65)
    assert (verdict.correct, verdict.reason) == (True, "ok")
    assert verify_countdown(" 55+36-7-19 ", NUMBERS, 65).correct


@pytest.mark.parametrize(
    ("expression", "numbers", "target", "reason"),
    [
        # 55 + 36 - 7 + 19 = 91 - 7 + 19 = 103, not 65.
        ("55 + 36 - 7 + 19", NUMBERS, 65, "wrong_value"),
        ("1 +", [1], 1, "malformed"),
        ("2 3", [2, 3], 5, "malformed"),
        ("", NUMBERS, 65, "malformed"),
        ("((55 + 36)", NUMBERS, 65, "malformed"),
        # Value is right (65 + 7 - 7 = 65) but 7 is used three times.
        ("55 + 36 - 7 - 19 + 7 - 7", NUMBERS, 65, "wrong_numbers"),
        # 55 + 36 = 91 is the target, but 19 and 7 are unused.
        ("55 + 36", NUMBERS, 91, "wrong_numbers"),
        # 55 + 36 - 26 = 65, but 26 is not one of the numbers.
        ("55 + 36 - 26", NUMBERS, 65, "wrong_numbers"),
        ("7 / (3 - 3)", [7, 3, 3], 7, "division_by_zero"),
        ("__import__('os')", NUMBERS, 65, "disallowed"),
        ("2 ** 10", [2, 10], 1024, "disallowed"),
        ("abs(3)", [3], 3, "disallowed"),
        ("x + 1", [1], 1, "disallowed"),
        ("2.5 + 1.5", [2, 1], 4, "disallowed"),
        ("-7 + 72", [7, 72], 65, "disallowed"),
        ("True + 1", [1], 2, "disallowed"),
        ("0x10 + 1", [16, 1], 17, "disallowed"),
        ("[55, 36]", [55, 36], 91, "disallowed"),
        ("1 + " * 60 + "1", [1] * 61, 61, "too_long"),
    ],
)
def test_rejections(expression, numbers, target, reason):
    verdict = verify_countdown(expression, numbers, target)
    assert (verdict.correct, verdict.reason) == (False, reason), verdict


def test_wrong_numbers_detail_names_what_is_missing():
    detail = verify_countdown("55 + 36", NUMBERS, 91).detail
    assert "missing: [7, 19]" in detail


def test_exact_fractions_not_floats():
    # The 24-game classic: 8 / 3 = 8/3; 3 - 8/3 = 1/3; 8 / (1/3) = 24 exactly.
    # In floats it is 23.99999999999999, so a float verifier would reject it.
    assert 8 / (3 - 8 / 3) != 24
    assert verify_countdown("8 / (3 - 8 / 3)", [8, 3, 8, 3], 24).correct
    # (1 / 3) * 3 + 4 = 1 + 4 = 5; intermediate fractions are allowed.
    assert verify_countdown("(1 / 3) * 3 + 4", [1, 3, 3, 4], 5).correct


def test_length_limit_is_inclusive():
    # 99 opening + "1" + 99 closing = 199 characters <= 200: parsed, value 1.
    assert verify_countdown("(" * 99 + "1" + ")" * 99, [1], 1).correct
    assert MAX_EXPRESSION_CHARS == 200


# --- answers in completions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{55 + 36 - 7 - 19}.", "55 + 36 - 7 - 19"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{2 + 3}", "2 + 3"),
        ("\\boxed{55 + 36 - 7 - 19 = 65}", "55 + 36 - 7 - 19"),
        ("\\boxed{(55 - 19) \\times 2}", "(55 - 19) * 2"),
        ("\\boxed{72 \\div 8}", "72 / 8"),
        ("the answer is 65", None),
        ("\\boxed{1 + 2", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_score_completion():
    assert score_countdown_completion(countdown_solution("55 + 36 - 7 - 19", 65), NUMBERS, 65)
    assert not score_countdown_completion("\\boxed{55 + 36 - 7 + 19}", NUMBERS, 65)
    assert not score_countdown_completion("55 + 36 - 7 - 19 = 65", NUMBERS, 65)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\\boxed{3 * 5 + 7 = 22}", "ok"),  # 15 + 7 = 22, and it says so
        ("\\boxed{3 * 5 + 7 =22 }", "ok"),
        ("\\boxed{3 \\times 5 + 7 = 22}", "ok"),
        # 15 + 7 = 22, but the answer claims 99: an equality that does not hold.
        ("\\boxed{3 * 5 + 7 = 99}", "false_result"),
        ("\\boxed{3 * 5 + 7 = -22}", "false_result"),
        # 3 * 5 - 7 = 8: the expression misses the target whatever it states.
        ("\\boxed{3 * 5 - 7 = 8}", "wrong_value"),
        ("\\boxed{3 * 5 + 7 = 15 + 7 = 22}", "malformed"),  # one stated result at most
        ("the answer is 22", "no_answer"),
    ],
)
def test_a_stated_result_must_be_the_target(text, reason):
    verdict = verify_countdown_answer(parse_boxed_answer(text), [3, 5, 7], 22)
    assert (verdict.correct, verdict.reason) == (reason == "ok", reason), verdict
    assert score_countdown_completion(text, [3, 5, 7], 22) is (reason == "ok")


def test_parse_boxed_answer_keeps_what_was_written():
    answer = parse_boxed_answer("so \\boxed{ (3 \\times 5) + 7 = 22 }.")
    assert answer == BoxedAnswer(" (3 \\times 5) + 7 = 22 ", "(3 * 5) + 7", 22)


def test_length_limit_applies_to_the_answer_as_written():
    # 3 * 5 + 7 padded with spaces: 9 characters once trimmed, 209 as written.
    padded = "\\boxed{" + " " * 200 + "3 * 5 + 7}"
    verdict = verify_countdown_answer(parse_boxed_answer(padded), [3, 5, 7], 22)
    assert (verdict.correct, verdict.reason) == (False, "too_long")
    assert not score_countdown_completion(padded, [3, 5, 7], 22)
    # Exactly 200 characters as written is still allowed (the limit is inclusive).
    at_limit = "\\boxed{" + " " * 191 + "3 * 5 + 7}"
    assert len(parse_boxed_answer(at_limit).written) == MAX_EXPRESSION_CHARS
    assert score_countdown_completion(at_limit, [3, 5, 7], 22)
    # LaTeX operators count as written: 30 ones joined by " \\times " are 262 characters.
    latex = "\\boxed{" + " \\times ".join(["1"] * 30) + "}"
    written = parse_boxed_answer(latex).written
    assert len(extract_answer(latex)) < MAX_EXPRESSION_CHARS < len(written)
    assert not score_countdown_completion(latex, [1] * 30, 1)


# --- written search ----------------------------------------------------------------------------


def test_search_by_hand():
    # Make 20 from 2, 3, 4. First moves sorted by distance of the new value to 20:
    # 3 * 4 = 12 (8), 2 * 4 = 8 (12), 3 + 4 = 7 (13), 2 * 3 = 6 and 2 + 4 = 6 (14, a seeded
    # tie), 2 + 3 = 5 (15). Pairs left: {2, 12}: 14, 24, 10, 6; {3, 8}: 11, 24, 5; {2, 7}: 9,
    # 14, 5; {4, 6}: 10, 24, 2; {3, 6}: 9, 18, 3, 2; {4, 5}: 9, 20. Five dead ends, then 4 * 5.
    for seed in range(5):
        found = search_countdown([2, 3, 4], 20, seed=seed)
        assert (found.expression, found.dead_ends) == ("4 * (2 + 3)", 5)
    assert found.paragraphs[1] == "Try 3 * 4 = 12, which leaves 2 and 12."
    assert found.paragraphs[2] == (
        "From 2 and 12: 2 + 12 = 14, 2 * 12 = 24, 12 - 2 = 10, 12 / 2 = 6; none is 20."
    )
    assert found.paragraphs[-1] == (
        "So 4 * (2 + 3) = 20. Check: 2 + 3 = 5; 4 * 5 = 20. "
        "It uses 2, 3 and 4, each exactly once, and gives 20."
    )


def test_search_skips_ahead_past_the_dead_end_budget():
    # Same problem, budget 2: two dead ends written, the other 5 - 2 = 3 summarised.
    found = search_countdown([2, 3, 4], 20, seed=0, max_dead_ends=2)
    written = [p for p in found.paragraphs if p.endswith("none is 20.")]
    assert len(written) == 2
    assert (
        "3 more fail before this path works: 2 + 3 = 5, then 4 * 5 = 20." in (found.paragraphs[-2])
    )


def test_unreachable_target_raises():
    # From 1 and 1 only 2 (1 + 1) and 1 (1 * 1 = 1 / 1) can be made.
    with pytest.raises(ValueError, match="no combination of \\[1, 1\\] reaches 5"):
        search_countdown([1, 1], 5, seed=0)


def test_traces_are_bounded_readable_and_seeded(problems):
    for p in problems[:500]:
        trace = search_trace(p, seed=0)
        paragraphs = trace.split("\n\n")
        assert all(par and par == par.strip() for par in paragraphs)
        failed = [par for par in paragraphs if par.startswith("From") and "; " in par]
        assert len(failed) <= 12
        assert len(trace) < 3000
        assert trace == search_trace(p, seed=0)
    differing = [p for p in problems[:200] if search_trace(p, seed=0) != search_trace(p, seed=1)]
    assert differing, "different seeds never changed a trace"


def test_some_traces_show_wrong_branches_and_backtracking(problems):
    traces = [search_trace(p, seed=0) for p in problems[:300]]
    assert sum("none is" in t or "all above" in t or "all below" in t for t in traces) > 100
    assert any("Back up." in t for t in traces)


# --- rows --------------------------------------------------------------------------------------


def test_question_and_solution_text():
    assert countdown_question(NUMBERS, 65) == (
        "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use "
        "basic arithmetic operations (+, -, *, /) and each number must be used exactly once. "
        "Return your final response within \\boxed{}."
    )
    assert countdown_solution("55 + 36 - 7 - 19", 65) == (
        "55 + 36 - 7 - 19 = 65\n\nThe answer is \\boxed{55 + 36 - 7 - 19}."
    )


def test_rows():
    train, _ = countdown_splits(30, 5, seed=2)
    rows = countdown_rows(train, seed=0)
    assert list(rows.columns) == [
        "id",
        "question",
        "solution",
        "thought",
        "numbers",
        "target",
        "source",
    ]
    assert list(rows["id"]) == [f"countdown-train-{i:05d}" for i in range(30)]
    assert set(rows["source"]) == {"countdown"}
    for row, problem in zip(rows.itertuples(), train, strict=True):
        assert row.numbers == list(problem.numbers) and row.target == problem.target
        assert score_countdown_completion(row.solution, row.numbers, row.target)
        assert row.thought == search_trace(problem, seed=0)
        assert f"equals {problem.target}." in row.question
    assert rows.equals(countdown_rows(train, seed=0))


def test_fewer_written_dead_ends_give_shorter_traces_with_the_same_answers():
    problems = generate_countdown(40, seed=3)
    long_rows = countdown_rows(problems, seed=0)
    short_rows = countdown_rows(problems, seed=0, max_dead_ends=0)
    # Same search, same answers: only how many failed branches are written out changes.
    assert list(short_rows.solution) == list(long_rows.solution)
    assert sum(map(len, short_rows.thought)) < sum(map(len, long_rows.thought))
    assert short_rows.thought[0] == search_trace(problems[0], seed=0, max_dead_ends=0)
