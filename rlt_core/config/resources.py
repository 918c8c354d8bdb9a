"""What one run of a stage needs of a machine: GPUs, their memory, CPU cores, and how much of
its batch a GPU holds at once (the `resources` section).

Not part of any stage's key: the same run on other hardware gives the same artifact. (An
offloaded optimizer is keyed, but through what it changes: the accelerate config the run
launches with, `rlt_core.devices.numerics`.) A runner
that places stages side by side (Ray) reserves exactly these for each run, and the run's torch
uses as many threads as it has CPU cores, so concurrent stages never oversubscribe a machine.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rlt_core.config.checks import bad, finalize, non_negative, positive
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

# The stages that train (launched with ZeRO-3 on several GPUs; `rlt_core.fit` plans them).
TRAINING_STAGES = ("teacher_sft", "student_sft", "teacher_rl", "student_rl")


@dataclass(frozen=True)
class StageResources:
    """GPUs and CPU cores one run of a stage is given."""

    gpus: int = field(default=0, metadata={"help": "GPUs of one run (0: CPU only)"})
    cpus: int = field(default=1, metadata={"help": "CPU cores of one run (its torch threads)"})
    gpu_memory_gib: float = field(
        default=80.0,
        metadata={"help": "memory of each of its GPUs, GiB (what `rlt plan` fits the run into)"},
    )
    micro_batch: int = field(
        default=0,
        metadata={
            "help": "training stages: the most samples (SFT) or completions (GRPO) one GPU "
            "holds per micro-batch; the recipe's global batch is kept by gradient accumulation "
            "(0: the stage's default, SFT 1, GRPO 8)"
        },
    )
    offload_optimizer: bool = field(
        default=False,
        metadata={
            "help": "training stages on several GPUs: keep AdamW's states in CPU memory "
            "(DeepSpeed ZeRO-3 offload, configs/accelerate/zero3_offload.yaml; keyed through "
            "that launch config)"
        },
    )

    nodes: int = field(
        default=1,
        metadata={
            "help": "training stages: machines one run spans, each with these gpus and cpus "
            "(one ZeRO-3 launch over all of them: `accelerate launch --num_machines`, placed "
            "one node per machine by Ray, `tasks.multinode`)"
        },
    )

    def __post_init__(self) -> None:
        finalize(self, self._issues)

    def _issues(self) -> list[ConfigIssue]:
        issues = non_negative(self, "gpus", "micro_batch") + positive(
            self, "cpus", "gpu_memory_gib", "nodes"
        )
        if self.offload_optimizer and self.gpus * self.nodes < 2:
            issues.append(
                bad(
                    self,
                    "offload_optimizer",
                    f"needs a ZeRO-3 launch on 2 or more GPUs (gpus is {self.gpus} on "
                    f"{self.nodes} node(s)); a run on one GPU or a CPU is a plain process",
                    "give the stage 2 or more GPUs, or set offload_optimizer: false",
                )
            )
        return issues


def _given(gpus: int, cpus: int, micro_batch: int = 0) -> StageResources:
    return StageResources(gpus=gpus, cpus=cpus, micro_batch=micro_batch)


# The paper-7b profile's: one 8-GPU node per training run (ZeRO-3 over its 8 GPUs); trace
# generation and evaluation on tensor_parallel_size GPUs (1 for 7B models). GRPO holds one
# completion of 2,048 + 16,384 tokens per GPU micro-batch (`rlt_core.fit`: 8 would not fit).
PAPER_RESOURCES: Mapping[str, StageResources] = MappingProxyType(
    {
        "data": _given(0, 4),
        "teacher_sft": _given(8, 32),
        "teacher_rl": _given(8, 32, micro_batch=1),
        "generate_traces": _given(1, 8),
        "rank_traces": _given(1, 8),
        "student_sft": _given(8, 32),
        "student_rl": _given(8, 32, micro_batch=1),
        "evaluate": _given(1, 8),
        "teacher_eval": _given(1, 8),
        "raw_traces": _given(1, 8),
    }
)
