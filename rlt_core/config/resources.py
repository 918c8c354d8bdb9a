"""What one run of a stage needs of a machine: GPUs, their memory, CPU cores, and how much of
its batch a GPU holds at once (the `resources` section).

Not part of any stage's key: the same run on other hardware gives the same artifact. (An
offloaded optimizer is keyed, but through what it changes: the accelerate config the run
launches with, `rlt_core.devices.numerics`.) A runner
that places stages side by side (Ray) reserves exactly these for each run, and the run's torch
uses as many threads as it has CPU cores, so concurrent stages never oversubscribe a machine.

Which names the section may hold and what each stage may be given (several nodes only for a
training stage, GPUs for a vLLM engine's tensor parallelism) are the stages' declarations'
rules (`rlt_core.stages.specs.check_config`): config sits below the stages and knows none.
"""

from dataclasses import dataclass, field

from rlt_core.config.checks import bad, finalize, non_negative, positive
from rlt_core.config.errors import ConfigIssue


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
