"""The two input formats of the paper and the conversion between them.

Student format (Figure 6, from Li et al. / Bespoke-Stratos): the reasoning system prompt, the
question as the user turn, and an assistant turn

    <|begin_of_thought|>\\n\\n{thought}\\n\\n<|end_of_thought|>\\n\\n
    <|begin_of_solution|>\\n\\n{solution}\\n\\n<|end_of_solution|>

Teacher (RLT) format (Figure 7, section 3.2): the RLT system prompt, the question as the user
turn, and an assistant turn PREFILLED with the solution; the teacher generates only what follows
`<|begin_of_explanation|>\\n\\n`, that is the explanation and `<|end_of_explanation|>`.

Teacher output -> student sample (section 3.2): the explanation body becomes the thought and the
solution is appended back. Nothing else is done to the explanation, except that whitespace at
its two ends is trimmed (the separators that the format itself puts around every body).

Rendering goes through the tokenizer's own chat template, so the same code serves Qwen's and
SmolLM2's ChatML and any other template: only the assistant-turn prefill is appended by hand,
after the template's generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

BEGIN_THOUGHT = "<|begin_of_thought|>"
END_THOUGHT = "<|end_of_thought|>"
BEGIN_SOLUTION = "<|begin_of_solution|>"
END_SOLUTION = "<|end_of_solution|>"
BEGIN_EXPLANATION = "<|begin_of_explanation|>"
END_EXPLANATION = "<|end_of_explanation|>"

# The student's system prompt: the text of Bespoke-Stratos-17k's `system` field and of the
# authors' code (their STRATOS_SYSTEM_PROMPT), i.e. what Bespoke-Stratos-7B, the frozen reward
# student of Appendix A.1, was trained on. It spells "analisying"; the paper's Figure 6 prints
# "analysing" (`FIGURE_6_SYSTEM_PROMPT`). The figure is a rendering of this prompt, the model
# never saw it: a student scored, trained or evaluated under the figure's spelling conditions on
# a prompt it does not know. This is the DEFAULT; a corpus row that carries its own `system`
# text is used with exactly that text (`student_system`). `'\n\n'` is literal text here.
STUDENT_SYSTEM_PROMPT = (
    "Your role as an assistant involves thoroughly exploring questions through a systematic "
    "long thinking process before providing the final precise and accurate solutions. This "
    "requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracing, and iteration to develop well-considered thinking "
    "process. Please structure your response into two main sections: Thought and Solution. In "
    "the Thought section, detail your reasoning process using the specified format: "
    "<|begin_of_thought|> {thought with steps separated with '\\n\\n'} <|end_of_thought|> Each "
    "step should include detailed considerations such as analisying questions, summarizing "
    "relevant findings, brainstorming new ideas, verifying the accuracy of the current steps, "
    "refining any errors, and revisiting previous steps. In the Solution section, based on "
    "various attempts, explorations, and reflections from the Thought section, systematically "
    "present the final solution that you deem correct. The solution should remain a logical, "
    "accurate, concise expression style and detail necessary step needed to reach the "
    "conclusion, formatted as follows: <|begin_of_solution|> {final formatted, precise, and "
    "clear solution} <|end_of_solution|> Now, try to solve the following question through the "
    "above guidelines:"
)
# Figure 6 as printed in the paper: the same prompt with "analysing". Documentation only.
FIGURE_6_SYSTEM_PROMPT = STUDENT_SYSTEM_PROMPT.replace("analisying", "analysing")

# The RLT system prompt (Figure 7) as the authors' code has it (their
# STRATOS_STYLE_TEACHER_PROMPT), "analisying" included, and one space at its end (the figure
# shows it before <|im_end|>). The teachers are trained from scratch on it (teacher_sft), so
# only agreement with the authors' runs depends on the spelling.
TEACHER_SYSTEM_PROMPT = (
    "Your role as an assistant involves providing precise and accurate solutions before "
    "providing detailed explanations with your full work showing your systematic thinking "
    "process leading to each solution. Your explanations should show how you engaged in a "
    "comprehensive cycle of analysis, summarizing, exploration, reassessment, reflection, "
    "backtracing, and iteration to develop well-considered thinking process. Please structure "
    "your response into two main sections: Solution and Explanation. In the Solution section, "
    "present your well-thought solution that accurately answers the question. The solution "
    "should remain a logical, accurate, concise expression style and detail necessary step "
    "needed to reach the conclusion, formatted as follows: <|begin_of_solution|> {final "
    "formatted, precise, and clear solution} <|end_of_solution|>. In the Explanation section, "
    "comprehensively detail your reasoning process using the specified format: "
    "<|begin_of_explanation|> {explanation with steps separated with '\\n\\n'} "
    "<|end_of_explanation|> Each step should show detailed considerations leading to your "
    "solutions such as analisying questions, summarizing relevant findings, brainstorming new "
    "ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. "
)
# Figure 7 as printed in the paper ("analysing"). Documentation only.
FIGURE_7_SYSTEM_PROMPT = TEACHER_SYSTEM_PROMPT.replace("analisying", "analysing")

# SkyThought's instruction, which Bespoke-Stratos-17k prefixes to every math question: the
# students are distilled on questions that carry it, so every math question a student answers
# (corpus, LIMR, AIME24, MATH 500) carries it too (`student_question`).
MATH_INSTRUCTION = "Return your final response within \\boxed{}. "
# GPQA Diamond's variant (multiple choice, the letter in the box).
GPQA_INSTRUCTION = (
    "Return your final response within \\boxed{} and only include the letter choice "
    "(A, B, C, or D) as your final response. "
)

Message = dict[str, str]


class ChatTokenizer(Protocol):
    """What rendering needs from a tokenizer: a chat template (any HF tokenizer has this)."""

    chat_template: str | None

    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> Any:
        """Render `conversation` with the tokenizer's chat template."""
        ...


class FormatError(ValueError):
    """A text or tokenizer that does not fit the paper's formats."""


# --------------------------------------------------------------------------- assistant texts


# The blank line the format puts between every tag and the body it opens or closes.
# Table 2's "RL cold-start (GPT)" (section 4.3): what the refine_traces stage asks a chat model
# behind an OpenAI-compatible endpoint, per raw answer of a traditionally RL-trained model. This
# project's own text, following the strategy of SkyThought's conversion step (a thought kept
# word for word, one clean final solution; docs/paper_index.md). The answer comes back as JSON
# under a strict schema, which OpenAI's API and vLLM's server both enforce.
REFINE_SYSTEM_PROMPT = (
    "You restructure a model's answer to a question without changing what it says: its "
    "reasoning is kept word for word, and its final answer is stated once, cleanly."
)
REFINE_USER_PROMPT = """\
Below is a question and a model's answer to it, written without a fixed structure. Split the \
answer into two parts and return them as JSON with the keys "thought" and "solution".

- "thought": the reasoning of the answer, copied word for word: every step, including wrong \
turns, checks and corrections, with steps separated by blank lines. Do not summarise it, do \
not shorten it and do not add reasoning the answer does not contain.
- "solution": one final, precise and clear solution that states how the reasoning reaches \
its result, ending with the final answer as the answer gives it (in \\boxed{{}} when it has \
one). Only one solution.

Do not solve the question again yourself: if the answer is wrong, keep it wrong.

Question:
{question}

Answer to restructure:
{response}"""
REFINE_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "student_sample",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"thought": {"type": "string"}, "solution": {"type": "string"}},
            "required": ["thought", "solution"],
            "additionalProperties": False,
        },
    },
}
PADDING = "\n\n"
# The glue of the student format around its two bodies (Figure 6) ...
THOUGHT_OPEN = f"{BEGIN_THOUGHT}{PADDING}"
THOUGHT_TO_SOLUTION = f"{PADDING}{END_THOUGHT}\n\n{BEGIN_SOLUTION}{PADDING}"
SOLUTION_CLOSE = f"{PADDING}{END_SOLUTION}"
# ... and what follows the explanation in the RLT format (Figure 7).
EXPLANATION_CLOSE = f"{PADDING}{END_EXPLANATION}"


def student_assistant_text(thought: str, solution: str) -> str:
    """The student-format assistant turn (Figure 6): thought section, then solution section."""
    return f"{THOUGHT_OPEN}{thought}{THOUGHT_TO_SOLUTION}{solution}{SOLUTION_CLOSE}"


def teacher_prefill(solution: str) -> str:
    """The prefilled start of the teacher's assistant turn (Figure 7).

    Generation starts right after the returned text, which ends with
    `<|begin_of_explanation|>\\n\\n`.
    """
    return f"{BEGIN_SOLUTION}\n\n{solution}\n\n{END_SOLUTION}\n\n{BEGIN_EXPLANATION}\n\n"


def teacher_completion_text(explanation: str) -> str:
    """What the teacher is trained to generate after the prefill: explanation + closing tag."""
    return f"{explanation}{EXPLANATION_CLOSE}"


def teacher_assistant_text(solution: str, explanation: str) -> str:
    """The whole teacher assistant turn: prefill followed by the completion."""
    return teacher_prefill(solution) + teacher_completion_text(explanation)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class StudentParse:
    """A student-format text split on its tags; `missing` lists the tags not found."""

    thought: str | None
    solution: str | None
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when all four tags were found."""
        return not self.missing


@dataclass(frozen=True)
class TeacherParse:
    """A teacher completion (text generated after the prefill), split on the closing tag.

    `complete` is False when `<|end_of_explanation|>` is missing (the reward's format penalty
    fires, section 3.3); `explanation` then holds everything generated, for logging only.
    """

    explanation: str
    complete: bool

    @property
    def missing(self) -> tuple[str, ...]:
        """The closing tag when it is missing, else nothing."""
        return () if self.complete else (END_EXPLANATION,)


def _between(text: str, begin: str, end: str) -> str | None:
    start = text.find(begin)
    if start < 0:
        return None
    stop = text.find(end, start + len(begin))
    if stop < 0:
        return None
    return text[start + len(begin) : stop].strip()


def parse_student_text(text: str) -> StudentParse:
    """Split a student-format assistant text into thought and solution (inverse of
    `student_assistant_text` for bodies without surrounding whitespace)."""
    tags = (BEGIN_THOUGHT, END_THOUGHT, BEGIN_SOLUTION, END_SOLUTION)
    missing = tuple(tag for tag in tags if tag not in text)
    return StudentParse(
        thought=_between(text, BEGIN_THOUGHT, END_THOUGHT),
        solution=_between(text, BEGIN_SOLUTION, END_SOLUTION),
        missing=missing,
    )


def parse_teacher_completion(completion: str) -> TeacherParse:
    """Split the text a teacher generated after the prefill (section 3.2).

    Text after `<|end_of_explanation|>` (an end-of-turn token, say) is ignored.
    """
    stop = completion.find(END_EXPLANATION)
    if stop < 0:
        return TeacherParse(explanation=completion.strip(), complete=False)
    return TeacherParse(explanation=completion[:stop].strip(), complete=True)


# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class StudentSample:
    """One student distillation row: question, thought (from the teacher) and solution."""

    question: str
    thought: str
    solution: str

    @property
    def assistant_text(self) -> str:
        """The student-format assistant turn of this sample."""
        return student_assistant_text(self.thought, self.solution)


def teacher_output_to_student(question: str, solution: str, completion: str) -> StudentSample:
    """Turn a teacher completion into a student sample (section 3.2, Appendix B.1).

    The explanation body becomes the thought and the solution is appended back; no other
    processing. A completion without `<|end_of_explanation|>` cannot be converted: it raises
    `FormatError` (generation keeps such rows out of the dataset and counts them).
    """
    parsed = parse_teacher_completion(completion)
    if not parsed.complete:
        raise FormatError(
            f"teacher completion has no closing {END_EXPLANATION} tag (truncated or unformatted); "
            "it cannot become a student sample. Drop and count it, or raise the generation "
            "length limit."
        )
    return StudentSample(question=question, thought=parsed.explanation, solution=solution)


# --------------------------------------------------------------------------- chat messages


def student_system(system: str | None = None) -> str:
    """The student's system prompt: `system` when it is text (a corpus row's own, a model's
    recorded one), else (None, blank, a table's NaN) the default `STUDENT_SYSTEM_PROMPT`."""
    if isinstance(system, str) and system.strip():
        return system
    return STUDENT_SYSTEM_PROMPT


def student_question(question: str, instruction: str = MATH_INSTRUCTION) -> str:
    """The question as a student reads it: `instruction` (SkyThought's boxed instruction by
    default) prefixed once.

    A question that already carries the instruction (Bespoke-Stratos questions start with it,
    countdown questions end with it) is returned unchanged, so applying this twice is applying
    it once. The instruction is recognised without its final ". ".
    """
    core = instruction.strip().removesuffix(".")
    if core in question:
        return question
    return instruction + question


def student_messages(question: str, system: str | None = None) -> list[Message]:
    """System (`student_system(system)`, Figure 6) and user turns of the student format."""
    return [
        {"role": "system", "content": student_system(system)},
        {"role": "user", "content": question},
    ]


def teacher_messages(question: str) -> list[Message]:
    """System (Figure 7) and user turns of the RLT format."""
    return [
        {"role": "system", "content": TEACHER_SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


def _generation_prompt(tokenizer: ChatTokenizer, messages: list[Message]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise FormatError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
            "the RLT and student formats are chat conversations. Use an instruct model's "
            "tokenizer (Qwen2.5-*-Instruct, SmolLM2-*-Instruct) or set tokenizer.chat_template."
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)


def render_student_prompt(
    tokenizer: ChatTokenizer, question: str, system: str | None = None
) -> str:
    """The student prompt as text, ending where the assistant's answer starts; `system` is the
    row's or the model's own system prompt (None: the default, `student_system`)."""
    return _generation_prompt(tokenizer, student_messages(question, system))


def render_teacher_prompt(tokenizer: ChatTokenizer, question: str, solution: str) -> str:
    """The teacher prompt as text: system, user and the PREFILLED assistant start (Figure 7).

    It ends with `<|begin_of_explanation|>\\n\\n`, where the teacher's generation starts.
    """
    return _generation_prompt(tokenizer, teacher_messages(question)) + teacher_prefill(solution)


def render_teacher_prompts(tokenizer: ChatTokenizer, rows: Any) -> list[str]:
    """`render_teacher_prompt` of every row of a table with `question` and `solution` columns
    (the prompts of teacher_rl, generate_traces, rank_traces and teacher_eval)."""
    return [
        render_teacher_prompt(tokenizer, question, solution)
        for question, solution in zip(rows["question"], rows["solution"], strict=True)
    ]
