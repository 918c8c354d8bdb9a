"""Student evaluation on lighteval (section 4.1, Appendix B.4, Table 7), offline.

- `tasks`: lighteval task configs over the data stage's local tables (AIME24, MATH 500, GPQA
  Diamond, countdown) plus lighteval's built-in LiveCodeBench / OlympiadBench; student-format
  prompts; the countdown metric over the project's verifier.
- `engines`: the transformers (CPU) and vLLM (GPU) engines and the generation budget.
- `lighteval_run`: the narrowed registry, the Pipeline run, per-sample details, rescoring of
  saved predictions (`score_predictions`).
- `grad_mode`: lighteval switches gradients off process-wide; every module here imports and
  runs it under `keep_grad_mode`.
The paper-layout tables over several evaluations are `rlt_core.reports`.

Importing the package loads nothing of lighteval: the names below load `lighteval_run` on
first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from rlt_core.evaluation.grad_mode import keep_grad_mode

_LAZY = ("LightevalOutcome", "ReplayModel", "evaluate_model", "score_predictions")
__all__ = ["keep_grad_mode", *_LAZY]


def __getattr__(name: str) -> Any:
    """`evaluate_model` and the rest from `lighteval_run`, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module("rlt_core.evaluation.lighteval_run"), name)
    raise AttributeError(f"module 'rlt_core.evaluation' has no attribute {name!r}")
