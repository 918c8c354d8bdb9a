"""`keep_grad_mode`: what guards every lighteval import and run in this package.

lighteval switches gradients off for the whole process, once when its transformers model
module is imported and again whenever a TransformersModel is built, which would silently break
any training later in the same process (a notebook, the CPU pipeline, a test session). Each
module of `rlt_core.evaluation` imports lighteval inside `keep_grad_mode()`, and
`evaluate_model` runs lighteval under it too.
"""

from __future__ import annotations

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
