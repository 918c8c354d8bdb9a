"""Token-exact spans on the real SmolLM2 tokenizer and a Qwen-style one: the student reads the
ids student_sft trains on, the teacher the ids it sampled (or teacher_sft's for text)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rlt_core.formats import (
    END_EXPLANATION,
    PADDING,
    STUDENT_SYSTEM_PROMPT,
    render_student_prompt,
    render_teacher_prompt,
    student_assistant_text,
    teacher_completion_text,
)
from rlt_core.reward.spans import (
    SpanError,
    align_completion,
    align_text,
    check_layout,
    check_same_vocabulary,
    decode,
    encode,
)
from rlt_core.sft_data import end_of_turn, student_pairs, teacher_pairs, tokenize_pairs
from tests.fixtures_models import CHATML_TEMPLATE

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


@pytest.fixture(scope="module")
def qwen_tok(qwen_style_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(qwen_style_tokenizer_path))


def _sampled_ids(tok, explanation: str) -> list[int]:
    """What a teacher that follows the format samples: explanation, closing tag, EOS."""
    return encode(tok, teacher_completion_text(explanation)) + [tok.eos_token_id]


def _sft_ids(tok, explanation: str, pairs=student_pairs) -> list[int]:
    """The ids an SFT stage trains on for (QUESTION, explanation, SOLUTION)."""
    row = pd.DataFrame([{"question": QUESTION, "thought": explanation, "solution": SOLUTION}])
    dataset, _ = tokenize_pairs(tok, *pairs(tok, row), max_length=10_000)
    return list(dataset[0]["input_ids"])


@pytest.mark.parametrize("name", sorted(EXPLANATIONS))
def test_spans_decode_to_exactly_the_texts(tok, name: str) -> None:
    explanation = EXPLANATIONS[name]
    sample = align_text(tok, name, QUESTION, SOLUTION, explanation)
    # The sections from tag to tag, their blank lines included (the authors' spans); SmolLM2
    # makes the teacher's opening blank line one token at the end of its prompt but two in the
    # student's completion, so the opening blank line is left out on both sides.
    assert decode(tok, sample.think_ids) == explanation + PADDING
    assert decode(tok, sample.solution_ids) == PADDING + SOLUTION + PADDING
    # The think ids are the same ids on both sides, at their own offsets.
    assert sample.teacher_ids[sample.teacher_think] == sample.student_ids[sample.student_think]
    # The whole sequences are the two formats (Figures 6 and 7) with the end of turn, as text.
    eot = end_of_turn(tok)
    teacher_text = render_teacher_prompt(tok, QUESTION, SOLUTION) + teacher_completion_text(
        explanation
    )
    assert decode(tok, sample.teacher_ids) == teacher_text + eot
    student_text = render_student_prompt(tok, QUESTION) + student_assistant_text(
        explanation, SOLUTION
    )
    assert decode(tok, sample.student_ids) == student_text + eot
    assert sample.format_ok and not sample.retokenized


@pytest.mark.parametrize("tokenizer", ["smollm2", "qwen_style"])
@pytest.mark.parametrize("name", sorted(EXPLANATIONS))
def test_the_student_reads_the_ids_student_sft_trains_on(request, tokenizer, name) -> None:
    tok = request.getfixturevalue({"smollm2": "tok", "qwen_style": "qwen_tok"}[tokenizer])
    explanation = EXPLANATIONS[name]
    from_text = align_text(tok, name, QUESTION, SOLUTION, explanation)
    from_ids = align_completion(tok, name, QUESTION, SOLUTION, _sampled_ids(tok, explanation))
    for sample in (from_text, from_ids):
        assert sample.student_ids == _sft_ids(tok, explanation)
        assert sample.teacher_ids[sample.teacher_think] == sample.student_ids[sample.student_think]
        assert decode(tok, sample.think_ids).strip() == explanation.strip()
        assert decode(tok, sample.solution_ids).strip() == SOLUTION
    # The text path's teacher reads what teacher_sft trains on; a teacher that samples what
    # teacher_sft taught it is scored on its sampled ids, never re-tokenised.
    assert from_text.teacher_ids == _sft_ids(tok, explanation, teacher_pairs)
    assert from_ids.teacher_ids == _sft_ids(tok, explanation, teacher_pairs)
    assert not from_ids.retokenized


def test_the_student_is_tokenised_in_one_piece_not_in_pieces(tok) -> None:
    # SmolLM2 makes a piece that ends in a blank line one "\n\n" token, but two "\n" tokens
    # when text follows: the layout in pieces gave the student a context it never trained on.
    alone = encode(tok, "<|begin_of_thought|>\n\n")
    joined = encode(tok, "<|begin_of_thought|>\n\nMultiply")
    assert decode(tok, alone[-1:]) == "\n\n"
    assert [decode(tok, [i]) for i in joined[len(alone) - 1 : len(alone) + 1]] == ["\n", "\n"]
    sample = align_text(tok, "plain", QUESTION, SOLUTION, EXPLANATIONS["plain"])
    opening = sample.student_ids[sample.student_think.start - 2 : sample.student_think.start]
    assert [decode(tok, [i]) for i in opening] == ["\n", "\n"]


def test_qwen_style_merges_are_inside_the_spans(qwen_tok) -> None:
    # Qwen's pre-tokenizer makes the final "." and the blank line after it one token: that
    # token holds the thought's last character, so it is the think span's last token on both
    # sides (the teacher's explanation is followed by the same "\n\n<|end_of_").
    sample = align_completion(
        qwen_tok, "qwen", QUESTION, SOLUTION, _sampled_ids(qwen_tok, EXPLANATIONS["plain"])
    )
    assert decode(qwen_tok, sample.think_ids[-1:]) == ".\n\n"
    assert decode(qwen_tok, sample.solution_ids[-1:]) == ".\n\n"
    assert not sample.retokenized


@pytest.mark.parametrize("tokenizer", ["smollm2", "qwen_style"])
def test_an_empty_explanation_has_only_the_blank_lines_in_its_think_spans(
    request, tokenizer
) -> None:
    tok = request.getfixturevalue({"smollm2": "tok", "qwen_style": "qwen_tok"}[tokenizer])
    for sample in (
        align_text(tok, "empty", QUESTION, SOLUTION, "  "),
        align_completion(tok, "empty", QUESTION, SOLUTION, _sampled_ids(tok, "")),
    ):
        assert decode(tok, sample.think_ids).strip() == ""
        assert sample.student_ids[sample.student_think] == sample.think_ids
        prompt_len = len(encode(tok, render_student_prompt(tok, QUESTION)))
        before = decode(tok, sample.student_ids[prompt_len : sample.student_think.start])
        assert before.startswith("<|begin_of_thought|>") and "end_of_thought" not in before
        assert decode(tok, sample.solution_ids).strip() == SOLUTION
        assert sample.student_ids == _sft_ids(tok, "")


def test_solution_span_is_the_solution_not_its_copy_in_the_explanation(tok) -> None:
    sample = align_text(tok, "copy", QUESTION, SOLUTION, EXPLANATIONS["contains_solution"])
    # The solution sits after the thought: its span starts past the think span's end.
    assert sample.student_solution.start > sample.student_think.stop
    closing = encode(tok, "<|end_of_solution|>" + end_of_turn(tok))
    assert sample.student_solution.stop == len(sample.student_ids) - len(closing)


@pytest.mark.parametrize("name", sorted(EXPLANATIONS))
def test_sampled_ids_path_equals_text_path(tok, name: str) -> None:
    explanation = EXPLANATIONS[name]
    from_ids = align_completion(tok, name, QUESTION, SOLUTION, _sampled_ids(tok, explanation))
    assert from_ids == align_text(tok, name, QUESTION, SOLUTION, explanation)


def test_think_tokens_that_differ_between_the_sides_are_retokenised_and_flagged(tok) -> None:
    # "hello" sampled as "hel" + "lo": the student, tokenised as student_sft tokenises the
    # text, reads one "hello" token, so the sampled ids have no counterpart token by token.
    think = encode(tok, "Say hel") + encode(tok, "lo")
    assert encode(tok, "Say hello") != think
    completion = think + encode(tok, teacher_completion_text("")) + [tok.eos_token_id]
    sample = align_completion(tok, "split", QUESTION, SOLUTION, completion)
    # Both sides then read their SFT tokenisation of the decoded explanation: the same think
    # ids, the student still exactly student_sft's ids, and the sample counted as re-tokenised.
    assert sample.retokenized and sample.format_ok
    assert sample.think_ids[:2] == encode(tok, "Say hello")
    assert decode(tok, sample.think_ids) == "Say hello" + PADDING
    assert sample.student_ids[sample.student_think] == sample.think_ids
    assert sample.student_ids == _sft_ids(tok, "Say hello")
    assert sample == dataclasses.replace(
        align_text(tok, "split", QUESTION, SOLUTION, "Say hello"), retokenized=True
    )


def test_leading_whitespace_tokens_stay_in_the_teacher_context_only(tok) -> None:
    completion = encode(tok, "\n\n") + _sampled_ids(tok, "Add them.")
    sample = align_completion(tok, "lead", QUESTION, SOLUTION, completion)
    assert decode(tok, sample.think_ids) == "Add them." + PADDING
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
    text_path = align_text(tok, "odd", QUESTION, SOLUTION, "Add 15 and 7.")
    assert sample == dataclasses.replace(text_path, retokenized=True)


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


def _dummy_prefix_tokenizer(tok) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (Llama 2): "\u2581" marks spaces and is prepended to the text,
    so a text's first word tokenises differently alone and after other text."""
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    model.decoder = decoders.Metaspace(prepend_scheme="always")
    texts = [render_teacher_prompt(tok, QUESTION, SOLUTION), *EXPLANATIONS.values()] * 4
    model.train_from_iterator(texts, BpeTrainer(special_tokens=["<unk>", "<|im_end|>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=model, eos_token="<|im_end|>", chat_template=CHATML_TEMPLATE
    )


def test_a_tokenizer_whose_think_tokens_depend_on_their_surroundings_is_refused(tok) -> None:
    dummy_prefix = _dummy_prefix_tokenizer(tok)
    with pytest.raises(SpanError, match="different think tokens .* byte-level BPE"):
        check_layout(dummy_prefix)
    check_layout(tok)  # SmolLM2 passes


# --------------------------------------------------------------------------- the authors' spans


def _authors_span(ids: list[int], section: list[int], *, last: bool) -> slice:
    """Where the authors' reward finds a section: the section's text tokenised alone, looked
    up in the whole sequence (the first match, or the last with `last`); when it is not there,
    again without its first token, then without its last, then without both."""
    for sub in (section, section[1:], section[:-1], section[1:-1]):
        starts = [i for i in range(len(ids) - len(sub) + 1) if ids[i : i + len(sub)] == sub]
        if sub and starts:
            start = starts[-1] if last else starts[0]
            return slice(start, start + len(sub))
    raise AssertionError("section not found")


BESPOKE_QUESTION = "Return your final response within \\boxed{}. What is 7 times 8?"
BESPOKE_THOUGHT = "Okay, 7 times 8.\n\n7 times 4 is 28, doubled is 56.\n\nCheck: 8 sevens are 56."
BESPOKE_SOLUTION = "7 x 8 = 56, so the answer is \\boxed{56}."


def test_qwen_style_spans_are_the_authors_spans_token_for_token(qwen_tok) -> None:
    # A Bespoke-format row under the Bespoke system prompt. The authors tokenise the text
    # between each pair of tags alone and look it up in the whole sequence (their reward's
    # data formatting); with a Qwen-style tokenizer that is exactly what is scored here.
    q, t, s = BESPOKE_QUESTION, BESPOKE_THOUGHT, BESPOKE_SOLUTION
    for sample in (
        align_text(qwen_tok, "b", q, s, t, system=STUDENT_SYSTEM_PROMPT),
        align_completion(qwen_tok, "b", q, s, _sampled_ids(qwen_tok, t)),
    ):
        assert not sample.retokenized
        student, teacher = sample.student_ids, sample.teacher_ids
        think = encode(qwen_tok, PADDING + t + PADDING)
        solution = encode(qwen_tok, PADDING + s + PADDING)
        assert student[sample.student_think] == student[_authors_span(student, think, last=False)]
        assert sample.student_solution == _authors_span(student, solution, last=True)
        # The teacher re-tokenised as one text (the authors' way) has the same think tokens.
        whole = encode(qwen_tok, decode(qwen_tok, teacher))
        assert whole == teacher
        assert teacher[sample.teacher_think] == whole[_authors_span(whole, think, last=False)]
        # ... which are the explanation and the blank line before the closing tag.
        assert decode(qwen_tok, sample.think_ids).strip() == t
        assert decode(qwen_tok, sample.think_ids).endswith(PADDING)


@pytest.mark.parametrize("system", [None, "You are a careful student. Think, then answer."])
def test_a_rows_system_prompt_is_what_the_student_reads(tok, system) -> None:
    sample = align_text(tok, "s", QUESTION, SOLUTION, EXPLANATIONS["plain"], system=system)
    text = decode(tok, sample.student_ids)
    assert (system or STUDENT_SYSTEM_PROMPT) in text
    row = pd.DataFrame(
        [{"question": QUESTION, "thought": EXPLANATIONS["plain"], "solution": SOLUTION,
          "system": system}]
    )  # fmt: skip
    dataset, _ = tokenize_pairs(tok, *student_pairs(tok, row), max_length=10_000)
    assert sample.student_ids == list(dataset[0]["input_ids"])
    sampled = align_completion(
        tok, "s", QUESTION, SOLUTION, _sampled_ids(tok, EXPLANATIONS["plain"]), system=system
    )
    assert sampled.student_ids == sample.student_ids


def test_a_bespoke_rows_own_prompt_reaches_the_rewards_and_student_sfts_ids(tok) -> None:
    # The data's system text (with "analisying"), not the project's: what the frozen student
    # was trained on is what it reads when it scores, and what a distilled student learns.
    from rlt_core.data import load_corpus, row_systems

    data = Path(__file__).parents[1] / "fixtures" / "data" / "bespoke_sample.jsonl"
    reference = pd.read_json(data, lines=True)["system"][0]
    rows = load_corpus(str(data), schema="bespoke", mode="lenient").rows
    row = rows.iloc[0]
    dataset, _ = tokenize_pairs(tok, *student_pairs(tok, rows), max_length=10_000)
    sft_ids = list(dataset[0]["input_ids"])
    assert f"<|im_start|>system\n{reference}<|im_end|>" in decode(tok, sft_ids)
    (system,) = row_systems(rows.iloc[:1])
    for sample in (
        align_text(tok, "b", row.question, row.solution, row.thought, system=system),
        align_completion(
            tok, "b", row.question, row.solution, _sampled_ids(tok, row.thought), system=system
        ),
    ):
        assert sample.student_ids == sft_ids
