"""How much of the solution an explanation restates: the solution-copy measure (Appendix D).

Without the KL term r_KL (lambda = 0) nothing keeps the teacher's explanation plausible to
the teacher itself, and the paper observes the teacher drifting toward repeating the solution
instead of explaining it. `solution_copy` makes that drift measurable: the share of the
solution's token n-grams that also occur somewhere in the explanation.

    solution  a b c d e      (n = 3: "a b c", "b c d", "c d e")
    thought   x a b c y d e  ("a b c" occurs; "b c d" and "c d e" do not)  -> 1/3

Every position of the solution counts once (a repeated n-gram counts as often as the solution
holds it); a solution shorter than n tokens is one n-gram of its own length, so a one-token
answer still counts as copied when the explanation holds it. An empty solution has nothing to
copy: NaN. The measure is on token ids (any hashable items), so the teacher's sampled ids and a
re-tokenised text both work; compare runs on the same tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

COPY_NGRAM = 4  # n of the measure in logs and reports (short enough for countdown answers)


def ngrams(items: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """Every contiguous n-gram of `items`, in order (none when `items` is shorter than n)."""
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def solution_copy(
    explanation: Sequence[Hashable], solution: Sequence[Hashable], n: int = COPY_NGRAM
) -> float:
    """The share of the solution's n-grams (each position once) found in the explanation.

    1.0: every piece of the solution is restated; 0.0: none is. NaN for an empty solution.
    Raises ValueError for n < 1.
    """
    if n < 1:
        raise ValueError(f"n={n}: an n-gram needs n >= 1 (the reports use n={COPY_NGRAM}).")
    if not solution:
        return math.nan
    size = min(n, len(solution))
    seen = set(ngrams(explanation, size))
    grams = ngrams(solution, size)
    return sum(gram in seen for gram in grams) / len(grams)


def mean_copy(values: Iterable[float]) -> float:
    """The mean of the defined (non-NaN) copy shares; NaN when none is defined."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan
