"""Student evaluation on lighteval (section 4.1, Appendix B.4, Table 7), offline.

- `tasks`: lighteval task configs over the data stage's local tables (AIME24, MATH 500, GPQA
  Diamond, countdown) plus lighteval's built-in LiveCodeBench / OlympiadBench; student-format
  prompts; the countdown metric over the project's verifier.
- `engines`: the transformers (CPU) and vLLM (GPU) engines and the generation budget.
- `lighteval_run`: the narrowed registry, the Pipeline run, per-sample details, rescoring of
  saved predictions (`score_predictions`).
The paper-layout tables over several evaluations are `rlt_core.reports`.

lighteval switches gradients off for the whole process, once when its transformers model module
is imported and again whenever a TransformersModel is built, which would silently break any
training later in the same process (a notebook, the CPU pipeline, a test session). The package
imports lighteval here under `keep_grad_mode`, before anything else, and `evaluate_model` runs
lighteval under it too.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def keep_grad_mode() -> Iterator[None]:
    """Restore torch's gradient mode on exit, whatever the block did to it."""
    enabled = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(enabled)


with keep_grad_mode():
    import lighteval.pipeline  # noqa: F401  (imports every lighteval model module)

from rlt_core.evaluation.lighteval_run import (  # noqa: E402
    LightevalOutcome,
    ReplayModel,
    evaluate_model,
    score_predictions,
)

__all__ = [
    "LightevalOutcome",
    "keep_grad_mode",
    "ReplayModel",
    "evaluate_model",
    "score_predictions",
]
