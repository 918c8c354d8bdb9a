"""The RLT reward terms (paper section 3.3, Eq. 3 to 5; Table 3; Appendix A.1 and D).

Pure arithmetic on log-prob tensors: the model forwards that produce them live in
`rlt_core.logprobs`, so every term here is tested on made-up numbers.

Shapes: B completions; a span tensor (B, L) with a boolean mask (B, L) that marks the real
tokens of the span (solution tokens for Eq. 3, think tokens for Eq. 4). Spans may be padded
anywhere; masked entries never reach a mean, min or max.

Reference behaviour kept (SakanaAI/RLT): the per-token KL defaults to the sampled-token
log-ratio log pi_theta(t) - log pi_s(t); the -1 format penalty fires when the closing
explanation tag is missing (which includes generations cut at the maximum length).

Empty spans. The empty-reduction rule of Eq. 4 (reference behaviour): the reference code computes
each reduction of the think span (the avg and the max) on its own and replaces a reduction that
has no token to reduce by +1 (`EMPTY_THINK_REDUCTION`) BEFORE the weighted sum, so an
explanation with no token scores r_KL = 1 + alpha * 1 = 1.01 at alpha = 0.01, not 1; with
lambda = 3 that costs 3.03 in r_RLT. An empty solution span scores r_SS = -1
(`EMPTY_SOLUTION_R_SS`); it cannot occur in the pipeline (a row without a solution is refused
before scoring), and the reference's own value there is not finite (its min of an all-masked
row is the largest float), so the project keeps the plain -1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

KLEstimator = Literal["sampled", "k3", "full"]
KL_ESTIMATORS: tuple[str, ...] = ("sampled", "k3", "full")
EMPTY_SOLUTION_R_SS = -1.0
# The empty-reduction rule of Eq. 4: each of avg{KL} and max{KL} of a think span without tokens
# is +1, so such a span scores r_KL = EMPTY_THINK_REDUCTION * (1 + alpha) (module docstring).
EMPTY_THINK_REDUCTION = 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean (B,) of `values` (B, L) over `mask` (B, L); 0 for a row with no True entry."""
    mask = mask.bool()
    total = torch.where(mask, values, torch.zeros_like(values)).sum(-1)
    return total / mask.sum(-1).clamp(min=1)


def masked_min(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min (B,) of `values` (B, L) over `mask` (B, L); padding is +inf so it never wins; +inf
    for an empty row."""
    return torch.where(mask.bool(), values, torch.full_like(values, float("inf"))).amin(-1)


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max (B,) of `values` (B, L) over `mask` (B, L); padding is -inf so it never wins; -inf
    for an empty row."""
    return torch.where(mask.bool(), values, torch.full_like(values, float("-inf"))).amax(-1)


def r_ss(
    student_solution_logprobs: torch.Tensor, solution_mask: torch.Tensor, *, alpha: float
) -> torch.Tensor:
    """Eq. 3: r_SS = avg{log pi_s(s | t, q)} + alpha * min{log pi_s(s | t, q)}, shape (B,).

    `student_solution_logprobs` (B, L): the student's log-probs of each solution token given the
    question and the teacher's explanation as its thought; `solution_mask` (B, L) marks the
    solution tokens. A row with no solution token scores -1 (reference behaviour).
    """
    _check_span(student_solution_logprobs, solution_mask, "student_solution_logprobs")
    mask = solution_mask.bool()
    score = masked_mean(student_solution_logprobs, mask) + alpha * torch.where(
        mask.any(-1), masked_min(student_solution_logprobs, mask), 0.0
    )
    return torch.where(mask.any(-1), score, torch.full_like(score, EMPTY_SOLUTION_R_SS))


def kl_sampled(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log pi_theta(t) - log pi_s(t) at the sampled tokens (same shape).

    Unbiased for KL(pi_theta || pi_s) when t is drawn from the teacher, but a single sample can
    be negative. The reference implementation's choice and the default here.
    """
    return teacher_logprobs - student_logprobs


def kl_k3(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator at the sampled tokens (same shape): with log r = log pi_s(t) -
    log pi_theta(t), k3 = exp(log r) - 1 - log r.

    Always >= 0 and unbiased for KL(pi_theta || pi_s) under teacher samples (E[r] = 1), with a
    lower variance than `kl_sampled`.
    """
    log_r = student_logprobs - teacher_logprobs
    return torch.expm1(log_r) - log_r


def per_token_kl(
    estimator: KLEstimator,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    full_kl: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-think-token D_KL(pi_theta || pi_s) of Eq. 4 with the chosen estimator, (B, K).

    "sampled" and "k3" use the two models' log-probs of the sampled think tokens (B, K);
    "full" returns `full_kl` (B, K), the exact vocabulary-wide KL from
    `rlt_core.logprobs.chunked_full_kl` (the paper's literal text).
    """
    if teacher_logprobs.shape != student_logprobs.shape:
        raise ValueError(
            f"teacher think log-probs {tuple(teacher_logprobs.shape)} and student think log-probs "
            f"{tuple(student_logprobs.shape)} differ: both must be (B, K), aligned token by token "
            "(pack each side's think span with rlt_core.logprobs.pack_left)."
        )
    if estimator == "sampled":
        return kl_sampled(teacher_logprobs, student_logprobs)
    if estimator == "k3":
        return kl_k3(teacher_logprobs, student_logprobs)
    if estimator == "full":
        if full_kl is None:
            raise ValueError(
                "estimator='full' needs full_kl, the (B, K) exact KL from "
                "rlt_core.logprobs.chunked_full_kl; compute it or choose 'sampled' or 'k3'."
            )
        return full_kl
    raise ValueError(f"unknown KL estimator {estimator!r}: choose one of {KL_ESTIMATORS}.")


def r_kl(per_token_kl: torch.Tensor, think_mask: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """Eq. 4: r_KL = avg{D_KL(pi_theta^t || pi_s^t)} + alpha * max{D_KL(...)} over think tokens.

    `per_token_kl` (B, K) from `per_token_kl`, `think_mask` (B, K) marks the think tokens;
    returns (B,). A row with no think token has no avg and no max: each is replaced by
    `EMPTY_THINK_REDUCTION` (+1), so the row scores 1 + alpha (the empty-reduction rule of the
    module docstring, reference behaviour).
    """
    _check_span(per_token_kl, think_mask, "per_token_kl")
    mask = think_mask.bool()
    empty = ~mask.any(-1)
    fill = per_token_kl.new_full(per_token_kl.shape[:1], EMPTY_THINK_REDUCTION)
    avg = torch.where(empty, fill, masked_mean(per_token_kl, mask))
    top = torch.where(empty, fill, masked_max(per_token_kl, mask))
    return avg + alpha * top


def r_rlt(
    r_ss: torch.Tensor,
    r_kl: torch.Tensor,
    *,
    lam: float,
    format_ok: torch.Tensor,
    format_penalty: float = -1.0,
) -> torch.Tensor:
    """Eq. 5 plus the format penalty (Appendix A.1): r_RLT = r_SS - lambda * r_KL, and
    `format_penalty` added where `format_ok` (B,) is False (no closing explanation tag, or the
    generation hit the maximum length). All tensors (B,); lambda = 3 and penalty -1 (Table 3).
    """
    penalty = torch.where(format_ok.bool(), 0.0, format_penalty).to(r_ss.dtype)
    return r_ss - lam * r_kl + penalty


def _check_span(values: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    if values.dim() != 2 or values.shape != mask.shape:
        raise ValueError(
            f"{name} has shape {tuple(values.shape)} and its mask {tuple(mask.shape)}; both "
            "must be (B, L) with one mask entry per value (pad both to the same length)."
        )


@dataclass(frozen=True)
class RewardBreakdown:
    """Per-completion reward and its parts, each a (B,) tensor (Eq. 3 to 5, Appendix D stats)."""

    r_ss: torch.Tensor
    r_kl: torch.Tensor
    reward: torch.Tensor
    penalty: torch.Tensor
    think_len: torch.Tensor
    solution_len: torch.Tensor
    empty_think: torch.Tensor
    empty_solution: torch.Tensor

    @property
    def n_empty_think(self) -> int:
        """How many completions had no think token (their r_KL was set to +1)."""
        return int(self.empty_think.sum().item())

    @property
    def n_empty_solution(self) -> int:
        """How many completions had no solution token (their r_SS was set to -1)."""
        return int(self.empty_solution.sum().item())

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain dict per completion (floats, ints, bools) for logging or a parquet file."""
        columns = {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self)}
        per_row = zip(*columns.values(), strict=True)
        return [dict(zip(columns, values, strict=True)) for values in per_row]


def compute_reward(
    *,
    student_solution_logprobs: torch.Tensor,
    solution_mask: torch.Tensor,
    teacher_think_logprobs: torch.Tensor,
    student_think_logprobs: torch.Tensor,
    think_mask: torch.Tensor,
    format_ok: torch.Tensor,
    estimator: KLEstimator = "sampled",
    full_kl: torch.Tensor | None = None,
    lam: float = 3.0,
    alpha: float = 0.01,
    format_penalty: float = -1.0,
) -> RewardBreakdown:
    """The RLT reward of B completions (Eq. 3 to 5) with its parts.

    Solution tensors are (B, L) and think tensors (B, K), each with its boolean mask; the
    teacher's and student's think log-probs must be aligned token by token (see
    `rlt_core.logprobs.pack_left`). `format_ok` (B,) is False where the format penalty applies.
    Defaults lambda = 3, alpha = 0.01, penalty -1 come from Table 3. The reward carries no
    gradient (it is a GRPO reward): inputs are detached.
    """
    kl = per_token_kl(
        estimator,
        teacher_think_logprobs.detach().float(),
        student_think_logprobs.detach().float(),
        None if full_kl is None else full_kl.detach().float(),
    )
    ss = r_ss(student_solution_logprobs.detach().float(), solution_mask, alpha=alpha)
    kl_score = r_kl(kl, think_mask, alpha=alpha)
    reward = r_rlt(ss, kl_score, lam=lam, format_ok=format_ok, format_penalty=format_penalty)
    return RewardBreakdown(
        r_ss=ss,
        r_kl=kl_score,
        reward=reward,
        penalty=torch.where(format_ok.bool(), 0.0, format_penalty),
        think_len=think_mask.bool().sum(-1),
        solution_len=solution_mask.bool().sum(-1),
        empty_think=~think_mask.bool().any(-1),
        empty_solution=~solution_mask.bool().any(-1),
    )
