"""One entry function per stage: data, teacher_sft, teacher_rl, generate_traces, student_sft,
student_rl, evaluate. Each takes its typed config and the refs of its inputs and writes a
self-describing artifact directory (manifest last).

The entry functions load on first use (`from rlt_core.stages import run_teacher_rl` imports
the teacher_rl module only): a process that runs one stage does not import the others'
dependencies (lighteval for evaluate, scipy and matplotlib for reports, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "DataOutputs": "data",
    "run_data": "data",
    "run_evaluate": "evaluate",
    "run_generate_traces": "generate_traces",
    "run_rank_traces": "rank_traces",
    "run_raw_traces": "raw_traces",
    "run_student_rl": "student_rl",
    "run_student_sft": "sft",
    "run_teacher_eval": "teacher_eval",
    "run_teacher_rl": "teacher_rl",
    "run_teacher_sft": "sft",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    """Import the stage module that defines `name` (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module 'rlt_core.stages' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlt_core.stages.{_MODULES[name]}"), name)
