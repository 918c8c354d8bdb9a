"""The RLT reward as a TRL 1.16 reward function (GRPOTrainer's `reward_funcs`).

TRL calls a reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`
where `columns` are the dataset's other columns repeated per completion, plus `trainer_state`,
`log_extra` and `log_metric`; it expects one float per completion and names the function by its
`__name__` in its logs. `RLTReward` reads the question and the solution from the dataset columns
and scores the ids the teacher actually sampled (`completion_ids`, which end at the EOS token);
the student reads the ids student_sft trains on (`rlt_core.reward.spans.align_completion`,
which re-tokenises, and counts in `rlt/retokenized`, only a sample whose think tokens differ
between the sides). `prompts` and `completions` are not needed: the teacher's prompt is rebuilt
from the question and solution in the RLT format (Figure 7).

Reference behaviour (section 3.3): the teacher log-probs come from the policy being trained
(`set_policy`), without gradients; the student is frozen. Completions without the closing
`<|end_of_explanation|>` or as long as `max_completion_length` get the format penalty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rlt_core.reward.copying import mean_copy, solution_copy
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import AlignedSample, align_completion
from rlt_core.reward.terms import RewardBreakdown


def reward_stats(breakdown: RewardBreakdown, samples: Sequence[AlignedSample]) -> dict[str, float]:
    """Batch means of each reward term and the counts worth logging (Appendix D statistics),
    and the mean share of the solution's 4-grams the explanations restate (`solution_copy`,
    `rlt_core.reward.copying`: what drifts up without r_KL)."""
    return {
        "reward": breakdown.reward.float().mean().item(),
        "r_ss": breakdown.r_ss.float().mean().item(),
        "r_kl": breakdown.r_kl.float().mean().item(),
        "penalty_rate": (breakdown.penalty != 0).float().mean().item(),
        "think_len": breakdown.think_len.float().mean().item(),
        "empty_think": float(breakdown.n_empty_think),
        "retokenized": float(sum(s.retokenized for s in samples)),
        "solution_copy": mean_copy(solution_copy(s.think_ids, s.solution_ids) for s in samples),
    }


class RLTReward:
    """Callable TRL reward: r_RLT of each completion (Eq. 5 with the format penalty).

    After each call `last_breakdown` holds the per-completion terms (r_ss, r_kl, penalty,
    lengths) and `last_stats` their batch means; when TRL passes `log_metric` / `log_extra`
    they are logged as `rlt/<term>` metrics and per-completion `rlt_r_ss` / `rlt_r_kl` columns.
    """

    def __init__(
        self,
        scorer: RLTScorer,
        *,
        max_completion_length: int,
        question_column: str = "question",
        solution_column: str = "solution",
        name: str = "rlt_reward",
    ) -> None:
        if max_completion_length < 1:
            raise ValueError(
                f"max_completion_length={max_completion_length}: pass the GRPO config's "
                "max_completion_length, so completions cut at that length get the penalty."
            )
        self.scorer = scorer
        self.max_completion_length = max_completion_length
        self.question_column = question_column
        self.solution_column = solution_column
        self.__name__ = name
        self.last_breakdown: RewardBreakdown | None = None
        self.last_stats: dict[str, float] = {}

    def set_policy(self, model: nn.Module) -> None:
        """Take the teacher log-probs from `model`, the policy being trained (reference)."""
        self.scorer.set_teacher(model)

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        **kwargs: Any,
    ) -> list[float]:
        """One reward per completion; `kwargs` must hold the question and solution columns,
        and may hold `system` (each row's student system prompt; missing: the default)."""
        questions = self._column(kwargs, self.question_column, len(completion_ids))
        solutions = self._column(kwargs, self.solution_column, len(completion_ids))
        ids = kwargs.get("id") or [str(i) for i in range(len(completion_ids))]
        systems = kwargs.get("system") or [None] * len(completion_ids)
        samples = [
            align_completion(
                self.scorer.tokenizer,
                str(ids[i]),
                questions[i],
                solutions[i],
                completion,
                system=systems[i] or None,
                truncated=len(completion) >= self.max_completion_length,
            )
            for i, completion in enumerate(completion_ids)
        ]
        breakdown = self.scorer.score(samples)
        self.last_breakdown = breakdown
        self.last_stats = reward_stats(breakdown, samples)
        self._log(breakdown, kwargs.get("log_metric"), kwargs.get("log_extra"))
        return [float(value) for value in breakdown.reward.tolist()]

    def _column(self, kwargs: Mapping[str, Any], name: str, count: int) -> list[str]:
        values = kwargs.get(name)
        if values is None or len(values) != count:
            raise KeyError(
                f"{self.__name__} needs the dataset column {name!r} with one value per "
                f"completion ({count}); got columns {sorted(kwargs)}. Keep {name!r} in the "
                "training dataset (TRL passes extra columns to reward functions) or set "
                f"{'question' if name == self.question_column else 'solution'}_column."
            )
        return list(values)

    def _log(
        self,
        breakdown: RewardBreakdown,
        log_metric: Callable[[str, float], None] | None,
        log_extra: Callable[[str, list[Any]], None] | None,
    ) -> None:
        if callable(log_metric):
            for key, value in self.last_stats.items():
                log_metric(f"rlt/{key}", value)
        if callable(log_extra):
            log_extra("rlt_r_ss", _floats(breakdown.r_ss))
            log_extra("rlt_r_kl", _floats(breakdown.r_kl))


def _floats(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values.detach().cpu().tolist()]
