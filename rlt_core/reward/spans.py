"""Token-exact think and solution spans of the teacher and student sequences (section 3.3).

The RLT reward compares two models on the SAME think tokens: the teacher pi_theta reads
(question, solution, explanation) in the RLT format of Figure 7, the student pi_s reads
(question, explanation as thought, solution) in the student format of Figure 6. Eq. 3 scores
the student's solution tokens, Eq. 4 the per-token KL on the think tokens.

Sequences are built by construction: each segment (rendered prompt, tags, explanation,
solution) is tokenised on its own with `add_special_tokens=False` and the ids are concatenated,
so the think ids are identical on both sides and every span is a known slice. When the teacher's
sampled ids are given (`align_completion`), those ids ARE the think span: the explanation is the
sampled ids before the closing tag's token sequence, without whitespace-only tokens at its ends.
If the tag was sampled with another split than its canonical one (so it cannot be found at a
token boundary), the decoded explanation is re-tokenised and `retokenized` says so.

Deliberate simplification: explanations given as text are trimmed of whitespace at both ends,
like `rlt_core.formats.parse_teacher_completion` does; the separators come from the format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlt_core.formats import (
    BEGIN_SOLUTION,
    BEGIN_THOUGHT,
    END_EXPLANATION,
    END_SOLUTION,
    END_THOUGHT,
    parse_teacher_completion,
    render_student_prompt,
    render_teacher_prompt,
)

# Student-format glue around the thought and the solution (Figure 6).
THOUGHT_OPEN = f"{BEGIN_THOUGHT}\n\n"
THOUGHT_TO_SOLUTION = f"\n\n{END_THOUGHT}\n\n{BEGIN_SOLUTION}\n\n"
SOLUTION_CLOSE = f"\n\n{END_SOLUTION}"
# What follows the explanation in the RLT format (Figure 7).
EXPLANATION_CLOSE = f"\n\n{END_EXPLANATION}"
VOCAB_SAMPLE_SIZE = 256


class SpanError(ValueError):
    """A sample whose think or solution span cannot be aligned token by token."""


@dataclass(frozen=True)
class AlignedSample:
    """One completion as a teacher and a student token sequence with its spans.

    Spans are `slice`s of token indices (token i is predicted at position i - 1 of the log-probs
    of `rlt_core.logprobs`). `teacher_ids[teacher_think] == student_ids[student_think]` always.
    `format_ok` is False when the closing explanation tag is missing (the format penalty fires);
    `retokenized` is True when the think ids come from re-tokenised text instead of sampled ids.
    """

    sample_id: str
    teacher_ids: list[int]
    student_ids: list[int]
    teacher_think: slice
    student_think: slice
    student_solution: slice
    format_ok: bool = True
    retokenized: bool = False

    @property
    def think_ids(self) -> list[int]:
        """The think (explanation) token ids, the same on both sides."""
        return self.teacher_ids[self.teacher_think]

    @property
    def solution_ids(self) -> list[int]:
        """The solution token ids of the student sequence (scored by Eq. 3)."""
        return self.student_ids[self.student_solution]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` alone, without BOS/EOS (the building block of every sequence)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of `ids` exactly as tokenised: special tokens kept, no space clean-up."""
    return str(tokenizer.decode(list(ids), clean_up_tokenization_spaces=False))


def check_same_vocabulary(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Raise ValueError unless the two tokenizers share one vocabulary.

    The reward compares the teacher's and the student's log-probs of the same token ids
    (Eq. 4), which only means something when an id is the same token for both. Compared: the
    vocabulary sizes, every `len // 256`-th token string, and the ids of the format's tags.
    """
    names = (_name(teacher_tokenizer), _name(student_tokenizer))
    sizes = (len(teacher_tokenizer), len(student_tokenizer))
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"teacher tokenizer {names[0]} has {sizes[0]} tokens but student tokenizer "
            f"{names[1]} has {sizes[1]}: the reward compares log-probs of the same token ids, so "
            "both models need one tokenizer family (e.g. Qwen2.5 teacher and Qwen2.5 student)."
        )
    step = max(1, sizes[0] // VOCAB_SAMPLE_SIZE)
    sample = list(range(0, sizes[0], step))
    probe = f"{THOUGHT_OPEN}{THOUGHT_TO_SOLUTION}{SOLUTION_CLOSE}{EXPLANATION_CLOSE}"
    comparisons = {
        "tokens": (
            teacher_tokenizer.convert_ids_to_tokens(sample),
            student_tokenizer.convert_ids_to_tokens(sample),
        ),
        "tag ids": (encode(teacher_tokenizer, probe), encode(student_tokenizer, probe)),
    }
    for what, (teacher_side, student_side) in comparisons.items():
        if teacher_side != student_side:
            raise ValueError(
                f"teacher tokenizer {names[0]} and student tokenizer {names[1]} have the same "
                f"size but different {what}: an id names different tokens on the two sides. "
                "Use the same tokenizer for both models."
            )


def _name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))


def _require_solution(sample_id: str, solution: str) -> None:
    if not isinstance(solution, str) or not solution.strip():
        raise SpanError(
            f"sample {sample_id!r} has no solution ({solution!r}): r_SS (Eq. 3) scores the "
            "student's log-probs of the solution tokens. Drop the row or fill its solution."
        )


def _checked_ids(tokenizer: Any, text: str, sample_id: str, what: str) -> list[int]:
    """Token ids of `text` that decode back to exactly `text`, else SpanError."""
    ids = encode(tokenizer, text)
    if decode(tokenizer, ids) != text:
        raise SpanError(
            f"sample {sample_id!r}: the {what} does not decode back to itself after "
            f"tokenisation ({text[:60]!r}...), so its span cannot be located exactly. The "
            "tokenizer normalises this text; clean the text or use a lossless tokenizer."
        )
    return ids


def build_sample(
    tokenizer: Any,
    sample_id: str,
    question: str,
    solution: str,
    think_ids: list[int],
    *,
    pre_think_ids: Sequence[int] = (),
    format_ok: bool = True,
    retokenized: bool = False,
) -> AlignedSample:
    """Assemble both sequences around `think_ids` (the explanation's token ids).

    Teacher: rendered RLT prompt (Figure 7, prefill included) + `pre_think_ids` (sampled
    whitespace before the explanation, if any) + think + "\\n\\n<|end_of_explanation|>".
    Student: rendered student prompt (Figure 6) + "<|begin_of_thought|>\\n\\n" + think +
    "\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\n" + solution +
    "\\n\\n<|end_of_solution|>".
    """
    _require_solution(sample_id, solution)
    solution_ids = _checked_ids(tokenizer, solution, sample_id, "solution")
    teacher_head = encode(tokenizer, render_teacher_prompt(tokenizer, question, solution))
    teacher_head += list(pre_think_ids)
    student_head = encode(tokenizer, render_student_prompt(tokenizer, question))
    student_head += encode(tokenizer, THOUGHT_OPEN)
    middle = encode(tokenizer, THOUGHT_TO_SOLUTION)
    solution_start = len(student_head) + len(think_ids) + len(middle)
    return AlignedSample(
        sample_id=sample_id,
        teacher_ids=teacher_head + think_ids + encode(tokenizer, EXPLANATION_CLOSE),
        student_ids=student_head
        + think_ids
        + middle
        + solution_ids
        + encode(tokenizer, SOLUTION_CLOSE),
        teacher_think=slice(len(teacher_head), len(teacher_head) + len(think_ids)),
        student_think=slice(len(student_head), len(student_head) + len(think_ids)),
        student_solution=slice(solution_start, solution_start + len(solution_ids)),
        format_ok=format_ok,
        retokenized=retokenized,
    )


def align_text(
    tokenizer: Any,
    sample_id: str,
    question: str,
    solution: str,
    explanation: str,
    *,
    format_ok: bool = True,
    retokenized: bool = False,
) -> AlignedSample:
    """Align a (question, solution, explanation) given as text; the explanation is trimmed.

    Used for datasets of existing traces (`rlt score`) and as the fallback of
    `align_completion`. Raises SpanError naming `sample_id` for a missing solution or a text
    that does not survive tokenisation.
    """
    _require_solution(sample_id, solution)
    think_ids = _checked_ids(tokenizer, explanation.strip(), sample_id, "explanation")
    return build_sample(
        tokenizer,
        sample_id,
        question,
        solution,
        think_ids,
        format_ok=format_ok,
        retokenized=retokenized,
    )


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Index of the first occurrence of `needle` in `haystack`, or -1."""
    width = len(needle)
    for start in range(len(haystack) - width + 1):
        if list(haystack[start : start + width]) == list(needle):
            return start
    return -1


def _trim_whitespace_tokens(tokenizer: Any, ids: list[int]) -> tuple[int, int]:
    """(start, stop) of `ids` without the whitespace-only tokens at either end."""
    start, stop = 0, len(ids)
    while start < stop and not decode(tokenizer, ids[start : start + 1]).strip():
        start += 1
    while stop > start and not decode(tokenizer, ids[stop - 1 : stop]).strip():
        stop -= 1
    return start, stop


def _strip_trailing_special(tokenizer: Any, ids: list[int]) -> list[int]:
    special = set(tokenizer.all_special_ids)
    stop = len(ids)
    while stop and ids[stop - 1] in special:
        stop -= 1
    return ids[:stop]


def align_completion(
    tokenizer: Any,
    sample_id: str,
    question: str,
    solution: str,
    completion_ids: Sequence[int],
    *,
    truncated: bool = False,
) -> AlignedSample:
    """Align a teacher completion from the token ids it actually sampled (preferred path).

    The think span is the sampled ids before the closing tag's canonical token sequence, minus
    whitespace-only tokens at both ends. Without the tag (or when `truncated`, the generation
    hit the length limit) `format_ok` is False and everything sampled (trailing special tokens
    dropped) is the think span. A tag present in the text but not at a token boundary falls
    back to `align_text` on the decoded explanation, with `retokenized=True`.
    """
    _require_solution(sample_id, solution)
    ids = [int(token) for token in completion_ids]
    tag_at = find_subsequence(ids, encode(tokenizer, END_EXPLANATION))
    body = ids[:tag_at] if tag_at >= 0 else _strip_trailing_special(tokenizer, ids)
    start, stop = _trim_whitespace_tokens(tokenizer, body)
    think = body[start:stop]
    clean_edges = decode(tokenizer, think) == decode(tokenizer, body).strip()
    if (tag_at < 0 and END_EXPLANATION in decode(tokenizer, ids)) or not clean_edges:
        return _align_decoded(tokenizer, sample_id, question, solution, ids, truncated)
    return build_sample(
        tokenizer,
        sample_id,
        question,
        solution,
        think,
        pre_think_ids=body[:start],
        format_ok=tag_at >= 0 and not truncated,
    )


def _align_decoded(
    tokenizer: Any, sample_id: str, question: str, solution: str, ids: list[int], truncated: bool
) -> AlignedSample:
    """Fallback of `align_completion`: parse the decoded text and re-tokenise the explanation."""
    parsed = parse_teacher_completion(decode(tokenizer, _strip_trailing_special(tokenizer, ids)))
    return align_text(
        tokenizer,
        sample_id,
        question,
        solution,
        parsed.explanation,
        format_ok=parsed.complete and not truncated,
        retokenized=True,
    )
