"""What one run of a stage needs of a machine: GPUs and CPU cores (the `resources` section).

Not part of any stage's key: the same run on other hardware gives the same artifact. A runner
that places stages side by side (Ray) reserves exactly these for each run, and the run's torch
uses as many threads as it has CPU cores, so concurrent stages never oversubscribe a machine.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rlt_core.config.checks import finalize, non_negative, positive
from rlt_core.config.errors import ConfigIssue

STAGE_NAMES = (  # every stage of rlt_core.stages.specs, in DAG order
    "data",
    "teacher_sft",
    "teacher_rl",
    "generate_traces",
    "rank_traces",
    "student_sft",
    "student_rl",
    "evaluate",
    "teacher_eval",
    "raw_traces",
)


@dataclass(frozen=True)
class StageResources:
    """GPUs and CPU cores one run of a stage is given."""

    gpus: int = field(default=0, metadata={"help": "GPUs of one run (0: CPU only)"})
    cpus: int = field(default=1, metadata={"help": "CPU cores of one run (its torch threads)"})
    gpu_memory_gib: float = field(
        default=80.0,
        metadata={"help": "memory of each of its GPUs, GiB (what `rlt plan` fits the run into)"},
    )

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        return non_negative(self, "gpus") + positive(self, "cpus", "gpu_memory_gib")


def _given(gpus: int, cpus: int) -> StageResources:
    return StageResources(gpus=gpus, cpus=cpus)


# The paper-7b profile's: one 8-GPU node per training run (ZeRO-3 over its 8 GPUs); trace
# generation and evaluation on tensor_parallel_size GPUs (1 for 7B models).
PAPER_RESOURCES: Mapping[str, StageResources] = MappingProxyType(
    {
        "data": _given(0, 4),
        "teacher_sft": _given(8, 32),
        "teacher_rl": _given(8, 32),
        "generate_traces": _given(1, 8),
        "rank_traces": _given(1, 8),
        "student_sft": _given(8, 32),
        "student_rl": _given(8, 32),
        "evaluate": _given(1, 8),
        "teacher_eval": _given(1, 8),
        "raw_traces": _given(1, 8),
    }
)
