"""A written depth-first search for countdown: the baseline reasoning trace of the tiny corpus.

In the spirit of Stream of Search (Gandhi et al., 2024): the search combines two of the
remaining numbers at a time, writes each try as a natural-language step, says why a branch
fails, backs up, and ends with the expression it found and a step-by-step check. Steps are
separated by blank lines, the thought-step separator of the paper's format (Appendix A.2).

Deliberate simplifications:
- moves keep every intermediate value a positive integer (see `countdown_expr`), the space the
  generator builds problems in, so the exhaustive search always finds a solution;
- children are tried closest-to-target first with seeded random tie-breaking, a cheap
  heuristic that still shows wrong branches;
- at most `max_dead_ends` failed branches are written out; past that the search goes on
  silently and the trace says so before replaying the path that worked, which bounds a trace
  to a few hundred tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlt_core.data.countdown_expr import Term, leaf, moves
from rlt_core.data.countdown_verify import verify_countdown

MAX_DEAD_ENDS = 12


@dataclass(frozen=True)
class CountdownSearch:
    """What one search produced.

    Attributes:
        expression: the solution found (it may differ from the generator's expression).
        paragraphs: the written steps; ``"\\n\\n".join(paragraphs)`` is the trace.
        dead_ends: failed branches met before the solution, written or not.
    """

    expression: str
    paragraphs: tuple[str, ...]
    dead_ends: int


@dataclass
class _Log:
    """Mutable state of one search: the written paragraphs and the dead-end count."""

    target: int
    rng: random.Random
    max_dead_ends: int
    paragraphs: list[str] = field(default_factory=list)
    dead_ends: int = 0

    def write(self, text: str) -> None:
        """Write a step while the dead-end budget is not spent."""
        if self.dead_ends < self.max_dead_ends:
            self.paragraphs.append(text)

    def dead_end(self, text: str) -> None:
        """Write a failed branch (within budget) and count it."""
        self.write(text)
        self.dead_ends += 1


def _listing(values: Sequence[int]) -> str:
    """``[19, 36, 7]`` -> ``"19, 36 and 7"``."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _children(state: list[Term], log: _Log) -> list[tuple[Term, list[Term]]]:
    """Every (new term, remaining terms) one move makes, closest to the target first."""
    out = []
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            rest = [t for k, t in enumerate(state) if k not in (i, j)]
            out.extend((new, rest) for new in moves(state[i], state[j]))
    keys = {id(new): (abs(new.value - log.target), log.rng.random()) for new, _ in out}
    return sorted(out, key=lambda child: keys[id(child[0])])


def _finish_pair(a: Term, b: Term, log: _Log) -> Term | None:
    """Try every move on the last two terms; write the hit or why none works."""
    results = moves(a, b)
    for term in results:
        if term.value == log.target:
            log.write(f"From {a.value} and {b.value}: {term.steps[-1]}. That is the target!")
            return term
    values = [t.value for t in results]
    if max(values) < log.target:
        why = f"all below {log.target}"
    elif min(values) > log.target:
        why = f"all above {log.target}"
    else:
        why = f"none is {log.target}"
    tried = ", ".join(t.steps[-1] for t in results)
    log.dead_end(f"From {a.value} and {b.value}: {tried}; {why}.")
    return None


def _search(state: list[Term], log: _Log, depth: int) -> Term | None:
    """Depth-first search from ``state``; returns the term equal to the target, or None."""
    if len(state) == 1:
        return state[0] if state[0].value == log.target else None
    if len(state) == 2:
        return _finish_pair(state[0], state[1], log)
    for new, rest in _children(state, log):
        left = _listing([t.value for t in rest + [new]])
        log.write(f"{'Try' if depth == 0 else 'Then try'} {new.steps[-1]}, which leaves {left}.")
        found = _search(rest + [new], log, depth + 1)
        if found is not None:
            return found
    if depth > 0:
        log.write(f"Nothing works from {_listing([t.value for t in state])}. Back up.")
    return None


def search_countdown(
    numbers: Sequence[int], target: int, *, seed: int | str, max_dead_ends: int = MAX_DEAD_ENDS
) -> CountdownSearch:
    """Search for a countdown solution and write the search out as a reasoning trace.

    Args:
        numbers: the problem's numbers (2 to 5 of them keeps the search fast).
        target: the value to reach.
        seed: seeds the tie-breaking among equally promising moves (an int or a str, as
            `random.Random` takes); same seed, same trace.
        max_dead_ends: failed branches written out before the trace skips ahead.

    Returns:
        A `CountdownSearch` whose expression `verify_countdown` accepts.

    Raises:
        ValueError: if no positive-integer combination of ``numbers`` reaches ``target``
            (every problem from `generate_countdown` has one).
    """
    log = _Log(target=target, rng=random.Random(seed), max_dead_ends=max_dead_ends)
    log.paragraphs.append(
        f"I need to make {target} from {_listing(list(numbers))}, using each number exactly "
        "once with +, -, * and /. I will combine two numbers at a time, trying results "
        "close to the target first, and check what is left."
    )
    found = _search([leaf(n) for n in numbers], log, depth=0)
    if found is None:
        raise ValueError(
            f"no combination of {list(numbers)} reaches {target} with positive-integer steps; "
            "pass a problem from generate_countdown, which are solvable by construction"
        )
    verdict = verify_countdown(found.text, numbers, target)
    if not verdict.correct:
        raise RuntimeError(f"search produced {found.text!r}, which fails: {verdict.detail}")
    return CountdownSearch(found.text, tuple(_conclusion(found, log, numbers)), log.dead_ends)


def _conclusion(found: Term, log: _Log, numbers: Sequence[int]) -> list[str]:
    """The written paragraphs, the replayed path if the budget cut the writing, and a check."""
    paragraphs = list(log.paragraphs)
    if log.dead_ends >= log.max_dead_ends:
        more = log.dead_ends - log.max_dead_ends
        paragraphs.append(
            f"Still nothing. Going through the remaining combinations the same way, {more} more "
            f"fail before this path works: {', then '.join(found.steps)}."
        )
    paragraphs.append(
        f"So {found.text} = {log.target}. Check: {'; '.join(found.steps)}. It uses "
        f"{_listing(sorted(numbers))}, each exactly once, and gives {log.target}."
    )
    return paragraphs
