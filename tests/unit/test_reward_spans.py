"""Token-exact spans on the real SmolLM2 tokenizer (issue 4, item 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlt_core.formats import (
    END_EXPLANATION,
    render_student_prompt,
    render_teacher_prompt,
    student_assistant_text,
    teacher_completion_text,
)
from rlt_core.reward.spans import (
    EXPLANATION_CLOSE,
    SpanError,
    align_completion,
    align_text,
    check_same_vocabulary,
    decode,
    encode,
)

QUESTION = "Using the numbers [3, 5, 7], create an equation that equals 22."
SOLUTION = "3 * 5 + 7 = 22. The answer is <answer>3 * 5 + 7</answer>."
EXPLANATIONS = {
    "plain": "Multiply 3 by 5 to get 15, then add 7: 15 + 7 = 22.",
    "unicode": "Größe ∑ of 3·5 = 15 → plus 7 ≈ 22 😀; naïve café.",
    "contains_solution": f"First try: {SOLUTION} Check: 15 + 7 = 22, so {SOLUTION}",
    "tag_fragments": "Tags like <|end_of_thought|> and <|begin_of_solution|> or a lone <| and |> "
    "split into several tokens; so does <|end_of_explanation without its bar.",
    "multiline": "Step 1: 3 * 5 = 15.\n\nStep 2: 15 + 7 = 22.\n\n  Indented line\tand tab.",
}


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))


def _sampled_ids(tok, explanation: str) -> list[int]:
    """What a teacher that follows the format samples: explanation, closing tag, EOS."""
    return encode(tok, teacher_completion_text(explanation)) + [tok.eos_token_id]


@pytest.mark.parametrize("name", sorted(EXPLANATIONS))
def test_spans_decode_to_exactly_the_texts(tok, name: str) -> None:
    explanation = EXPLANATIONS[name]
    sample = align_text(tok, name, QUESTION, SOLUTION, explanation)
    assert decode(tok, sample.think_ids) == explanation
    assert decode(tok, sample.solution_ids) == SOLUTION
    # The think ids are the same ids on both sides, at their own offsets.
    assert sample.teacher_ids[sample.teacher_think] == sample.student_ids[sample.student_think]
    # The whole sequences are the two formats (Figures 6 and 7), token for token as text.
    teacher_text = render_teacher_prompt(tok, QUESTION, SOLUTION) + explanation + EXPLANATION_CLOSE
    assert decode(tok, sample.teacher_ids) == teacher_text
    student_text = render_student_prompt(tok, QUESTION) + student_assistant_text(
        explanation, SOLUTION
    )
    assert decode(tok, sample.student_ids) == student_text
    assert sample.format_ok and not sample.retokenized


def test_solution_span_is_the_solution_not_its_copy_in_the_explanation(tok) -> None:
    sample = align_text(tok, "copy", QUESTION, SOLUTION, EXPLANATIONS["contains_solution"])
    # The solution sits after the thought: its span starts past the think span's end.
    assert sample.student_solution.start > sample.student_think.stop
    assert sample.student_solution.stop == len(sample.student_ids) - len(
        encode(tok, "\n\n<|end_of_solution|>")
    )


@pytest.mark.parametrize("name", sorted(EXPLANATIONS))
def test_sampled_ids_path_equals_retokenised_path(tok, name: str) -> None:
    explanation = EXPLANATIONS[name]
    from_ids = align_completion(tok, name, QUESTION, SOLUTION, _sampled_ids(tok, explanation))
    assert from_ids == align_text(tok, name, QUESTION, SOLUTION, explanation)


def test_sampled_ids_are_kept_even_when_retokenising_differs(tok) -> None:
    # "hello" sampled as "hel" + "lo": re-tokenising the text would merge them, but the think
    # span keeps the ids the teacher actually sampled.
    think = encode(tok, "Say hel") + encode(tok, "lo")
    assert encode(tok, "Say hello") != think
    completion = think + encode(tok, EXPLANATION_CLOSE) + [tok.eos_token_id]
    sample = align_completion(tok, "split", QUESTION, SOLUTION, completion)
    assert sample.think_ids == think
    assert sample.student_ids[sample.student_think] == think
    assert sample.format_ok and not sample.retokenized


def test_leading_whitespace_tokens_stay_in_the_teacher_context_only(tok) -> None:
    completion = encode(tok, "\n\n") + _sampled_ids(tok, "Add them.")
    sample = align_completion(tok, "lead", QUESTION, SOLUTION, completion)
    assert decode(tok, sample.think_ids) == "Add them."
    prompt = encode(tok, render_teacher_prompt(tok, QUESTION, SOLUTION))
    assert sample.teacher_think.start == len(prompt) + len(encode(tok, "\n\n"))


def test_missing_closing_tag_fails_the_format(tok) -> None:
    completion = encode(tok, "I keep thinking and never close")
    sample = align_completion(tok, "open", QUESTION, SOLUTION, completion)
    assert not sample.format_ok
    assert decode(tok, sample.think_ids) == "I keep thinking and never close"


def test_truncated_completion_fails_the_format_even_with_the_tag(tok) -> None:
    sample = align_completion(
        tok, "cut", QUESTION, SOLUTION, _sampled_ids(tok, "Short."), truncated=True
    )
    assert not sample.format_ok


def test_tag_not_at_a_token_boundary_falls_back_and_is_flagged(tok) -> None:
    # The closing tag sampled one character per token: its canonical ids never occur, but the
    # decoded text holds it, so the explanation is re-tokenised from the text.
    odd_tag = [i for char in END_EXPLANATION for i in encode(tok, char)]
    completion = encode(tok, "Add 15 and 7.\n\n") + odd_tag + [tok.eos_token_id]
    assert END_EXPLANATION in decode(tok, completion)
    sample = align_completion(tok, "odd", QUESTION, SOLUTION, completion)
    assert sample.retokenized and sample.format_ok
    assert sample == align_text(tok, "odd", QUESTION, SOLUTION, "Add 15 and 7.", retokenized=True)


@pytest.mark.parametrize("solution", ["", "   \n", None])
def test_row_without_solution_is_an_error_naming_the_sample(tok, solution) -> None:
    with pytest.raises(SpanError, match="sample 'row-7' has no solution"):
        align_text(tok, "row-7", QUESTION, solution, "Some explanation.")
    with pytest.raises(SpanError, match="row-7"):
        align_completion(tok, "row-7", QUESTION, solution, _sampled_ids(tok, "x"))


def test_same_tokenizer_passes_the_vocabulary_check(tok, smollm2_tokenizer_path: Path) -> None:
    check_same_vocabulary(tok, AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path)))


def test_tokenizers_of_different_sizes_are_refused(tok, smollm2_tokenizer_path: Path) -> None:
    bigger = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))
    bigger.add_tokens(["<|extra_token|>"])
    with pytest.raises(ValueError, match=r"49152 tokens but student tokenizer .* has 49153"):
        check_same_vocabulary(tok, bigger)


def test_same_size_but_different_tokens_are_refused(
    tok, smollm2_tokenizer_path: Path, tmp_path: Path
) -> None:
    # Swap the ids of two tokens in a copy of tokenizer.json: same size, different mapping.
    copy = tmp_path / "swapped"
    shutil.copytree(smollm2_tokenizer_path, copy)
    spec = json.loads((copy / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    first, second = tok.convert_ids_to_tokens([192, 384])
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    swapped = AutoTokenizer.from_pretrained(str(copy))
    assert len(swapped) == len(tok)
    with pytest.raises(ValueError, match="same size but different tokens"):
        check_same_vocabulary(tok, swapped)
