"""Per-token log-probs and exact full-vocabulary KL for long sequences, chunk by chunk.

The RLT reward (paper section 3.3, Eq. 3 and 4) needs, for every completion, the student's
log-probs of the solution tokens and a per-token divergence between teacher and student on the
think tokens. With Qwen's vocabulary (V = 151,936) and 16K-token completions, the full logits of
one sequence in fp32 take 16,384 x 151,936 x 4 B = 10 GB, so nothing here materialises the
(B, T, V) logits. The model body runs once to give hidden states (B, T, H); the output head is
then applied to chunks of at most `chunk_size` scored positions, divided by the temperature,
reduced in fp32 and discarded. Peak extra memory is O(chunk_size x V) whatever T is.

Only the positions that matter are scored: real tokens (both ends inside the attention mask)
and, when given, a boolean `positions` mask (the think or solution span). Padding costs no head
matmul at all. When gradients are enabled (the teacher side of the RL loss) each chunk runs
under activation checkpointing, so the backward pass also holds one chunk's logits at a time.

Without gradients, on CPU, with an fp32 bias-free linear head (the scoring path of the reward),
the vocabulary is also cut into tiles of 16 MiB of logits that live in one reused buffer:
each tile is reduced to its max and its sum of exponentials (an online logsumexp), so no
(chunk, V) tensor is ever allocated. On CPU that matters more than the FLOPs: every fresh
(chunk, V) tensor is mmapped, page-faulted in and unmapped again by glibc, and a tile that stays
in cache is read four times for the price of one trip to memory.

Layout: `out[:, t]` scores `input_ids[:, t + 1]` given tokens `<= t`, shape (B, T - 1).
Position ids come from the attention mask (`cumsum - 1`), so a left-padded row scores exactly
like the same row without padding.

Deliberate simplification: the head is `model.get_output_embeddings()` applied as is; models
that post-process logits inside `forward` (soft-capping, logit scaling) are not supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

Head = Callable[[torch.Tensor], torch.Tensor]

# fp32 logits per vocabulary tile on the no-grad CPU path: 2^22 x 4 B = 16 MiB, reused and so
# kept in the last-level cache. 1 MiB tiles were ~15% faster on a quiet 2-core machine, but five
# parallel regions per tile then made the path collapse when another process held a core.
TILE_ELEMENTS = 1 << 22


@contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """`module`'s parameters whole for the duration when DeepSpeed ZeRO-3 partitions them (they
    carry `ds_id`), else nothing.

    The output head is read here as a matrix, outside its own forward, and DeepSpeed's hooks
    gather a sharded model's weights only around a module's forward: under the paper's ZeRO-3
    launch the live policy's head would be an empty shard. `deepspeed.zero.GatheredParameters`
    is a collective, so every process must enter it the same number of times: the reward
    scores the same number of batches on every rank.
    """
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) that count only real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def hidden_states(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Run a Hugging Face causal LM's body once and return its last hidden states (B, T, H).

    The body is `model.get_decoder()` (for Llama/Qwen: `model.model`, final norm included), so
    the (B, T, V) logits of `model(...)` are never computed.
    """
    body = model.get_decoder()
    out = body(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def scored_positions(
    attention_mask: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean (B, T - 1) mask of the next-token predictions worth scoring.

    A position t counts when both token t and token t + 1 are real tokens and, if `positions`
    (B, T - 1) is given, when `positions[:, t]` is True.
    """
    mask = attention_mask.bool()
    valid = mask[:, :-1] & mask[:, 1:]
    if positions is None:
        return valid
    if positions.shape != valid.shape:
        raise ValueError(
            f"positions has shape {tuple(positions.shape)} but the batch needs "
            f"{tuple(valid.shape)} (B, T - 1): positions[:, t] selects the prediction of token "
            "t + 1; drop the last column of a per-token mask to build it."
        )
    return valid & positions.bool()


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: Head, temperature: float
) -> torch.Tensor:
    # hidden (C, H), targets (C,) -> (C,) fp32 log p(target). The in-place division keeps one
    # (C, V) fp32 logits tensor (plus logsumexp's own workspace) instead of two.
    logits = head(hidden).float().div_(temperature)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def logprobs_from_hidden(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: Head,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Log-probs (N,) fp32 of `targets` (N,) under `head(hidden) / temperature`, hidden (N, H).

    Rows are processed `chunk_size` at a time; with gradients enabled each chunk is
    checkpointed (recomputed in backward) so its (chunk, V) logits are not kept for backward.
    Without gradients an fp32 `nn.Linear` head on CPU takes the vocabulary-tiled path
    (`_tiled_logprobs`), equal to the plain one up to fp32 rounding.
    """
    _check_scoring_args(temperature, chunk_size)
    if _tiled_path_applies(hidden, head):
        return _tiled_logprobs(hidden, targets, head.weight, temperature, chunk_size)
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_logprobs, h, y, head, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, y, head, temperature))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)


def _tiled_path_applies(hidden: torch.Tensor, head: Head) -> bool:
    """True when the buffer-reusing, vocabulary-tiled path can score `hidden` with `head`."""
    return (
        not torch.is_grad_enabled()
        and hidden.device.type == "cpu"
        and isinstance(head, nn.Linear)
        and head.bias is None
        and head.weight.dtype == torch.float32
    )


def _tiled_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> torch.Tensor:
    """No-grad log p(target) (N,) fp32 with one reused (chunk, tile) logits buffer.

    log p(y) = h.w_y / tau - logsumexp_v(h.w_v / tau); the hidden rows are divided by tau once
    (the same logits up to fp32 rounding) and the logsumexp is built tile by tile.
    """
    rows = min(chunk_size, hidden.shape[0])
    cols = min(weight.shape[0], max(128, TILE_ELEMENTS // max(rows, 1)))
    buf = torch.empty(rows, cols, dtype=torch.float32)
    out = torch.empty(hidden.shape[0], dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        h = hidden[start : start + chunk_size].float() / temperature  # (C, H)
        picked = (h * weight[targets[start : start + chunk_size]]).sum(-1)  # (C,) target logits
        out[start : start + h.shape[0]] = picked - _tiled_logsumexp(h, weight, buf)
    return out


def _tiled_logsumexp(h: torch.Tensor, weight: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """logsumexp over the vocabulary of h @ weight.T (C,), one `buf`-sized tile at a time.

    Each tile keeps its max m_j and s_j = sum exp(logit - m_j); then
    logsumexp = M + log sum_j s_j exp(m_j - M) with M = max_j m_j (exact, no overflow).
    """
    rows, cols = h.shape[0], buf.shape[1]
    n_tiles = math.ceil(weight.shape[0] / cols)
    maxes = torch.empty(rows, n_tiles, dtype=torch.float32)
    sums = torch.empty(rows, n_tiles, dtype=torch.float32)
    for j in range(n_tiles):
        w = weight[j * cols : (j + 1) * cols]
        tile = buf[:rows, : w.shape[0]]
        torch.mm(h, w.t(), out=tile)
        top = tile.amax(-1, keepdim=True)  # (C, 1)
        maxes[:, j] = top.squeeze(-1)
        torch.sum(tile.sub_(top).exp_(), -1, out=sums[:, j])
    overall = maxes.amax(-1, keepdim=True)  # (C, 1)
    return overall.squeeze(-1) + (sums * (maxes - overall).exp_()).sum(-1).log_()


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token log-probs (B, T - 1) fp32 of a padded batch, never holding (B, T, V) logits.

    `out[:, t] = log softmax(logits_t / temperature)[input_ids[:, t + 1]]`; positions that are
    padding, or outside `positions` (B, T - 1) when given, are 0. Left or right padding both
    work (position ids follow the attention mask). Gradients flow when the caller has them
    enabled; wrap the call in `torch.inference_mode()` to score without them. These are the
    log pi(t) of Eq. 3 (student, solution tokens) and of the sampled-token KL of Eq. 4.
    """
    _check_batch(input_ids, attention_mask)
    hidden = hidden_states(model, input_ids, attention_mask)  # (B, T, H)
    valid = scored_positions(attention_mask, positions)  # (B, T - 1)
    rows = hidden[:, :-1][valid]  # (N, H)
    targets = input_ids[:, 1:][valid]  # (N,)
    head = model.get_output_embeddings()
    with gathered(head):  # read as a matrix: whole also when ZeRO-3 shards it
        picked = logprobs_from_hidden(
            rows, targets, head, temperature=temperature, chunk_size=chunk_size
        )
    out = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
    return out.masked_scatter(valid, picked)


def _chunk_kl(
    hidden_p: torch.Tensor, hidden_q: torch.Tensor, head_p: Head, head_q: Head, temperature: float
) -> torch.Tensor:
    # (C, H_p), (C, H_q) -> (C,): sum_v p_v (log p_v - log q_v) in fp32; q (student) no-grad.
    log_p = torch.log_softmax(head_p(hidden_p).float() / temperature, dim=-1)
    with torch.no_grad():
        log_q = torch.log_softmax(head_q(hidden_q).float() / temperature, dim=-1)
    if log_p.shape[-1] != log_q.shape[-1]:
        raise ValueError(
            f"the two heads give vocabularies of {log_p.shape[-1]} and {log_q.shape[-1]} "
            "tokens; the full KL needs one shared vocabulary: use a teacher and a student of "
            "the same tokenizer family, or the 'sampled' / 'k3' estimators."
        )
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def full_kl_from_hidden(
    hidden_p: torch.Tensor,
    head_p: Head,
    hidden_q: torch.Tensor,
    head_q: Head,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Exact KL(p || q) (N,) fp32 over the whole vocabulary at N aligned positions.

    p = softmax(head_p(hidden_p) / temperature), q likewise; hidden_p (N, H_p) and hidden_q
    (N, H_q) are row-aligned (row i on both sides predicts the same next token). For the RLT
    reward p is the teacher pi_theta(. | s, q, t_<k) and q the student pi_s(. | q, t_<k): the
    direction of D_KL(pi_theta || pi_s) in Eq. 4. Gradients flow only into the p side (the q
    head runs without them). Chunked and checkpointed like `logprobs_from_hidden`.
    """
    _check_scoring_args(temperature, chunk_size)
    if hidden_p.shape[0] != hidden_q.shape[0]:
        raise ValueError(
            f"{hidden_p.shape[0]} teacher rows but {hidden_q.shape[0]} student rows: the KL is "
            "taken at aligned positions, so both sides must select the same number of tokens."
        )
    pieces = []
    for start in range(0, hidden_p.shape[0], chunk_size):
        hp, hq = hidden_p[start : start + chunk_size], hidden_q[start : start + chunk_size]
        if torch.is_grad_enabled() and hp.requires_grad:
            pieces.append(
                checkpoint(_chunk_kl, hp, hq, head_p, head_q, temperature, use_reentrant=False)
            )
        else:
            pieces.append(_chunk_kl(hp, hq, head_p, head_q, temperature))
    if not pieces:
        return hidden_p.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)


def pack_left(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the masked entries of each row of `values` (B, L) to the left: (B, K), (B, K) mask.

    K is the largest count of True in a row. Row b of the result holds `values[b][mask[b]]` in
    order, then zeros. This aligns spans that sit at different offsets in two sequences (the
    teacher's and the student's think tokens) so they can be compared element by element.
    """
    return _unflatten_left(values[mask.bool()], mask.sum(-1))


def _unflatten_left(flat: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # flat (N,) holds counts[0] values of row 0, then row 1, ...; -> (B, K) values, (B, K) mask.
    width = int(counts.max().item()) if counts.numel() else 0
    packed_mask = torch.arange(width, device=flat.device) < counts.to(flat.device).unsqueeze(-1)
    return flat.new_zeros(packed_mask.shape).masked_scatter(packed_mask, flat), packed_mask


def chunked_full_kl(
    model_p: nn.Module,
    batch_p: Mapping[str, torch.Tensor],
    model_q: nn.Module,
    batch_q: Mapping[str, torch.Tensor],
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-token KL(p || q) at aligned spans of two batches: returns (B, K) KL, (B, K) mask.

    Each batch maps `input_ids`, `attention_mask` (B, T_side) and `positions` (B, T_side - 1),
    the boolean mask of predictions to compare (for RLT: the predictions of the think tokens;
    position t predicts token t + 1). Row b must select the same number of positions on both
    sides; the k-th selected position of one side is compared with the k-th of the other, so the
    spans may sit at different offsets. The p side (teacher pi_theta, Eq. 4) keeps gradients when
    they are enabled; the q side (student pi_s) always runs without them.
    """
    valid_p = _aligned_positions(batch_p, batch_q)
    hidden_p = hidden_states(model_p, batch_p["input_ids"], batch_p["attention_mask"])
    with torch.no_grad():
        hidden_q = hidden_states(model_q, batch_q["input_ids"], batch_q["attention_mask"])
        rows_q = hidden_q[:, :-1][batch_q["positions"].bool()]
    rows_p = hidden_p[:, :-1][valid_p]
    head_p, head_q = model_p.get_output_embeddings(), model_q.get_output_embeddings()
    with gathered(head_p), gathered(head_q):  # whole also under ZeRO-3
        kl = full_kl_from_hidden(
            rows_p, head_p, rows_q, head_q, temperature=temperature, chunk_size=chunk_size
        )
    return _unflatten_left(kl, valid_p.sum(-1))


def _aligned_positions(
    batch_p: Mapping[str, torch.Tensor], batch_q: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Check both batches and return side p's boolean positions (B, T_p - 1)."""
    for name, batch in (("batch_p", batch_p), ("batch_q", batch_q)):
        missing = {"input_ids", "attention_mask", "positions"} - set(batch)
        if missing:
            raise KeyError(
                f"{name} lacks {sorted(missing)}; pass the tokenized batch plus "
                "'positions', the (B, T - 1) mask of predictions to compare."
            )
        _check_batch(batch["input_ids"], batch["attention_mask"])
        scored = scored_positions(batch["attention_mask"], batch["positions"])
        if not torch.equal(scored, batch["positions"].bool()):
            raise ValueError(f"{name}['positions'] selects padding; select real tokens only.")
    counts_p, counts_q = batch_p["positions"].sum(-1), batch_q["positions"].sum(-1)
    bad = (counts_p != counts_q).nonzero().flatten().tolist()
    if bad:
        row = bad[0]
        raise ValueError(
            f"row {row} selects {int(counts_p[row])} positions in batch_p but "
            f"{int(counts_q[row])} in batch_q; the KL compares the k-th selected token of each "
            "side, so both must select the same span (the same think tokens)."
        )
    return batch_p["positions"].bool()


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must both be (B, T); tokenize with padding=True."
        )


def _check_scoring_args(temperature: float, chunk_size: int) -> None:
    if temperature <= 0:
        raise ValueError(
            f"temperature={temperature}: log-probs divide the logits by it, so it must be > 0 "
            "(the paper samples and scores at 0.7, Table 3)."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: it must be a positive number of positions.")
