"""Chunked log-probs and full KL against an unchunked reference on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlt_core.logprobs import (
    TILE_ELEMENTS,
    chunked_full_kl,
    full_kl_from_hidden,
    logprobs_from_hidden,
    pack_left,
    position_ids_from_mask,
    token_logprobs,
)

VOCAB, T = 256, 10


def _tiny_llama(seed: int, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return _tiny_llama(0)


@pytest.fixture(scope="module")
def other_model() -> LlamaForCausalLM:
    return _tiny_llama(1)


def _padded_batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """3 rows of 10, 7 and 4 real tokens, padded on `side` with token 0."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for row, length in enumerate((10, 7, 4)):
        span = slice(T - length, T) if side == "left" else slice(0, length)
        ids[row, span] = torch.randint(1, VOCAB, (length,), generator=gen)
        mask[row, span] = 1
    return ids, mask


def _full_logprobs(model, ids, mask, temperature=1.0) -> torch.Tensor:
    """The naive reference: full (B, T, V) logits, log_softmax, gather, zero the padding."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    logp = torch.log_softmax(logits.logits.float() / temperature, dim=-1)[:, :-1]
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return picked * (mask[:, :-1] * mask[:, 1:])


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, T])
def test_chunked_equals_full_logits(model, chunk_size, side, temperature):
    ids, mask = _padded_batch(side)
    with torch.inference_mode():
        got = token_logprobs(model, ids, mask, temperature=temperature, chunk_size=chunk_size)
        want = _full_logprobs(model, ids, mask, temperature)
    assert got.shape == (3, T - 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_left_padding_scores_like_no_padding(model):
    ids, mask = _padded_batch("left")
    with torch.inference_mode():
        batched = token_logprobs(model, ids, mask, chunk_size=4)
        alone = token_logprobs(model, ids[2:, 6:], mask[2:, 6:])  # row 2 without its padding
    # Row 2 has 4 real tokens at 6..9: its 3 scores sit at output columns 6..8.
    torch.testing.assert_close(batched[2, 6:], alone[0], atol=1e-5, rtol=0)
    assert batched[2, :6].abs().sum() == 0


def test_positions_restrict_the_scored_span(model):
    ids, mask = _padded_batch("right")
    positions = torch.zeros(3, T - 1, dtype=torch.bool)
    positions[:, 2:5] = True  # predictions of tokens 3..5
    with torch.inference_mode():
        got = token_logprobs(model, ids, mask, positions=positions, chunk_size=2)
        want = _full_logprobs(model, ids, mask) * positions
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"positions has shape \(3, 10\)"):
        token_logprobs(model, ids, mask, positions=torch.ones(3, T, dtype=torch.bool))


def test_gradients_match_the_unchunked_reference(model):
    ids, mask = _padded_batch("left")
    model.zero_grad()
    token_logprobs(model, ids, mask, chunk_size=3).sum().backward()
    chunked = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _full_logprobs(model, ids, mask).sum().backward()
    for name, param in model.named_parameters():
        assert chunked[name].abs().sum() > 0, f"no gradient reached {name}"
        torch.testing.assert_close(chunked[name], param.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_vocabulary_tiled_path_equals_the_plain_path(temperature):
    # 2,100 rows in chunks of 2,048 (a full chunk, then 52 rows) over a vocabulary of 5,000:
    # the tile holds TILE_ELEMENTS // 2048 = 2^22 / 2^11 = 2,048 columns, so 3 tiles per chunk
    # (2 of 2,048 and a last one of 5,000 - 4,096 = 904). Logits / tau pass fp32 exp's range.
    assert TILE_ELEMENTS // 2048 == 2048
    gen = torch.Generator().manual_seed(5)
    head = torch.nn.Linear(8, 5000, bias=False)
    torch.nn.init.normal_(head.weight, generator=gen)
    hidden = 10 * torch.randn(2100, 8, generator=gen)
    targets = torch.randint(0, 5000, (2100,), generator=gen)
    with torch.no_grad():  # no gradients, CPU, fp32 bias-free Linear: the tiled path
        tiled = logprobs_from_hidden(
            hidden, targets, head, temperature=temperature, chunk_size=2048
        )
    with torch.enable_grad():  # gradients on (hidden needs none): the plain chunked path
        plain = logprobs_from_hidden(
            hidden, targets, head, temperature=temperature, chunk_size=2048
        )
    assert plain.requires_grad and not tiled.requires_grad  # two different code paths ran
    logits = (hidden.double() @ head.weight.detach().double().t()) / temperature  # fp64 reference
    want = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    assert logits.abs().max() > 89  # exp(89) overflows fp32: the running max must shift it
    # log p = logit - logsumexp cancels two fp32 numbers as large as max|logit| (~300 here),
    # so both fp32 paths are only good to a few ulps of it: 4 x 1.2e-7 x 300 = 1.4e-4.
    atol = 4 * torch.finfo(torch.float32).eps * float(logits.abs().max())
    torch.testing.assert_close(tiled.double(), want, atol=atol, rtol=0)
    torch.testing.assert_close(tiled, plain.detach(), atol=atol, rtol=0)


def test_tiled_path_handles_an_empty_selection():
    head = torch.nn.Linear(4, 300, bias=False)
    with torch.no_grad():
        got = logprobs_from_hidden(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), head)
    assert got.shape == (0,) and got.dtype == torch.float32


def _think_batches() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Teacher rows hold a 5-token prefix before the shared think span; student rows 2 tokens.

    Row 0 has 4 think tokens, row 1 has 2 (its teacher side is left padded).
    """
    gen = torch.Generator().manual_seed(3)
    think = torch.randint(1, VOCAB, (2, 4), generator=gen)
    t_ids, s_ids = torch.zeros(2, 9, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long)
    t_mask, s_mask = torch.ones(2, 9, dtype=torch.long), torch.ones(2, 6, dtype=torch.long)
    t_ids[:, :5] = torch.randint(1, VOCAB, (2, 5), generator=gen)
    s_ids[:, :2] = torch.randint(1, VOCAB, (2, 2), generator=gen)
    t_ids[:, 5:], s_ids[:, 2:] = think, think
    t_mask[1, :2] = 0  # left padding on the teacher side of row 1
    t_pos, s_pos = torch.zeros(2, 8, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)
    t_pos[0, 4:8], s_pos[0, 1:5] = True, True  # predictions of the 4 think tokens
    t_pos[1, 4:6], s_pos[1, 1:3] = True, True  # only the first 2 think tokens of row 1
    teacher = {"input_ids": t_ids, "attention_mask": t_mask, "positions": t_pos}
    student = {"input_ids": s_ids, "attention_mask": s_mask, "positions": s_pos}
    return teacher, student


def _direct_kl(model_p, batch_p, model_q, batch_q) -> torch.Tensor:
    """Full logits of both sides, log_softmax, pick the aligned rows, sum p (log p - log q)."""
    sides = []
    for model, batch in ((model_p, batch_p), (model_q, batch_q)):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
        )
        sides.append(torch.log_softmax(out.logits[:, :-1].float() / 0.7, -1)[batch["positions"]])
    log_p, log_q = sides
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def test_full_kl_equals_direct_computation(model, other_model):
    teacher, student = _think_batches()
    with torch.inference_mode():
        kl, kl_mask = chunked_full_kl(
            model, teacher, other_model, student, temperature=0.7, chunk_size=3
        )
        want = _direct_kl(model, teacher, other_model, student)
    assert kl_mask.tolist() == [[True] * 4, [True, True, False, False]]
    torch.testing.assert_close(kl[kl_mask], want, atol=1e-5, rtol=1e-5)
    assert (kl[kl_mask] > 0).all() and kl[1, 2:].abs().sum() == 0


def test_full_kl_is_zero_for_the_same_model_and_context(model):
    teacher, _ = _think_batches()
    with torch.inference_mode():
        kl, kl_mask = chunked_full_kl(model, teacher, model, teacher, chunk_size=2)
    torch.testing.assert_close(kl, torch.zeros_like(kl), atol=1e-6, rtol=0)
    assert kl_mask.sum() == 6


def test_full_kl_gradients_reach_the_teacher_only(model, other_model):
    teacher, student = _think_batches()
    model.zero_grad()
    other_model.zero_grad()
    kl, kl_mask = chunked_full_kl(model, teacher, other_model, student, chunk_size=3)
    kl[kl_mask].sum().backward()
    chunked = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(p.grad is None for p in other_model.parameters())
    model.zero_grad()
    # Reference: the direct full-logits KL at the default temperature 1.0, the student side
    # without gradient (its distribution does not depend on the teacher's weights).
    with torch.no_grad():
        log_q = torch.log_softmax(
            other_model(input_ids=student["input_ids"]).logits[:, :-1].float(), -1
        )[student["positions"]]
    logits_p = model(
        input_ids=teacher["input_ids"],
        attention_mask=teacher["attention_mask"],
        position_ids=position_ids_from_mask(teacher["attention_mask"]),
    ).logits
    log_p = torch.log_softmax(logits_p[:, :-1].float(), -1)[teacher["positions"]]
    (log_p.exp() * (log_p - log_q)).sum().backward()
    for name, param in model.named_parameters():
        assert chunked[name].abs().sum() > 0, f"no gradient reached {name}"
        torch.testing.assert_close(chunked[name], param.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_full_kl_rejects_misaligned_spans(model, other_model):
    teacher, student = _think_batches()
    student["positions"] = student["positions"].clone()
    student["positions"][1, 3] = True  # row 1: 2 teacher positions, 3 student positions
    with pytest.raises(ValueError, match="row 1 selects 2 positions in batch_p but 3"):
        chunked_full_kl(model, teacher, other_model, student)


def test_full_kl_rejects_different_vocabularies(model):
    small = _tiny_llama(2, vocab=128)
    hidden = torch.randn(3, 32)
    with pytest.raises(ValueError, match="vocabularies of 256 and 128"):
        full_kl_from_hidden(hidden, model.lm_head, hidden, small.lm_head)


def test_pack_left_aligns_spans_at_different_offsets():
    values = torch.tensor([[9.0, 1.0, 2.0, 9.0], [3.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    packed, packed_mask = pack_left(values, mask)
    # row 0 keeps [1, 2]; row 1 keeps [3] then a zero pad
    torch.testing.assert_close(packed, torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    assert packed_mask.tolist() == [[True, True], [True, False]]
