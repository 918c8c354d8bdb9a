"""Safe checking of countdown answers: parse with `ast`, never eval or exec.

Rules (those of TinyZero's countdown reward, which the paper's section 4.4 task follows):
- allowed: integer literals written in decimal digits, binary +, -, *, / and parentheses;
- disallowed: unary minus or plus (every number must appear as given; ``-(a - b)`` is just
  ``b - a``), ``**`` (huge exponents), floats (``2.5``), names, calls, anything else;
- every number of the problem is used exactly once, and no other number appears;
- the value, computed exactly with `fractions.Fraction` (``1 / 3 * 3 == 1``), equals the
  target. Intermediate values may be fractions or negative: only the final value counts.
Inputs over `MAX_EXPRESSION_CHARS` characters are rejected before parsing.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPRESSION_CHARS = 200
_DIGITS = re.compile(r"[0-9]+")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_LATEX = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\left(", "("),
    ("\\right)", ")"),
    ("×", "*"),
    ("÷", "/"),
    ("−", "-"),
)
_TRAILING_EQUALS = re.compile(r"\s*=\s*-?\d+\s*$")


@dataclass(frozen=True)
class CountdownVerdict:
    """The result of checking one expression.

    Attributes:
        correct: True only when ``reason == "ok"``.
        reason: one of ``"ok"``, ``"too_long"``, ``"malformed"`` (not a Python expression),
            ``"disallowed"`` (a syntax outside the rules), ``"wrong_numbers"``,
            ``"division_by_zero"``, ``"wrong_value"``.
        detail: a readable explanation naming the offending part.
    """

    correct: bool
    reason: str
    detail: str = ""


class _Rejected(Exception):
    """Internal: carries a verdict out of the recursive walk."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _literals(node: ast.expr, source: str) -> list[int]:
    """The integer literals of an allowed expression tree, left to right.

    Raises:
        _Rejected: ("disallowed", ...) at the first node outside the rules.
    """
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _literals(node.left, source) + _literals(node.right, source)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        text = ast.get_source_segment(source, node) or ""
        if _DIGITS.fullmatch(text):
            return [node.value]
    shown = ast.get_source_segment(source, node) or type(node).__name__
    raise _Rejected("disallowed", f"{shown!r} is not allowed: use integers, + - * / and ( )")


def _evaluate(node: ast.expr) -> Fraction:
    """The exact value of an expression tree already checked by `_literals`."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    left, right = _evaluate(node.left), _evaluate(node.right)
    op = _OPS[type(node.op)]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        raise _Rejected("division_by_zero", "the expression divides by zero")
    return left / right


def _parse(expression: str) -> ast.expr:
    """Parse one expression, mapping every parser failure to a "malformed" rejection."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _Rejected("too_long", f"{len(expression)} characters > {MAX_EXPRESSION_CHARS}")
    try:
        return ast.parse(expression.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise _Rejected("malformed", f"{expression!r} is not an expression: {err}") from None


def _check_numbers(used: list[int], numbers: Sequence[int]) -> None:
    """Reject unless ``used`` is exactly the multiset ``numbers`` (each once, all of them)."""
    extra, missing = Counter(used) - Counter(numbers), Counter(numbers) - Counter(used)
    if extra or missing:
        raise _Rejected(
            "wrong_numbers",
            f"uses {sorted(used)} but must use {sorted(numbers)} each exactly once "
            f"(extra: {sorted(extra.elements())}, missing: {sorted(missing.elements())})",
        )


def verify_countdown(expression: str, numbers: Sequence[int], target: int) -> CountdownVerdict:
    """Check a countdown answer without evaluating code (paper section 4.4's task).

    Args:
        expression: e.g. ``"55 + 36 - 7 - 19"``; the rules are in the module docstring.
        numbers: the problem's numbers, each to be used exactly once.
        target: the value the expression must equal.

    Returns:
        A `CountdownVerdict`; checks run in order length, syntax, allowed nodes, numbers,
        division by zero, value, and the first failing one gives the reason.
    """
    try:
        tree = _parse(expression)
        _check_numbers(_literals(tree, expression.strip()), numbers)
        value = _evaluate(tree)
    except _Rejected as rejected:
        return CountdownVerdict(False, rejected.reason, rejected.detail)
    if value != target:
        return CountdownVerdict(False, "wrong_value", f"{expression} = {value}, not {target}")
    return CountdownVerdict(True, "ok", f"{expression} = {target}")


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` whose braces close, nested braces included."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, begin = 0, start + len("\\boxed{")
        for pos in range(begin, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth < 0:
                return text[begin:pos]
        start = text.rfind("\\boxed{", 0, start)
    return None


def extract_answer(text: str) -> str | None:
    """The expression in a completion's last ``\\boxed{...}``, or None if there is none.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``). A trailing
    ``= <integer>`` is stripped (``\\boxed{1 + 2 = 3}`` gives ``1 + 2``) and the common LaTeX
    operators ``\\times``, ``\\cdot``, ``\\div``, ``\\left(``, ``\\right)`` become + - * / ( ).
    """
    boxed = _last_boxed(text)
    if boxed is None:
        return None
    for latex, plain in _LATEX:
        boxed = boxed.replace(latex, plain)
    return _TRAILING_EQUALS.sub("", boxed).strip()


def score_countdown_completion(text: str, numbers: Sequence[int], target: int) -> bool:
    """True when the completion's last boxed expression solves the problem exactly."""
    answer = extract_answer(text)
    return answer is not None and verify_countdown(answer, numbers, target).correct
