"""Formats of Figures 6 and 7: exact strings, round trips, any chat template."""

from __future__ import annotations

import hashlib

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from rlt_core import formats as F

# A Qwen2.5-style ChatML template: it injects its own default system prompt when none is given.
QWEN_STYLE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by "
    "Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A non-ChatML template (Llama-3 style headers), to show rendering is template-agnostic.
LLAMA_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _tokenizer(template: str | None) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        bos_token="<s>",
    )
    tok.chat_template = template
    return tok


def test_system_prompts_match_the_figures_word_for_word():
    # Checked once against the paper text with the figure line breaks joined by one space:
    # 170 and 162 words.
    # Figure 6 starts and ends like this; the thought placeholder holds a literal '\n\n'.
    for student in (F.STUDENT_SYSTEM_PROMPT, F.FIGURE_6_SYSTEM_PROMPT):
        assert student.startswith("Your role as an assistant involves thoroughly")
        assert student.endswith("through the above guidelines:")
        assert "{thought with steps separated with '\\n\\n'}" in student
        assert "\n" not in student
        assert len(student.split()) == 170
    # Figure 7: Solution section first, then Explanation; one space before <|im_end|>.
    for teacher in (F.TEACHER_SYSTEM_PROMPT, F.FIGURE_7_SYSTEM_PROMPT):
        assert teacher.startswith("Your role as an assistant involves providing")
        assert teacher.endswith("and revisiting previous steps. ")
        assert "<|begin_of_explanation|> {explanation with steps separated with '\\n\\n'} " in (
            teacher
        )
        assert len(teacher.split()) == 162


# sha256 of the prompts as Bespoke-Stratos-17k's `system` field and the authors' code have them
# (their STRATOS_SYSTEM_PROMPT and STRATOS_STYLE_TEACHER_PROMPT), computed from their source.
REFERENCE_STUDENT_SHA256 = "6490a490932e93a0712ec83d53b79036a10059ccdbf786e088ac9c247aa19141"
REFERENCE_TEACHER_SHA256 = "2a6900e8cd23891f5b34a68c8b386045cd42c6c17ce0caa13f65005da0a49484"


def test_the_prompts_are_the_texts_the_models_were_trained_on():
    # The reward's frozen student (Bespoke-Stratos-7B) was trained on "analisying", which the
    # figures print as "analysing": the default is the trained text, not the figure's.
    assert hashlib.sha256(F.STUDENT_SYSTEM_PROMPT.encode()).hexdigest() == REFERENCE_STUDENT_SHA256
    assert hashlib.sha256(F.TEACHER_SYSTEM_PROMPT.encode()).hexdigest() == REFERENCE_TEACHER_SHA256
    assert "such as analisying questions" in F.STUDENT_SYSTEM_PROMPT
    assert F.FIGURE_6_SYSTEM_PROMPT != F.STUDENT_SYSTEM_PROMPT
    assert F.FIGURE_6_SYSTEM_PROMPT.replace("analysing", "analisying") == F.STUDENT_SYSTEM_PROMPT


def test_a_given_system_prompt_replaces_the_default():
    own = "You are a careful student."
    assert F.student_messages("q", own)[0] == {"role": "system", "content": own}
    assert F.student_messages("q")[0]["content"] == F.STUDENT_SYSTEM_PROMPT
    for missing in (None, "", "   "):
        assert F.student_system(missing) == F.STUDENT_SYSTEM_PROMPT
    prompt = F.render_student_prompt(_tokenizer(QWEN_STYLE), "What is 2 + 2?", own)
    assert prompt.startswith(f"<|im_start|>system\n{own}<|im_end|>")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is 2 + 2?", "Return your final response within \\boxed{}. What is 2 + 2?"),
        # Bespoke-Stratos questions carry it first, countdown questions last: never twice.
        ("Return your final response within \\boxed{}. What is 2 + 2?", None),
        ("Using [1, 2], make 3. Return your final response within \\boxed{}.", None),
    ],
)
def test_the_boxed_instruction_is_prefixed_once(question, expected):
    once = F.student_question(question)
    assert once == (expected or question)
    assert F.student_question(once) == once
    gpqa = F.student_question("Which? (A) 1 (B) 2", F.GPQA_INSTRUCTION)
    assert gpqa.startswith(F.GPQA_INSTRUCTION) and gpqa.count("boxed") == 1


def test_student_assistant_text_is_the_exact_format():
    text = F.student_assistant_text("think 1\n\nthink 2", "x = 5")
    assert text == (
        "<|begin_of_thought|>\n\nthink 1\n\nthink 2\n\n<|end_of_thought|>\n\n"
        "<|begin_of_solution|>\n\nx = 5\n\n<|end_of_solution|>"
    )


def test_teacher_prefill_ends_where_generation_starts():
    assert F.teacher_prefill("\\boxed{E}") == (
        "<|begin_of_solution|>\n\n\\boxed{E}\n\n<|end_of_solution|>\n\n<|begin_of_explanation|>\n\n"
    )
    assert F.teacher_completion_text("step") == "step\n\n<|end_of_explanation|>"


@pytest.mark.parametrize("template", [QWEN_STYLE, LLAMA_STYLE])
def test_teacher_prompt_prefills_solution_in_assistant_turn(template):
    tok = _tokenizer(template)
    prompt = F.render_teacher_prompt(tok, "What is 2+3?", "\\boxed{5}")
    head = tok.apply_chat_template(
        F.teacher_messages("What is 2+3?"), tokenize=False, add_generation_prompt=True
    )
    assert prompt == head + F.teacher_prefill("\\boxed{5}")
    assert prompt.endswith("<|begin_of_explanation|>\n\n")
    assert F.TEACHER_SYSTEM_PROMPT in prompt and "You are Qwen" not in prompt


def test_qwen_style_render_is_exact():
    tok = _tokenizer(QWEN_STYLE)
    assert F.render_student_prompt(tok, "Q?") == (
        f"<|im_start|>system\n{F.STUDENT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tokenizer_without_chat_template_is_a_clear_error():
    with pytest.raises(F.FormatError, match="no chat template"):
        F.render_student_prompt(_tokenizer(None), "Q?")


@pytest.mark.parametrize(
    "thought, solution",
    [
        ("a\n\nb", "\\boxed{1}"),
        ("unicode: ∑ αβγ 数学 🙂", "réponse = 2"),
        ("the explanation repeats the solution: \\boxed{1}", "\\boxed{1}"),
    ],
)
def test_student_text_round_trip(thought, solution):
    parsed = F.parse_student_text(F.student_assistant_text(thought, solution))
    assert (parsed.thought, parsed.solution, parsed.complete) == (thought, solution, True)


def test_student_parse_reports_missing_tags():
    parsed = F.parse_student_text("<|begin_of_thought|>\n\nhalf a thought")
    assert parsed.thought is None and parsed.solution is None
    assert parsed.missing == (F.END_THOUGHT, F.BEGIN_SOLUTION, F.END_SOLUTION)
    assert not parsed.complete


def test_teacher_output_to_student_keeps_explanation_and_appends_solution():
    completion = "First, 2+3.\n\nSo 5.\n\n<|end_of_explanation|><|im_end|>"
    sample = F.teacher_output_to_student("What is 2+3?", "\\boxed{5}", completion)
    assert sample.thought == "First, 2+3.\n\nSo 5."
    assert sample.assistant_text == F.student_assistant_text("First, 2+3.\n\nSo 5.", "\\boxed{5}")


def test_teacher_round_trip_through_the_whole_assistant_turn():
    full = F.teacher_assistant_text("\\boxed{5}", "because 2+3=5")
    completion = full[len(F.teacher_prefill("\\boxed{5}")) :]
    assert F.parse_teacher_completion(completion).explanation == "because 2+3=5"


def test_truncated_teacher_completion_is_reported_and_not_converted():
    parsed = F.parse_teacher_completion("I was cut off mid-sen")
    assert not parsed.complete and parsed.missing == (F.END_EXPLANATION,)
    with pytest.raises(F.FormatError, match="no closing <\\|end_of_explanation\\|>"):
        F.teacher_output_to_student("q", "s", "I was cut off mid-sen")
