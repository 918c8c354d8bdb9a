"""Corpus rows -> tokenized prompt/completion examples for TRL's SFTTrainer.

Both SFT stages train on (prompt, completion) pairs with the loss on the completion only:

- teacher_sft (Appendix A.1, Figure 7): prompt = the RLT system prompt, the question and the
  PREFILLED assistant start (`<|begin_of_solution|> ... <|begin_of_explanation|>\\n\\n`);
  completion = the explanation (the corpus' thought), `<|end_of_explanation|>` and the chat
  template's end of turn.
- student_sft (Table 5, Figure 6): prompt = the student system prompt and the question;
  completion = the thought and solution sections and the end of turn.

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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from rlt_core import formats
from rlt_core.data import read_table, seeded_subset
from rlt_core.data.sources import require_columns
from rlt_core.data.validation import none_if_missing

logger = logging.getLogger(__name__)

SFT_COLUMNS = ("id", "question", "solution", "thought")
_SENTINEL = "RLT_END_OF_TURN_PROBE"


def read_sft_rows(
    source: str | Path, *, num_rows: int | None, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read SFT rows (columns id, question, solution, thought), keep those with a thought.

    A row without a thought has nothing to train on (the thought is the teacher's explanation
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
    thoughts = table["thought"].map(none_if_missing)
    has_thought = thoughts.map(lambda t: isinstance(t, str) and bool(t.strip()))
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


def teacher_pairs(tokenizer: Any, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(prompts, completions) in the RLT format (Figure 7): loss on the explanation only."""
    eot = end_of_turn(tokenizer)
    prompts = [
        formats.render_teacher_prompt(tokenizer, q, s)
        for q, s in zip(rows["question"], rows["solution"], strict=True)
    ]
    completions = [formats.teacher_completion_text(t) + eot for t in rows["thought"]]
    return prompts, completions


def student_pairs(tokenizer: Any, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(prompts, completions) in the student format (Figure 6): loss on the assistant turn."""
    eot = end_of_turn(tokenizer)
    prompts = [formats.render_student_prompt(tokenizer, q) for q in rows["question"]]
    completions = [
        formats.student_assistant_text(t, s) + eot
        for t, s in zip(rows["thought"], rows["solution"], strict=True)
    ]
    return prompts, completions


def tokenize_pairs(
    tokenizer: Any, prompts: list[str], completions: list[str], max_length: int
) -> tuple[Dataset, dict[str, int]]:
    """Tokenize each side alone and join: a dataset of `input_ids` and `completion_mask`.

    Counts what `max_length` does (TRL cuts the sequences, keeping the start): `truncated` rows
    lose the end of their completion; rows whose prompt alone fills `max_length` keep no
    completion token, so they are dropped here and counted (`dropped_prompt_too_long`).
    """
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    columns: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    stats = {"examples": 0, "truncated": 0, "dropped_prompt_too_long": 0, "longest_tokens": 0}
    for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
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
