"""Token-exact think and solution spans of the teacher and student sequences (section 3.3).

The RLT reward compares two models on the SAME think tokens: the teacher pi_theta reads
(question, solution, explanation) in the RLT format of Figure 7, the student pi_s reads
(question, explanation as thought, solution) in the student format of Figure 6. Eq. 3 scores
the student's solution tokens, Eq. 4 the per-token KL on the think tokens.

Which tokenisation each side reads, and why:

- Student: exactly the ids student_sft trains a student on for the same row
  (`rlt_core.sft_data.student_example` + `encode_examples`: the prompt alone, then the whole
  completion, thought and solution sections with their tags and the end of turn, in ONE
  piece). Tokenised in pieces the student would read a context it never trained on: SmolLM2
  makes a piece that ends in "\\n\\n" one token but two "\\n" tokens inside a longer text, and
  that alone moves a step-by-step explanation's r_SS from -2.19 (pieces) to -2.56 (one piece)
  on SmolLM2-135M (`benchmarks/reward_layout.py`). A student trained in the Figure 6 format by
  others (Bespoke-Stratos-7B) saw the same one-piece layout. The think and solution spans are
  the completion tokens that overlap the thought's and the solution's characters
  (`EncodedExample.span`).
- Teacher, sampled ids (`align_completion`, the GRPO reward): the ids the teacher generated
  after its prefilled prompt, as they were sampled; the prompt is tokenised alone, as
  teacher_sft and generation tokenise it. The think span is the sampled ids before the closing
  tag's token sequence (and the prefill's blank line, see below).
- Teacher, text (`align_text`, for traces given as text: `rlt score`, the keep rule of
  generate_traces): the ids teacher_sft trains on for that explanation
  (`rlt_core.sft_data.teacher_example`), think span located by characters as for the student.

When the two sides' think tokens differ. Eq. 4 needs one token sequence that both models read.
The sampled think ids are used when the student's one-piece tokenisation of the explanation has
exactly those ids. They can differ: the teacher may sample a split that tokenising the text
would not make ("hel" + "lo" for "hello"), or the closing tag may be sampled with a split of
its own, so it is only found in the decoded text. Then the sample is re-tokenised (the
`retokenized` path, counted in the GRPO log as `rlt/retokenized`): the explanation is decoded
and BOTH sides read their SFT tokenisation of it, whose think ids agree for byte-level BPE
tokenizers (Qwen2.5, Llama 3, SmolLM2), because the explanation starts a fresh pre-token on both
sides and is followed by the same "\\n\\n<|end_of_". A tokenizer for which even those differ
(SentencePiece with a dummy-prefix space, as in Llama 2) cannot be scored token by token:
`SpanError` says so, and `check_layout` refuses such a tokenizer before any model loads.

What a section is: the text from tag to tag, as the authors' reward takes it. The think span
is everything between the explanation (thought) tags, the blank lines after the opening tag and
before the closing one included; the solution span is everything between the solution tags,
its blank lines included. These are the tokens lying wholly inside that text
(`EncodedExample.span`): a token that merges a tag with the blank line next to it (Qwen's
"|>\\n\\n") is outside, where the authors' sub-sequence search leaves it too, and a token that
merges the body's last character with the closing blank line (Qwen's ".\\n\\n") is inside.
With a Qwen-style tokenizer the spans are the authors' token for token
(`tests/unit/test_reward_spans.py`). The teacher's opening blank line ends its prompt (the
prefill); when its tokens there differ from the student's (SmolLM2 makes it one token at the
end of a prompt and two inside the student's completion), it is left out on both sides.

The other difference from the authors' code, kept on purpose: they re-tokenise prompt +
completion as one text; here the teacher is scored on the ids it generated after its prompt
tokenised alone, which is what the policy actually sampled (on-policy). With Qwen's tokenizer
the two agree; with SmolLM2's the first think token's context differs (the blank line above).

The explanation body itself is trimmed of whitespace at both ends, as the conversion to a
student sample does (`rlt_core.formats.parse_teacher_completion`); whitespace the teacher
samples before its explanation stays in its context only.

The student reads the row's own system prompt when the row has one (`system`, e.g.
Bespoke-Stratos' field), else the default (`rlt_core.formats.student_system`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from rlt_core.formats import (
    END_EXPLANATION,
    EXPLANATION_CLOSE,
    PADDING,
    SOLUTION_CLOSE,
    THOUGHT_OPEN,
    THOUGHT_TO_SOLUTION,
    parse_teacher_completion,
    render_teacher_prompt,
)
from rlt_core.sft_data import encode_examples, student_example, teacher_example

VOCAB_SAMPLE_SIZE = 256
_PROBE = ("What is 2 + 3?", "2 + 3 = 5.", "Add 2 and 3: 2 + 3 = 5.")


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


def student_side(
    tokenizer: Any, question: str, explanation: str, solution: str, system: str | None = None
) -> tuple[list[int], slice, slice]:
    """The student's ids as student_sft tokenises the row (`system`: the row's own system
    prompt, None for the default), with its think and solution sections from tag to tag."""
    ids, sections = _student(tokenizer, question, explanation, solution, system)
    return ids, sections["think"], sections["solution"]


def _student(
    tokenizer: Any, question: str, explanation: str, solution: str, system: str | None
) -> tuple[list[int], dict[str, slice]]:
    """The student's ids and sections: `think` (tag to tag), `body` (without the opening blank
    line), `open` (without either blank line) and `solution` (tag to tag)."""
    example = student_example(tokenizer, question, explanation, solution, system=system)
    (encoded,) = encode_examples(tokenizer, [example.prompt], [example.completion], offsets=True)
    assert example.solution is not None  # a student example always has a solution section
    think, pad = example.thought, len(PADDING)
    return encoded.input_ids, {
        "think": encoded.span(think),
        "body": encoded.span(slice(think.start + pad, think.stop)),
        "open": encoded.span(slice(think.start + pad, think.stop - pad)),
        "solution": encoded.span(example.solution),
    }


def teacher_side(
    tokenizer: Any, question: str, solution: str, explanation: str
) -> tuple[list[int], slice]:
    """The teacher's ids as teacher_sft tokenises the row, with its explanation section from
    tag to tag (the prefill's blank line at the end of the prompt included when it is whole
    tokens there)."""
    ids, think, _ = _teacher(tokenizer, question, solution, explanation)
    return ids, think


def _teacher(
    tokenizer: Any, question: str, solution: str, explanation: str
) -> tuple[list[int], slice, slice]:
    """The teacher's ids, its explanation section, and that section without the opening
    blank line (which ends the prompt)."""
    example = teacher_example(tokenizer, question, solution, explanation)
    (encoded,) = encode_examples(tokenizer, [example.prompt], [example.completion], offsets=True)
    lead = slice(len(example.prompt) - example.thought_lead, len(example.prompt))
    return (
        encoded.input_ids,
        encoded.span(example.thought, lead=lead),
        encoded.span(example.thought),
    )


def align_text(
    tokenizer: Any,
    sample_id: str,
    question: str,
    solution: str,
    explanation: str,
    *,
    system: str | None = None,
    format_ok: bool = True,
) -> AlignedSample:
    """Align a (question, solution, explanation) given as text; the explanation is trimmed.

    Both sides read their SFT tokenisation (module docstring); `system` is the row's student
    system prompt (None: the default). Used for datasets of existing traces (`rlt score`, the
    keep rule) and by `align_completion` when it re-tokenises. Raises SpanError naming
    `sample_id` for a missing solution, or when the two sides' think tokens differ (a
    tokenizer whose tokens depend on the text around the explanation).
    """
    return _align_retokenized(
        tokenizer,
        sample_id,
        question,
        solution,
        explanation,
        system=system,
        format_ok=format_ok,
        flagged=False,
    )


def _align_retokenized(
    tokenizer: Any,
    sample_id: str,
    question: str,
    solution: str,
    explanation: str,
    *,
    system: str | None,
    format_ok: bool,
    flagged: bool,
) -> AlignedSample:
    """Both sides in their SFT tokenisation; `flagged` marks a sample whose sampled ids were
    given up (`AlignedSample.retokenized`)."""
    _require_solution(sample_id, solution)
    explanation = explanation.strip()
    teacher_ids, teacher_think, teacher_body = _teacher(tokenizer, question, solution, explanation)
    student_ids, sections = _student(tokenizer, question, explanation, solution, system)
    student_think, student_solution = sections["think"], sections["solution"]
    if teacher_ids[teacher_think] != student_ids[student_think]:
        # The opening blank line is one token at the end of the teacher's prompt but two at
        # the start of the student's completion (SmolLM2): it is left out on both sides.
        teacher_think, student_think = teacher_body, sections["body"]
    if not explanation and teacher_ids[teacher_think] != student_ids[student_think]:
        # Nothing but blank lines, tokenised differently on the two sides: no think tokens.
        teacher_think = slice(teacher_think.start, teacher_think.start)
        student_think = slice(student_think.start, student_think.start)
    if teacher_ids[teacher_think] != student_ids[student_think]:
        raise SpanError(
            f"sample {sample_id!r}: the explanation ({explanation[:60]!r}...) tokenises into "
            f"different think tokens in the teacher format ({len(teacher_ids[teacher_think])} "
            f"tokens) and in the student format ({len(student_ids[student_think])}), so Eq. 4 "
            "has no common token sequence. The tokenizer "
            f"{_name(tokenizer)} merges text across the explanation's edges (SentencePiece "
            "with a dummy prefix does); use a byte-level BPE tokenizer (Qwen2.5, Llama 3)."
        )
    return AlignedSample(
        sample_id=sample_id,
        teacher_ids=teacher_ids,
        student_ids=student_ids,
        teacher_think=teacher_think,
        student_think=student_think,
        student_solution=student_solution,
        format_ok=format_ok,
        retokenized=flagged,
    )


def check_layout(tokenizer: Any) -> None:
    """Raise SpanError unless a probe row aligns in both formats (before any model loads).

    Catches tokenizers whose think tokens differ between the teacher and the student format
    (module docstring) and tokenizers without offsets (slow, pure-Python ones).
    """
    try:
        align_text(tokenizer, "layout-probe", *_PROBE)
    except NotImplementedError as error:
        raise SpanError(
            f"tokenizer {_name(tokenizer)} cannot give character offsets ({error}); the "
            "reward locates the think and solution tokens by them. Load the fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))."
        ) from error


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Index of the first occurrence of `needle` in `haystack`, or -1."""
    width = len(needle)
    for start in range(len(haystack) - width + 1):
        if list(haystack[start : start + width]) == list(needle):
            return start
    return -1


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
    system: str | None = None,
    truncated: bool = False,
) -> AlignedSample:
    """Align a teacher completion from the token ids it actually sampled (the GRPO reward).

    Teacher: the prompt's ids, then `completion_ids` as sampled; the think section is the
    prefill's blank line (when it is whole tokens at the end of the prompt) and the sampled
    ids up to the closing tag's canonical token sequence, the blank line before the tag
    included; whitespace-only tokens the teacher sampled before its explanation stay in its
    context only. Without the tag (or when `truncated`, the generation hit the length limit)
    `format_ok` is False and everything sampled (trailing special tokens dropped) is the body.
    Student: student_sft's tokenisation of the decoded explanation (`student_side`, `system`
    its system prompt). When the student's think ids are not the sampled ones, or the tag is
    in the text but not at a token boundary, the sample is re-tokenised and flagged
    `retokenized` (module docstring).
    """
    _require_solution(sample_id, solution)
    retokenized = partial(
        _align_retokenized, tokenizer, sample_id, question, solution, system=system, flagged=True
    )
    ids = [int(token) for token in completion_ids]
    tag_at = find_subsequence(ids, encode(tokenizer, END_EXPLANATION))
    body = ids[:tag_at] if tag_at >= 0 else _strip_trailing_special(tokenizer, ids)
    if tag_at < 0 and END_EXPLANATION in decode(tokenizer, body):
        parsed = parse_teacher_completion(decode(tokenizer, body))
        return retokenized(parsed.explanation, format_ok=parsed.complete and not truncated)
    format_ok = tag_at >= 0 and not truncated
    explanation = decode(tokenizer, body).strip()
    student_ids, sections = _student(tokenizer, question, explanation, solution, system)
    prompt_text = render_teacher_prompt(tokenizer, question, solution)
    encoded = tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
    prompt = list(encoded["input_ids"])
    start = 0
    while start < len(body) and not decode(tokenizer, body[start : start + 1]).strip():
        start += 1  # whitespace sampled before the explanation: the teacher's context only
    lead = [  # the prompt's tokens lying wholly inside the prefill's closing blank line
        i
        for i, (first, last) in enumerate(encoded["offset_mapping"])
        if first >= len(prompt_text) - len(PADDING) and last > first
    ]
    spans = _sampled_think(prompt, lead, body, start, student_ids, sections, closed=tag_at >= 0)
    if spans is None:
        return retokenized(explanation, format_ok=format_ok)
    teacher_think, student_think = spans
    return AlignedSample(
        sample_id=sample_id,
        teacher_ids=prompt + ids,
        student_ids=student_ids,
        teacher_think=teacher_think,
        student_think=student_think,
        student_solution=sections["solution"],
        format_ok=format_ok,
    )


def _sampled_think(
    prompt: list[int],
    lead: list[int],
    body: list[int],
    start: int,
    student_ids: list[int],
    sections: dict[str, slice],
    *,
    closed: bool,
) -> tuple[slice, slice] | None:
    """(teacher, student) think spans when the sampled body is the student's think section:
    tried with the prefill's blank line (`lead`: its whole tokens at the end of the prompt),
    then without the opening blank line, and for an unclosed explanation (the teacher may not
    have written the closing blank line) without either; None when none fits."""
    base, think = len(prompt), sections["think"]
    whole = prompt[lead[0] :] + body if lead and lead[-1] == base - 1 else None
    if start == 0 and whole == student_ids[think]:
        return slice(lead[0], base + len(body)), think
    for student in (sections["body"], *(() if closed else (sections["open"],))):
        if body[start:] == student_ids[student]:
            return slice(base + start, base + len(body)), student
    return None
