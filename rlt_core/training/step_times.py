"""Where the time of a GRPO step goes: generation, reward, log-probs, loss and backward.

Per optimizer step (a callback's `on_step_begin` to `on_step_end`), `StepTimes` adds up the
seconds spent in three of TRL 1.16's GRPOTrainer methods, wrapped on the trainer instance:

- `rlt/time/generation`: `_generate` (rollouts on vLLM or transformers, prompts tokenised);
- `rlt/time/reward`: `_calculate_rewards` (every reward function; for teacher_rl the RLT
  reward's student and teacher forwards, Eq. 3 to 5);
- `rlt/time/logprobs`: the rest of `_generate_and_score_completions` (the policy's and the
  reference model's log-probs of the completions, advantages);
- `rlt/time/loss_backward`: the rest of the step (the GRPO loss, backward, gradient clipping
  and the optimizer step);
- `rlt/time/step`: the whole optimizer step.

They are added to the step's entry of the trainer's log history, so they land in the reward
log (`reward_history` keeps every `rlt/*` key) and, as means, in the manifest (`time_summary`).
The paper's observation to check on GPUs: generation dominates, the reward is a small share.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

# Trainer methods timed, and the name of their seconds.
TIMED = {
    "_generate": "generation",
    "_calculate_rewards": "reward",
    "_generate_and_score_completions": "scoring",
}
PREFIX = "rlt/time/"


class StepTimes(TrainerCallback):
    """Seconds per GRPO step by part (module docstring); attach with `StepTimes.attach`."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, float]] = {}  # closed steps not logged yet
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._start = 0.0

    @classmethod
    def attach(cls, trainer: Any) -> StepTimes:
        """Wrap the trainer's timed methods and register the callback; returns it."""
        times = cls()
        for method, part in TIMED.items():
            setattr(trainer, method, times._timed(getattr(trainer, method), part))
        trainer.add_callback(times)
        return times

    def _timed(self, method: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            """`method`, with its seconds added to this step's `part`."""
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._seconds[part] += time.perf_counter() - start

        return timed

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Start the clock of an optimizer step."""
        self._seconds.clear()
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the step: its parts in seconds, under `rlt/time/*`."""
        total = time.perf_counter() - self._start
        seconds = self._seconds
        parts = {
            "generation": seconds["generation"],
            "reward": seconds["reward"],
            "logprobs": seconds["scoring"] - seconds["generation"] - seconds["reward"],
            "loss_backward": total - seconds["scoring"],
            "step": total,
        }
        self.steps[state.global_step] = {PREFIX + k: round(v, 3) for k, v in parts.items()}

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Add the step's times to the first log entry the trainer writes for that step (not
        to the end-of-training summary, which carries the same step number)."""
        entry = state.log_history[-1] if state.log_history else {}
        entry.update(self.steps.pop(entry.get("step", -1), {}))


def time_summary(steps: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per step of each `rlt/time/*` part over the logged steps, and the reward's
    and generation's shares of a step (what the manifest records)."""
    timed = [s for s in steps if PREFIX + "step" in s]
    if not timed:
        return {}
    keys = sorted({k for s in timed for k in s if k.startswith(PREFIX)})
    means = {k.removeprefix(PREFIX): sum(s[k] for s in timed) / len(timed) for k in keys}
    shares = {
        f"{part}_share": means[part] / means["step"]
        for part in ("generation", "reward")
        if means.get("step")
    }
    return {k: round(v, 3) for k, v in (means | shares).items()} | {"steps_timed": len(timed)}
