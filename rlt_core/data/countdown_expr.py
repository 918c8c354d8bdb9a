"""Countdown terms: a value built from some of a problem's numbers, with its text and steps.

Shared by the problem generator (`countdown.py`) and the search (`countdown_search.py`) so that
both move through the same space: combine two terms with +, -, * or / into a new term.

Deliberate simplification (the classical countdown rule): every intermediate value is a
positive integer. Subtraction takes the larger minus the smaller (never 0 or negative) and
division only applies when it is exact. The generator builds every problem with these moves,
so an exhaustive search over the same moves always finds a solution. The verifier
(`countdown_verify.py`) is more permissive: it accepts any expression that is exactly right in
rational arithmetic, e.g. `(1 / 3) * 3 + 4`.
"""

from __future__ import annotations

from dataclasses import dataclass

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


@dataclass(frozen=True)
class Term:
    """A positive integer built from some of the numbers.

    Attributes:
        value: the term's value.
        text: the expression that computes it, with the fewest parentheses that keep its
            meaning, e.g. ``"(55 - 19) * 2"``.
        precedence: 1 for a top-level + or -, 2 for * or /, 3 for a bare number; decides
            where parentheses go when the term becomes an operand.
        steps: the arithmetic done to build it, one ``"a op b = c"`` per operation, in order.
    """

    value: int
    text: str
    precedence: int = _ATOM
    steps: tuple[str, ...] = ()


def leaf(number: int) -> Term:
    """The term for one of the problem's numbers, as given."""
    return Term(value=number, text=str(number))


def _operand(term: Term, op: str, *, right: bool) -> str:
    """The operand's text, parenthesised only where the operator's precedence needs it.

    A right operand of the same precedence keeps its parentheses under - and / only:
    ``a - (b + c)`` and ``a / (b * c)`` must keep them, while ``a + (b - c)`` equals
    ``a + b - c`` and ``a * (b / c)`` equals ``a * b / c`` in exact arithmetic.
    """
    needs = term.precedence < _PRECEDENCE[op]
    if right and term.precedence == _PRECEDENCE[op] and op in "-/":
        needs = True
    return f"({term.text})" if needs else term.text


def apply(op: str, left: Term, right: Term) -> Term:
    """Combine two terms with one operator into a new term (value, text, steps).

    Raises:
        ValueError: if the result would not be a positive integer (negative, zero or inexact
            division), which the countdown moves exclude.
    """
    value = _value(op, left.value, right.value)
    if value is None:
        raise ValueError(
            f"{left.value} {op} {right.value} is not a positive integer; countdown moves keep "
            "every intermediate value a positive integer (use larger - smaller, exact division)"
        )
    text = f"{_operand(left, op, right=False)} {op} {_operand(right, op, right=True)}"
    step = f"{left.value} {op} {right.value} = {value}"
    return Term(value, text, _PRECEDENCE[op], left.steps + right.steps + (step,))


def _value(op: str, a: int, b: int) -> int | None:
    """``a op b`` when it is a positive integer, else None."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    return a // b if a % b == 0 else None


def moves(a: Term, b: Term) -> list[Term]:
    """Every positive-integer term one operation makes from ``a`` and ``b``, in a fixed order.

    Order: sum, product, larger minus smaller (if they differ), larger divided by smaller (if
    exact). Ties keep ``a`` first, so ``moves(a, b)`` is deterministic.
    """
    big, small = (a, b) if a.value >= b.value else (b, a)
    out = [apply("+", a, b), apply("*", a, b)]
    if big.value != small.value:
        out.append(apply("-", big, small))
    if big.value % small.value == 0:
        out.append(apply("/", big, small))
    return out
