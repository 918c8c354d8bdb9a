"""The countdown task of section 4.4 and Appendix B.2: generated problems and corpus rows.

"The canonical countdown task, asking student models to combine a set of numbers to equal a
given target using basic arithmetic operations ... 16K and 1K automatically-generated question
and solution pairs with 3 or 4 numbers." It is also the corpus of the CPU ``tiny`` profile, so
its rows carry the columns of the other corpora: question, solution and a baseline thought.

Deliberate simplifications:
- every problem is built from a random expression tree over its numbers (each used once,
  positive-integer intermediates, see `countdown_expr`), so it is solvable by construction;
- the question asks for every number exactly once, the TinyZero rule that `verify_countdown`
  enforces (TinyZero's prompt says "can only be used once" but its reward requires all);
- a row's solution is the expression the written search found, so thought and solution agree;
  it may differ from the generator's `solution_expr`, and both verify.
Checking answers lives in `countdown_verify`, the written search in `countdown_search`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from rlt_core.data.countdown_expr import Term, leaf, moves
from rlt_core.data.countdown_search import MAX_DEAD_ENDS, CountdownSearch, search_countdown
from rlt_core.data.countdown_verify import score_countdown_completion

SOURCE = "countdown"
_MAX_ATTEMPTS_PER_PROBLEM = 200


@dataclass(frozen=True)
class CountdownProblem:
    """One countdown problem.

    Attributes:
        id: stable identifier, e.g. ``"countdown-train-00012"``.
        numbers: the numbers to combine, in the order shown to the model.
        target: the positive integer to reach.
        solution_expr: the expression the generator built, e.g. ``"55 + 36 - 7 - 19"``.
    """

    id: str
    numbers: tuple[int, ...]
    target: int
    solution_expr: str


def _check_generator_args(
    n: int, num_numbers: Sequence[int], number_range: tuple[int, int], max_target: int
) -> None:
    """Reject arguments that cannot make the requested problems, saying which and why."""
    if n < 0:
        raise ValueError(f"n={n}: the number of problems must be >= 0")
    if not num_numbers or any(k < 2 or k > 5 for k in num_numbers):
        raise ValueError(
            f"num_numbers={tuple(num_numbers)}: each count must be 2 to 5 (the paper uses 3 "
            "or 4; above 5 the written search grows too large)"
        )
    low, high = number_range
    if not 1 <= low <= high:
        raise ValueError(f"number_range={number_range}: need 1 <= low <= high, e.g. (1, 99)")
    if max_target < 1:
        raise ValueError(f"max_target={max_target}: targets are positive, use e.g. 100")


def _random_tree(rng: random.Random, numbers: Sequence[int], max_intermediate: int) -> Term | None:
    """Combine random pairs with random moves until one term is left (None if stuck)."""
    pool = [leaf(n) for n in numbers]
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        options = [t for t in moves(pool[i], pool[j]) if t.value <= max_intermediate]
        if not options:
            return None
        pool = [t for k, t in enumerate(pool) if k not in (i, j)] + [rng.choice(options)]
    return pool[0]


def generate_countdown(
    n: int,
    *,
    seed: int,
    num_numbers: tuple[int, ...] = (3, 4),
    number_range: tuple[int, int] = (1, 99),
    max_target: int = 100,
    max_intermediate: int = 1000,
    id_prefix: str = "countdown",
) -> list[CountdownProblem]:
    """Generate ``n`` distinct, solvable countdown problems (section 4.4, Appendix B.2).

    Each problem draws how many numbers (from ``num_numbers``), draws them uniformly from
    ``number_range`` and builds a random expression tree over them; the tree's value is the
    target if it lies in ``[1, max_target]``, otherwise the draw is discarded. Problems with
    the same multiset of numbers and target are kept once. The same arguments always give the
    same list, and a shorter ``n`` gives a prefix of a longer one.

    Args:
        n: how many problems.
        seed: seeds the draws.
        num_numbers: allowed counts of numbers per problem (the paper: 3 or 4).
        number_range: inclusive range of the numbers.
        max_target: largest target.
        max_intermediate: largest value any step of the generator's tree may take.
        id_prefix: ids are ``f"{id_prefix}-{index:05d}"``.

    Raises:
        ValueError: on invalid arguments, or if the settings allow fewer than ``n`` distinct
            problems (widen ``number_range`` or ``max_target``).
    """
    _check_generator_args(n, num_numbers, number_range, max_target)
    rng, seen, problems = random.Random(seed), set(), []
    for _ in range(_MAX_ATTEMPTS_PER_PROBLEM * n):
        if len(problems) == n:
            break
        numbers = tuple(rng.randint(*number_range) for _ in range(rng.choice(num_numbers)))
        tree = _random_tree(rng, numbers, max_intermediate)
        if tree is None or not 1 <= tree.value <= max_target:
            continue
        key = (tuple(sorted(numbers)), tree.value)
        if key in seen:
            continue
        seen.add(key)
        problem_id = f"{id_prefix}-{len(problems):05d}"
        problems.append(CountdownProblem(problem_id, numbers, tree.value, tree.text))
    if len(problems) < n:
        raise ValueError(
            f"only {len(problems)} distinct problems found for n={n} with "
            f"number_range={number_range}, max_target={max_target}: widen them or lower n"
        )
    return problems


def countdown_splits(
    train_size: int = 16000, test_size: int = 1000, *, seed: int = 0, **generator_args: object
) -> tuple[list[CountdownProblem], list[CountdownProblem]]:
    """Disjoint train and test problems: 16K and 1K by default (section 4.4).

    Both come from one `generate_countdown` draw, which dedupes (numbers multiset, target), so
    no problem is in both. Ids become ``countdown-train-00000`` and ``countdown-test-00000``.
    ``generator_args`` go to `generate_countdown` (e.g. ``num_numbers``).
    """
    problems = generate_countdown(train_size + test_size, seed=seed, **generator_args)
    train = [replace(p, id=f"{SOURCE}-train-{i:05d}") for i, p in enumerate(problems[:train_size])]
    test = [replace(p, id=f"{SOURCE}-test-{i:05d}") for i, p in enumerate(problems[train_size:])]
    return train, test


def countdown_question(numbers: Sequence[int], target: int) -> str:
    """The question in the TinyZero style, asking for a boxed final expression."""
    return (
        f"Using the numbers {list(numbers)}, create an equation that equals {target}. "
        "You can use basic arithmetic operations (+, -, *, /) and each number must be used "
        "exactly once. Return your final response within \\boxed{}."
    )


def countdown_solution(expr: str, target: int) -> str:
    """A short solution text ending with the boxed expression (no ``= target`` inside)."""
    return f"{expr} = {target}\n\nThe answer is \\boxed{{{expr}}}."


def _search(
    problem: CountdownProblem, seed: int, max_dead_ends: int = MAX_DEAD_ENDS
) -> CountdownSearch:
    """The written search for one problem, seeded by the corpus seed and the problem's id."""
    return search_countdown(
        problem.numbers, problem.target, seed=f"{seed}/{problem.id}", max_dead_ends=max_dead_ends
    )


def search_trace(
    problem: CountdownProblem, *, seed: int, max_dead_ends: int = MAX_DEAD_ENDS
) -> str:
    """The written depth-first search for ``problem``; steps separated by blank lines.

    It is the ``thought`` that `countdown_rows` writes for the same problem, seed and cap on
    written dead ends (fewer dead ends, shorter traces).
    """
    return "\n\n".join(_search(problem, seed, max_dead_ends).paragraphs)


def _row(problem: CountdownProblem, seed: int, max_dead_ends: int) -> dict[str, object]:
    """One corpus row: question, the searched solution, its written search and the problem."""
    found = _search(problem, seed, max_dead_ends)
    solution = countdown_solution(found.expression, problem.target)
    if not score_countdown_completion(solution, problem.numbers, problem.target):
        raise RuntimeError(f"row {problem.id}: solution {solution!r} does not verify")
    return {
        "id": problem.id,
        "question": countdown_question(problem.numbers, problem.target),
        "solution": solution,
        "thought": "\n\n".join(found.paragraphs),
        "numbers": list(problem.numbers),
        "target": problem.target,
        "source": SOURCE,
    }


def countdown_rows(
    problems: Sequence[CountdownProblem], *, seed: int, max_dead_ends: int = MAX_DEAD_ENDS
) -> pd.DataFrame:
    """Corpus rows with the columns of the other corpora plus the problem's numbers and target.

    Columns: ``id``, ``question``, ``solution`` (ends with ``\\boxed{expr}``), ``thought`` (the
    written search, the baseline reasoning trace), ``numbers`` (list of int), ``target`` (int),
    ``source`` (``"countdown"``). Same problems and seed, same rows.
    """
    columns = ["id", "question", "solution", "thought", "numbers", "target", "source"]
    return pd.DataFrame([_row(p, seed, max_dead_ends) for p in problems], columns=columns)
