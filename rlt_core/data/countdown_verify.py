"""Safe checking of countdown answers: parse with `ast`, never eval or exec.

Rules (those of TinyZero's countdown reward, which the paper's section 4.4 task follows):
- allowed: integer literals written in decimal digits, binary +, -, *, / and parentheses;
- disallowed: unary minus or plus (every number must appear as given; ``-(a - b)`` is just
  ``b - a``), ``**`` (huge exponents), floats (``2.5``), names, calls, anything else;
- every number of the problem is used exactly once, and no other number appears;
- the value, computed exactly with `fractions.Fraction` (``1 / 3 * 3 == 1``), equals the
  target. Intermediate values may be fractions or negative: only the final value counts.
Inputs over `MAX_EXPRESSION_CHARS` characters are rejected before parsing.

An answer in a completion is the content of its last ``\\boxed{...}`` (`parse_boxed_answer`).
It may state its result (``\\boxed{3 * 5 + 7 = 22}``): a stated result is an equality the
answer claims, so it must be true. The expression must equal the target and the stated result
must be the target; ``\\boxed{3 * 5 + 7 = 99}`` for target 22 is wrong (``false_result``). The
length limit applies to the answer as written, before LaTeX operators are mapped and spaces
trimmed, so padding cannot hide a long answer.
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
_STATED_RESULT = re.compile(r"(?P<expression>.*?)\s*=\s*(?P<stated>-?\d+)\s*", re.DOTALL)


@dataclass(frozen=True)
class CountdownVerdict:
    """The result of checking one expression.

    Attributes:
        correct: True only when ``reason == "ok"``.
        reason: one of ``"ok"``, ``"too_long"``, ``"malformed"`` (not a Python expression),
            ``"disallowed"`` (a syntax outside the rules), ``"wrong_numbers"``,
            ``"division_by_zero"``, ``"wrong_value"``, and for a boxed answer ``"no_answer"``
            (no closed ``\\boxed{}``) or ``"false_result"`` (it states a result that is not
            the target).
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


@dataclass(frozen=True)
class BoxedAnswer:
    """The last ``\\boxed{...}`` of a completion, split into what it claims.

    Attributes:
        written: the boxed content exactly as written (the length limit applies to it).
        expression: the expression, LaTeX operators mapped to + - * / ( ) and the stated
            result removed, e.g. ``"3 * 5 + 7"``.
        stated: the integer after a final ``=`` (``\\boxed{3 * 5 + 7 = 22}`` gives 22), or
            None when the answer states no result.
    """

    written: str
    expression: str
    stated: int | None


def parse_boxed_answer(text: str) -> BoxedAnswer | None:
    """The answer in a completion's last ``\\boxed{...}``, or None if there is none.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); the common
    LaTeX operators ``\\times``, ``\\cdot``, ``\\div``, ``\\left(``, ``\\right)`` become
    + - * / ( ); a final ``= <integer>`` becomes `stated`.
    """
    written = _last_boxed(text)
    if written is None:
        return None
    expression = written
    for latex, plain in _LATEX:
        expression = expression.replace(latex, plain)
    stated = _STATED_RESULT.fullmatch(expression)
    if stated is None:
        return BoxedAnswer(written, expression.strip(), None)
    return BoxedAnswer(written, stated["expression"].strip(), int(stated["stated"]))


def extract_answer(text: str) -> str | None:
    """The expression of a completion's last ``\\boxed{...}`` (`parse_boxed_answer`), or None.

    ``\\boxed{1 + 2 = 3}`` gives ``1 + 2``: the stated result is not part of the expression.
    """
    answer = parse_boxed_answer(text)
    return None if answer is None else answer.expression


def verify_countdown_answer(
    answer: BoxedAnswer | None, numbers: Sequence[int], target: int
) -> CountdownVerdict:
    """Check a boxed answer: its length as written, its expression, and its stated result.

    Wrong when there is no answer (``no_answer``), when the answer as written is over
    `MAX_EXPRESSION_CHARS` (``too_long``), when `verify_countdown` rejects the expression, or
    when the answer states a result other than the target (``false_result``: an equality that
    does not hold is a wrong answer even if the expression alone is right).
    """
    if answer is None:
        return CountdownVerdict(False, "no_answer", "no closed \\boxed{...} in the completion")
    if len(answer.written) > MAX_EXPRESSION_CHARS:
        detail = f"the answer is {len(answer.written)} characters > {MAX_EXPRESSION_CHARS}"
        return CountdownVerdict(False, "too_long", detail)
    verdict = verify_countdown(answer.expression, numbers, target)
    if verdict.correct and answer.stated is not None and answer.stated != target:
        detail = f"{answer.expression} = {target}, but the answer states {answer.stated}"
        return CountdownVerdict(False, "false_result", detail)
    return verdict


def score_countdown_completion(text: str, numbers: Sequence[int], target: int) -> bool:
    """True when the completion's last boxed answer solves the problem exactly and states no
    false result (`verify_countdown_answer`)."""
    return verify_countdown_answer(parse_boxed_answer(text), numbers, target).correct
