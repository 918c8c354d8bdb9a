"""The model-facing half of the RLT reward: teacher and student forwards over aligned spans.

`RLTScorer` holds a teacher pi_theta, a frozen student pi_s and their shared tokenizer. Given
aligned samples (`rlt_core.reward.spans`) it right-pads them into batches, takes per-token
log-probs at the sampling temperature (`rlt_core.logprobs`, chunked so the (B, T, V) logits never
exist) restricted to the think and solution spans, and applies the pure reward terms of
`rlt_core.reward.terms` (Eq. 3 to 5) with lambda, alpha, the penalty and the KL estimator of the
`RewardConfig`. Everything runs without gradients: the reward is a GRPO reward, not a loss.

The teacher may be swapped for the policy being trained (`set_teacher`), the reference
behaviour; the student can live on CPU between calls (`offload_student`), moved to the teacher's
device for its forward only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from rlt_core import devices
from rlt_core.config import RewardConfig
from rlt_core.logprobs import chunked_full_kl, pack_left, token_logprobs
from rlt_core.reward.spans import AlignedSample, check_layout, check_same_vocabulary
from rlt_core.reward.terms import RewardBreakdown, compute_reward, r_ss


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T) of token id lists."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def span_positions(spans: Sequence[slice], width: int) -> torch.Tensor:
    """Boolean (B, width - 1) mask of the predictions of each span's tokens.

    Token i is predicted at log-prob position i - 1 (`rlt_core.logprobs` layout), so a span
    slice(a, b) of tokens selects positions a - 1 .. b - 2. Spans start after the prompt (a >= 1).
    """
    positions = torch.zeros((len(spans), width - 1), dtype=torch.bool)
    for row, span in enumerate(spans):
        positions[row, span.start - 1 : span.stop - 1] = True
    return positions


def concat_breakdowns(parts: Sequence[RewardBreakdown]) -> RewardBreakdown:
    """One RewardBreakdown whose (B,) fields are the parts' fields concatenated in order."""
    return RewardBreakdown(
        **{f.name: torch.cat([getattr(p, f.name).cpu() for p in parts]) for f in fields(parts[0])}
    )


def _at_least_one_column(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # A batch whose spans are all empty packs to (B, 0); the min/max of Eq. 3-4 need a column,
    # so add one masked-out column (the terms then apply the empty-span values).
    if values.shape[1] > 0:
        return values, mask
    return values.new_zeros(values.shape[0], 1), mask.new_zeros(mask.shape[0], 1)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_frozen_student(
    reference: str, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any]:
    """The frozen student of the reward (`reward.student_model`) and its tokenizer: the one
    place it is loaded, for RL (teacher_rl), the 32B keep rule and offline scoring.

    Always whole, in every process, also in a ZeRO-3 launch (`devices.whole_weights`): each
    rank scores its own completions with it, and `rlt plan` counts it whole on every GPU (a
    7B student in bf16: 14 GiB beside the teacher's shards). Sharding it would save that
    memory but make every reward forward a collective that all ranks must enter in step.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlt_core.models import resolve_model

    path = resolve_model(reference)
    with devices.whole_weights():  # whole on every rank, also in a ZeRO-3 launch
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model.eval().requires_grad_(False), AutoTokenizer.from_pretrained(path)


def _check_vocab(model: nn.Module, tokenizer: Any, role: str) -> None:
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise ValueError(
            f"the {role} model's embedding has {rows} rows but the tokenizer "
            f"{getattr(tokenizer, 'name_or_path', '')!r} has {len(tokenizer)} tokens: ids past "
            f"row {rows - 1} would crash its forward. Pair the {role} with its own tokenizer."
        )


class RLTScorer:
    """Scores aligned samples with r_RLT = r_SS - lambda * r_KL (+ penalty), Eq. 3 to 5.

    `teacher` may be None until `set_teacher` gives it the live policy. `student_tokenizer`,
    when given, must share `tokenizer`'s vocabulary (checked). Batches hold `batch_size` samples.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        tokenizer: Any,
        cfg: RewardConfig,
        *,
        student_tokenizer: Any | None = None,
        offload_student: bool = False,
        batch_size: int = 8,
    ) -> None:
        if student_tokenizer is not None:
            check_same_vocabulary(tokenizer, student_tokenizer)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: it must be a positive number of samples.")
        check_layout(tokenizer)
        _check_vocab(student, tokenizer, "student")
        self.student = student.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.offload_student = offload_student
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.teacher: nn.Module | None = None
        if teacher is not None:
            self.set_teacher(teacher)

    @classmethod
    def from_refs(
        cls,
        teacher: str,
        student: str | None = None,
        *,
        cfg: RewardConfig,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        offload_student: bool = False,
        batch_size: int = 8,
    ) -> RLTScorer:
        """Load teacher and student (default `cfg.student_model`) from references.

        References are resolved by `rlt_core.models.resolve_model` (offline name, local path or
        hub id); before any weights load, the two tokenizers are checked to share one
        vocabulary and the tokenizer to align the two formats (`check_layout`).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlt_core.models import resolve_model

        paths = (resolve_model(teacher), resolve_model(student or cfg.student_model))
        tokenizer, student_tokenizer = (AutoTokenizer.from_pretrained(p) for p in paths)
        check_same_vocabulary(tokenizer, student_tokenizer)
        check_layout(tokenizer)
        teacher_model = AutoModelForCausalLM.from_pretrained(paths[0], dtype=dtype).to(device)
        student_model, _ = load_frozen_student(student or cfg.student_model, dtype, device)
        if offload_student:
            student_model.to("cpu")
        return cls(
            teacher_model.eval(),
            student_model,
            tokenizer,
            cfg,
            offload_student=offload_student,
            batch_size=batch_size,
        )

    @classmethod
    def with_student(
        cls,
        cfg: RewardConfig,
        tokenizer: Any,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> RLTScorer:
        """A scorer on the frozen student `cfg.student_model`, the teacher set later
        (`set_teacher`: the live policy in RL) or never (r_SS only, the 32B keep rule)."""
        student, student_tokenizer = load_frozen_student(cfg.student_model, dtype, device)
        return cls(None, student, tokenizer, cfg, student_tokenizer=student_tokenizer, **options)

    def set_teacher(self, model: nn.Module) -> None:
        """Use `model` for the teacher log-probs (for RL: the live policy, reference behaviour)."""
        _check_vocab(model, self.tokenizer, "teacher")
        self.teacher = model

    @contextmanager
    def _student_on(self, device: torch.device) -> Iterator[nn.Module]:
        """The student on `device` for the duration; back on CPU after when offloading."""
        moved = self.offload_student and _device_of(self.student) != device
        if moved:
            self.student.to(device)
        try:
            yield self.student
        finally:
            if moved:
                self.student.to("cpu")

    def score(self, samples: Sequence[AlignedSample]) -> RewardBreakdown:
        """The reward breakdown (B,) of `samples`, in order, scored `batch_size` at a time."""
        if not samples:
            raise ValueError("no samples to score: pass at least one AlignedSample.")
        if self.teacher is None:
            raise RuntimeError(
                "RLTScorer has no teacher yet: pass one at construction or call "
                "set_teacher(model) (for RL, the policy being trained)."
            )
        parts = [
            self._score_batch(self.teacher, samples[start : start + self.batch_size])
            for start in range(0, len(samples), self.batch_size)
        ]
        return concat_breakdowns(parts)

    @torch.no_grad()
    def solution_scores(self, samples: Sequence[AlignedSample]) -> torch.Tensor:
        """r_SS alone (Eq. 3), shape (B,): the student's forward only, no teacher needed.

        What the 32B rule of Appendix B.1 ranks candidate traces by.
        """
        if not samples:
            raise ValueError("no samples to score: pass at least one AlignedSample.")
        device = _device_of(self.student)
        opts = {"temperature": self.cfg.temperature, "chunk_size": self.cfg.logprob_chunk_size}
        parts = []
        for start in range(0, len(samples), self.batch_size):
            batch = self._side(samples[start : start + self.batch_size], "student", device)
            solution = batch.pop("solution")
            batch.pop("think")
            logprobs = token_logprobs(self.student, **batch, positions=solution, **opts)
            values, mask = _at_least_one_column(*pack_left(logprobs, solution))
            parts.append(r_ss(values, mask, alpha=self.cfg.alpha).cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def _score_batch(self, teacher: nn.Module, samples: Sequence[AlignedSample]) -> RewardBreakdown:
        device = _device_of(teacher)
        teacher_batch = self._side(samples, "teacher", device)
        student_batch = self._side(samples, "student", device)
        opts = {"temperature": self.cfg.temperature, "chunk_size": self.cfg.logprob_chunk_size}
        think_s, solution_s = student_batch.pop("think"), student_batch.pop("solution")
        teacher_batch["positions"] = teacher_batch.pop("think")
        with self._student_on(device) as student:
            student_lp = token_logprobs(  # (B, T_s - 1), zero outside both spans
                student, **student_batch, positions=think_s | solution_s, **opts
            )
            full_kl = None
            if self.cfg.kl_estimator == "full":
                student_batch["positions"] = think_s
                full_kl, think_mask = chunked_full_kl(
                    teacher, teacher_batch, student, student_batch, **opts
                )
                teacher_think = torch.zeros_like(full_kl)  # not used by the 'full' estimator
            else:
                teacher_lp = token_logprobs(teacher, **teacher_batch, **opts)
                teacher_think, think_mask = pack_left(teacher_lp, teacher_batch["positions"])
        student_think, _ = pack_left(student_lp, think_s)
        student_solution, solution_mask = pack_left(student_lp, solution_s)
        return self._reward(
            teacher_think,
            student_think,
            think_mask,
            student_solution,
            solution_mask,
            full_kl,
            torch.tensor([s.format_ok for s in samples], device=device),
        )

    def _side(
        self, samples: Sequence[AlignedSample], side: str, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (B, T) and think / solution position masks (B, T - 1)."""
        ids, mask = pad_right([getattr(s, f"{side}_ids") for s in samples], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        batch["think"] = span_positions(
            [getattr(s, f"{side}_think") for s in samples], ids.shape[1]
        )
        if side == "student":
            batch["solution"] = span_positions([s.student_solution for s in samples], ids.shape[1])
        return {key: value.to(device) for key, value in batch.items()}

    def _reward(
        self,
        teacher_think: torch.Tensor,
        student_think: torch.Tensor,
        think_mask: torch.Tensor,
        student_solution: torch.Tensor,
        solution_mask: torch.Tensor,
        full_kl: torch.Tensor | None,
        format_ok: torch.Tensor,
    ) -> RewardBreakdown:
        """Apply `compute_reward` (Eq. 3 to 5) with the config's coefficients."""
        teacher_think, think_mask_1 = _at_least_one_column(teacher_think, think_mask)
        student_think, _ = _at_least_one_column(student_think, think_mask)
        if full_kl is not None:
            full_kl, _ = _at_least_one_column(full_kl, think_mask)
        student_solution, solution_mask = _at_least_one_column(student_solution, solution_mask)
        return compute_reward(
            student_solution_logprobs=student_solution,
            solution_mask=solution_mask,
            teacher_think_logprobs=teacher_think,
            student_think_logprobs=student_think,
            think_mask=think_mask_1,
            format_ok=format_ok,
            estimator=self.cfg.kl_estimator,
            full_kl=full_kl,
            lam=self.cfg.lam,
            alpha=self.cfg.alpha,
            format_penalty=self.cfg.format_penalty,
        )
