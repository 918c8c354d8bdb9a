"""The correctness reward of traditional RL (section 2, Table 6): -1 / -0.5 / +1.

"This structure is forced by assigning rewards r_i = -1 to unformatted completions, r_i = -0.5
to wrong but formatted completions, and r_i = 1 only to correct and formatted completions."

Formatted means the student format of Figure 6: `<|begin_of_thought|>`, `<|end_of_thought|>`,
`<|begin_of_solution|>` and `<|end_of_solution|>` each appear exactly once, in that order (text
before the first tag or after the last, such as an end-of-turn token, is allowed). Only the
solution section is graded:

- math (LIMR, section 4.3): `math_verify.parse` of the solution section verified against the
  gold answer, which is a plain value ("5", "\\frac{1}{2}"), as `load_limr` stores it;
- countdown (section 4.4): the project's `score_countdown_completion` (the last boxed
  expression must use every number once and equal the target).

math-verify bounds parsing with `signal.alarm`, which only works in a process's main thread;
off it, every LaTeX answer silently fails to parse and is graded wrong. Grading math off the
main thread therefore raises instead of returning wrong rewards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from math_verify import parse, verify

from rlt_core.config import StudentRLConfig
from rlt_core.data.countdown_verify import score_countdown_completion
from rlt_core.formats import BEGIN_SOLUTION, BEGIN_THOUGHT, END_SOLUTION, END_THOUGHT

Task = Literal["math", "countdown"]
TASK_COLUMNS: dict[str, tuple[str, ...]] = {"math": ("answer",), "countdown": ("numbers", "target")}
_TAGS = (BEGIN_THOUGHT, END_THOUGHT, BEGIN_SOLUTION, END_SOLUTION)
BOXED = "\\boxed{"


def student_solution(text: str) -> str | None:
    """The solution section of a student-format completion, or None when it is unformatted.

    Unformatted: a tag of Figure 6 is missing or repeated, or the four are out of order.
    `"<|begin_of_thought|>t<|end_of_thought|><|begin_of_solution|> 5 <|end_of_solution|>"`
    gives `"5"`.
    """
    if any(text.count(tag) != 1 for tag in _TAGS):
        return None
    positions = [text.index(tag) for tag in _TAGS]
    if positions != sorted(positions):
        return None
    return text[positions[2] + len(BEGIN_SOLUTION) : positions[3]].strip()


def _require_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "math answers are graded with math_verify, whose parse/verify timeouts use "
            "signal.alarm and only work in the main thread; here every LaTeX answer would "
            "silently be graded wrong. Run student RL in the main thread of its process (the "
            "training stages run as their own process)."
        )


def math_is_correct(solution: str, gold: str, *, row_id: object = None) -> bool:
    """True when math-verify finds the gold answer (a plain value) in the solution section."""
    _require_main_thread()
    gold_parsed = parse(gold)
    if not gold_parsed:
        raise ValueError(
            f"row {row_id!r}: gold answer {gold!r} does not parse with math_verify; store golds "
            "as plain values "
            "such as '5' or '\\frac{1}{2}' (see rlt_core.data.plain_answer)."
        )
    return bool(verify(gold_parsed, parse(solution)))


def countdown_is_correct(solution: str, numbers: Sequence[int], target: int) -> bool:
    """True when the solution's last boxed expression solves the countdown problem exactly."""
    return score_countdown_completion(solution, [int(n) for n in numbers], int(target))


def _text(completion: Any) -> str:
    """A TRL completion as text: a string, or a conversational list of message dicts."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content", "")) for message in completion)


@dataclass(frozen=True)
class CorrectnessReward:
    """Callable TRL reward: -1 unformatted, -0.5 formatted but wrong, +1 right (section 2).

    Reads the gold from the dataset columns that TRL passes per completion: `answer` for math,
    `numbers` and `target` for countdown. After each call it logs `correctness/formatted`,
    `correctness/accuracy` and `correctness/boxed` (completions holding a `\\boxed{`
    anywhere: how many give the graders a boxed answer) as batch fractions through TRL's
    `log_metric`.
    """

    task: Task
    unformatted: float = -1.0
    wrong: float = -0.5
    correct: float = 1.0
    name: str = "correctness_reward"

    def __post_init__(self) -> None:
        if self.task not in TASK_COLUMNS:
            raise ValueError(f"task={self.task!r} is unknown; choose one of {list(TASK_COLUMNS)}.")
        if not self.unformatted <= self.wrong < self.correct:
            raise ValueError(
                f"rewards unformatted={self.unformatted}, wrong={self.wrong}, "
                f"correct={self.correct} break unformatted <= wrong < correct; use the section 2 "
                "values -1 / -0.5 / +1 or keep that order."
            )

    @property
    def __name__(self) -> str:
        """The name under which TRL logs this reward (`rewards/<name>/mean`)."""
        return self.name

    def score(self, text: str, row: Mapping[str, Any]) -> float:
        """The reward of one completion text given its dataset row's gold columns."""
        solution = student_solution(text)
        if solution is None:
            return self.unformatted
        if self.task == "math":
            right = math_is_correct(solution, str(row["answer"]), row_id=row.get("id"))
        else:
            right = countdown_is_correct(solution, row["numbers"], row["target"])
        return self.correct if right else self.wrong

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """One reward per completion; `kwargs` holds the gold columns, one value per completion."""
        columns = self._columns(kwargs, len(completions))
        ids = kwargs.get("id") or [None] * len(completions)
        rows = [
            {"id": ids[i], **{name: values[i] for name, values in columns.items()}}
            for i in range(len(completions))
        ]
        texts = [_text(c) for c in completions]
        rewards = [self.score(text, row) for text, row in zip(texts, rows, strict=True)]
        self._log(rewards, texts, kwargs.get("log_metric"))
        return rewards

    def _columns(self, kwargs: Mapping[str, Any], count: int) -> dict[str, Sequence[Any]]:
        columns = {}
        for name in TASK_COLUMNS[self.task]:
            values = kwargs.get(name)
            if values is None or len(values) != count:
                raise KeyError(
                    f"{self.__name__} ({self.task}) needs the dataset column {name!r} with one "
                    f"value per completion ({count}); got columns {sorted(kwargs)}. Keep "
                    f"{list(TASK_COLUMNS[self.task])} in the training dataset and set "
                    "remove_unused_columns=False."
                )
            columns[name] = values
        return columns

    def _log(
        self,
        rewards: list[float],
        texts: list[str],
        log_metric: Callable[[str, float], None] | None,
    ) -> None:
        if callable(log_metric) and rewards:
            log_metric("correctness/boxed", sum(BOXED in text for text in texts) / len(texts))
            formatted = sum(r != self.unformatted for r in rewards) / len(rewards)
            log_metric("correctness/formatted", formatted)
            log_metric(
                "correctness/accuracy", sum(r == self.correct for r in rewards) / len(rewards)
            )


def correctness_reward(cfg: StudentRLConfig) -> CorrectnessReward:
    """The reward of a Table 6 recipe: math-verify for LIMR, the countdown verifier otherwise."""
    task: Task = "math" if cfg.dataset == "limr" else "countdown"
    return CorrectnessReward(
        task=task,
        unformatted=cfg.reward_unformatted,
        wrong=cfg.reward_wrong,
        correct=cfg.reward_correct,
    )
