"""Corpus rows -> tokenized prompt/completion examples for TRL's SFTTrainer.

Both SFT stages train on (prompt, completion) pairs with the loss on the completion only:

- teacher_sft (Appendix A.1, Figure 7): prompt = the RLT system prompt, the question and the
  PREFILLED assistant start (`<|begin_of_solution|> ... <|begin_of_explanation|>\\n\\n`);
  completion = the explanation (the corpus' thought), `<|end_of_explanation|>` and the chat
  template's end of turn.
- student_sft (Table 5, Figure 6): prompt = the student system prompt and the question;
  completion = the thought and solution sections and the end of turn. A row with a `response`
  (a model's raw answer, `rlt_core.stages.raw_traces`) is trained on that text verbatim
  instead, whatever its format: raw outputs are distilled as they are (Table 2).

Why text prompts built with `apply_chat_template(..., add_generation_prompt=True)` + prefill,
and not TRL's conversational prompt/completion: a conversational completion is a whole
assistant message, so the teacher's prefilled solution would sit in the completion and be
trained on; TRL renders the prompt with a generation prompt and cannot continue a partial
assistant turn. As text, the prefill is part of the prompt and the loss covers only what the
teacher generates at RL time.

Why we tokenize prompt and completion separately (and hand TRL `input_ids` + `completion_mask`
instead of strings): BPE merges across the boundary. SmolLM2's tokenizer turns the prefill's
final "\\n\\n" into one token when the prompt stands alone (as at generation time) but into two
when the explanation follows, so tokenizing the joined text would train the teacher on a
context it never sees at RL time. Separate tokenization (no special tokens added: the
template's text already holds them) gives exactly the prompt ids of generation, as TRL's own
vision collator does. TRL then builds labels from the mask (`completion_only_loss=True`) and
cuts sequences to `max_length`.

One example, one tokenisation: `student_example` / `teacher_example` build the text of one row
and `encode_examples` tokenises it; the SFT stages and the RLT reward both go through them, so
the student the reward scores reads exactly the ids student_sft trained it on (the completion
in ONE piece: the thought and solution sections with their tags and the end of turn), and the
teacher's text path reads the ids teacher_sft trained on. `EncodedExample.span` locates a
section's tokens in those ids by character offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from rlt_core import formats
from rlt_core.data import read_table, row_systems, seeded_subset
from rlt_core.data.sources import is_text, require_columns
from rlt_core.data.validation import none_if_missing

logger = logging.getLogger(__name__)

SFT_COLUMNS = ("id", "question", "solution", "thought")
RESPONSE = "response"  # optional: the assistant turn verbatim (raw traces), else thought+solution
_SENTINEL = "RLT_END_OF_TURN_PROBE"


def read_sft_rows(
    source: str | Path, *, num_rows: int | None, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read SFT rows (columns id, question, solution, thought), keep those with a thought (or,
    in a table with a `response` column, a response).

    A row without either has nothing to train on (the thought is the teacher's explanation
    and the student's think section): such rows are dropped and counted. With `num_rows` below
    the rows left, the seeded subset of `rlt_core.data.seeded_subset` is kept (the same rows the
    data stage picks for that size and seed). Returns the rows and counts of what happened.
    """
    table = read_table(str(source))
    require_columns(
        table,
        SFT_COLUMNS,
        source=str(source),
        hint="SFT reads the corpus contract (rlt_core.data.corpus): write the table with the "
        "data stage or generate_traces, or rename your columns to these.",
    )
    has_thought = table["thought"].map(none_if_missing).map(is_text)
    if RESPONSE in table.columns:
        has_thought |= table[RESPONSE].map(none_if_missing).map(is_text)
    rows = table[has_thought].reset_index(drop=True)
    if rows.empty:
        raise ValueError(
            f"{source}: none of its {len(table)} rows has a thought; SFT trains on the thought "
            "(explanation / think section). Use a corpus with reasoning traces (e.g. "
            "Bespoke-Stratos-17k, countdown) or the output of generate_traces."
        )
    stats = {"rows_read": len(table), "dropped_no_thought": len(table) - len(rows)}
    if stats["dropped_no_thought"]:
        logger.warning("%s: dropped %d rows without a thought", source, stats["dropped_no_thought"])
    if num_rows is not None and num_rows < len(rows):
        rows = seeded_subset(rows, num_rows, seed)
    elif num_rows is not None and num_rows > len(rows):
        logger.warning("%s: %d rows asked, %d available; using all", source, num_rows, len(rows))
    stats["rows_used"] = len(rows)
    return rows, stats


def trained_system_prompt(rows: pd.DataFrame) -> tuple[str, int]:
    """The student system prompt of `rows` (each row's own, else the default) and how many
    distinct prompts they hold; with several, the most frequent one (a warning says so)."""
    counts = pd.Series([formats.student_system(s) for s in row_systems(rows)]).value_counts()
    if len(counts) > 1:
        logger.warning(
            "the training rows carry %d different system prompts; the student records the most "
            "frequent one (%d of %d rows) for RL and evaluation",
            len(counts), int(counts.iloc[0]), len(rows),
        )  # fmt: skip
    return str(counts.index[0]), len(counts)


def end_of_turn(tokenizer: Any) -> str:
    """The text the chat template closes an assistant turn with (ChatML: `<|im_end|>`).

    Found by rendering a probe conversation, so any template works; trailing whitespace is left
    out (the model must learn to stop, not to print the newline after the stop token).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise formats.FormatError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
            "SFT renders the RLT and student formats as chat turns. Use an instruct model's "
            "tokenizer (Qwen2.5-*-Instruct, SmolLM2-*-Instruct) or set tokenizer.chat_template."
        )
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}]
    text = str(tokenizer.apply_chat_template(probe, tokenize=False))
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL) :].rstrip()
    return tail or str(tokenizer.eos_token)


@dataclass(frozen=True)
class SFTExample:
    """One SFT example as text, with the characters of its sections.

    `prompt` is the rendered context (chat template, and for the teacher the prefill);
    `completion` is what the loss covers, ending with the chat template's end of turn.
    `thought` and `solution` are character slices of `completion`: the thought (student) or
    explanation (teacher) section and the solution section (student format only), each from
    tag to tag, the format's blank lines included. The teacher's explanation section starts in
    the prompt: its first `thought_lead` characters (the prefill's blank line) end the prompt.
    """

    prompt: str
    completion: str
    thought: slice
    solution: slice | None = None
    thought_lead: int = 0


def student_example(
    tokenizer: Any,
    question: str,
    thought: str,
    solution: str,
    *,
    system: str | None = None,
    eot: str | None = None,
) -> SFTExample:
    """The student-format example of one row (Figure 6): what student_sft trains on and what
    the RLT reward's student reads. `system` is the row's own system prompt (None: the
    default); `eot` defaults to `end_of_turn(tokenizer)`.

    `thought` and `solution` are the sections from tag to tag: the body with the blank line
    the format puts on each side of it (`formats.PADDING`), as the authors' reward takes them.
    """
    eot = end_of_turn(tokenizer) if eot is None else eot
    start = len(formats.BEGIN_THOUGHT)
    stop = len(formats.THOUGHT_OPEN) + len(thought) + len(formats.PADDING)
    solution_start = stop + len(formats.THOUGHT_TO_SOLUTION) - 2 * len(formats.PADDING)
    solution_stop = solution_start + 2 * len(formats.PADDING) + len(solution)
    return SFTExample(
        prompt=formats.render_student_prompt(tokenizer, question, system),
        completion=formats.student_assistant_text(thought, solution) + eot,
        thought=slice(start, stop),
        solution=slice(solution_start, solution_stop),
    )


def teacher_example(
    tokenizer: Any, question: str, solution: str, explanation: str, *, eot: str | None = None
) -> SFTExample:
    """The RLT-format example of one row (Figure 7): the prompt ends with the prefilled
    solution, the completion is the explanation, its closing tag and the end of turn."""
    eot = end_of_turn(tokenizer) if eot is None else eot
    return SFTExample(
        prompt=formats.render_teacher_prompt(tokenizer, question, solution),
        completion=formats.teacher_completion_text(explanation) + eot,
        thought=slice(0, len(explanation) + len(formats.PADDING)),
        thought_lead=len(formats.PADDING),
    )


def teacher_pairs(tokenizer: Any, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(prompts, completions) in the RLT format (Figure 7): loss on the explanation only."""
    eot = end_of_turn(tokenizer)
    examples = [
        teacher_example(tokenizer, q, s, t, eot=eot)
        for q, s, t in zip(rows["question"], rows["solution"], rows["thought"], strict=True)
    ]
    return [e.prompt for e in examples], [e.completion for e in examples]


def student_pairs(tokenizer: Any, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(prompts, completions) in the student format (Figure 6): loss on the assistant turn. A
    row's `response`, when the table has one and it is text, is the assistant turn verbatim."""
    eot = end_of_turn(tokenizer)
    responses = rows[RESPONSE] if RESPONSE in rows.columns else [None] * len(rows)
    prompts, completions = [], []
    for q, t, s, r, system in zip(rows["question"], rows["thought"], rows["solution"], responses,
                                  row_systems(rows), strict=True):  # fmt: skip
        if is_text(none_if_missing(r)):
            prompts.append(formats.render_student_prompt(tokenizer, q, system))
            completions.append(str(r) + eot)
        else:
            example = student_example(tokenizer, q, t, s, system=system, eot=eot)
            prompts.append(example.prompt)
            completions.append(example.completion)
    return prompts, completions


@dataclass(frozen=True)
class EncodedExample:
    """An example's token ids as the SFT stages train on them: the prompt and the completion
    each tokenised alone, without added special tokens, then joined (`input_ids`).

    `prompt_offsets` / `completion_offsets` hold the (start, end) characters of each token in
    its own text, when asked for (`encode_examples(..., offsets=True)`).
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_offsets: list[tuple[int, int]] | None = None
    prompt_offsets: list[tuple[int, int]] | None = None

    @property
    def input_ids(self) -> list[int]:
        """The ids of the whole example (prompt then completion)."""
        return self.prompt_ids + self.completion_ids

    def span(self, chars: slice, *, lead: slice | None = None) -> slice:
        """The `input_ids` slice of the tokens lying wholly inside a section.

        The section is the completion's characters `chars`, preceded, when given, by the
        prompt's characters `lead` (the prefill's blank line that opens the teacher's
        explanation). A token that also holds a character outside (Qwen's "|>\n\n", merging a
        tag with the blank line after it) is not in the section: these are the tokens of the
        section's text, as the authors' reward takes them. A section without a whole token
        gives an empty slice where it would start.
        """
        if self.completion_offsets is None or (lead and self.prompt_offsets is None):
            raise ValueError("this example was encoded without offsets: use offsets=True")
        base = len(self.prompt_ids)
        inside = [base + i for i in _whole_tokens(self.completion_offsets, chars)]
        if lead is not None and (not inside or inside[0] == base):
            assert self.prompt_offsets is not None
            head = _whole_tokens(self.prompt_offsets, lead)
            if head and head[-1] == base - 1:  # the prompt's last tokens, next to the completion
                inside = [head[0], *(inside or [base - 1])]
        if inside:
            return slice(inside[0], inside[-1] + 1)
        after = [i for i, (start, _) in enumerate(self.completion_offsets) if start >= chars.start]
        at = base + (after[0] if after else len(self.completion_offsets))
        return slice(at, at)


def _whole_tokens(offsets: Sequence[tuple[int, int]], chars: slice) -> list[int]:
    """Indices of the tokens whose characters all lie in `chars` (empty tokens excluded)."""
    return [
        i
        for i, (start, end) in enumerate(offsets)
        if chars.start <= start and end <= chars.stop and end > start
    ]


def encode_examples(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *, offsets: bool = False
) -> list[EncodedExample]:
    """Tokenise each prompt and each completion alone (no special tokens: the chat template's
    text holds them) — the one tokenisation of SFT examples, shared by the RLT reward.

    `offsets=True` also records each token's characters (needs a fast tokenizer).
    """
    encoded_prompts = tokenizer(
        list(prompts), add_special_tokens=False, return_offsets_mapping=offsets
    )
    encoded = tokenizer(list(completions), add_special_tokens=False, return_offsets_mapping=offsets)
    none = [None] * len(encoded_prompts["input_ids"])
    spans = encoded["offset_mapping"] if offsets else none
    prompt_spans = encoded_prompts["offset_mapping"] if offsets else none
    return [
        EncodedExample(
            list(prompt),
            list(completion),
            None if span is None else [tuple(o) for o in span],
            None if prompt_span is None else [tuple(o) for o in prompt_span],
        )
        for prompt, completion, span, prompt_span in zip(
            encoded_prompts["input_ids"], encoded["input_ids"], spans, prompt_spans, strict=True
        )
    ]


def tokenize_pairs(
    tokenizer: Any, prompts: list[str], completions: list[str], max_length: int
) -> tuple[Dataset, dict[str, int]]:
    """Tokenize each side alone and join (`encode_examples`): a dataset of `input_ids` and
    `completion_mask`.

    Counts what `max_length` does (TRL cuts the sequences, keeping the start): `truncated` rows
    lose the end of their completion; rows whose prompt alone fills `max_length` keep no
    completion token, so they are dropped here and counted (`dropped_prompt_too_long`).
    """
    columns: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    stats = {"examples": 0, "truncated": 0, "dropped_prompt_too_long": 0, "longest_tokens": 0}
    for example in encode_examples(tokenizer, prompts, completions):
        prompt, completion = example.prompt_ids, example.completion_ids
        if len(prompt) >= max_length:
            stats["dropped_prompt_too_long"] += 1
            continue
        length = len(prompt) + len(completion)
        stats["truncated"] += length > max_length
        stats["longest_tokens"] = max(stats["longest_tokens"], length)
        columns["input_ids"].append(prompt + completion)
        columns["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
    stats["examples"] = len(columns["input_ids"])
    if not stats["examples"]:
        raise ValueError(
            f"every prompt is at least max_length={max_length} tokens, so no completion token "
            "is left to train on; raise the recipe's max_length."
        )
    if stats["truncated"]:
        logger.warning(
            "%d of %d examples cut to %d tokens", stats["truncated"], len(prompts), max_length
        )
    return Dataset.from_dict(columns), stats
