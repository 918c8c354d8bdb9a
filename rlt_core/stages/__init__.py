"""One entry function per declared stage (`rlt_core.stages.specs.SPECS`): `run_data`,
`run_teacher_sft`, ..., `run_raw_traces`. Each takes its typed config and the refs of its
inputs and writes a self-describing artifact directory (manifest last).

The entry functions load on first use (`from rlt_core.stages import run_teacher_rl` imports
the teacher_rl module only): a process that runs one stage does not import the others'
dependencies (lighteval for evaluate, scipy and matplotlib for reports, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

from rlt_core.stages.specs import SPECS  # light: names and declarations, no torch

# `run_<stage>` of every declared stage, in the module of its entry function (one list of
# stages: `rlt_core.stages.specs.SPECS`), plus the data stage's result type.
_MODULES = {
    **{f"run_{name}": spec.module.rsplit(".", 1)[1] for name, spec in SPECS.items()},
    "DataOutputs": "data",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    """Import the stage module that defines `name` (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module 'rlt_core.stages' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlt_core.stages.{_MODULES[name]}"), name)
