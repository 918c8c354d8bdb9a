"""Run one training stage in its own process, through `accelerate launch` on a multi-GPU node.

Each stage runs as a child process (`python -m rlt_core.stages STAGE ...`), so every byte of GPU
memory a stage holds (policy, reference model, reward student, optimizer shards) is returned to
the driver when the process exits, before the next stage loads its models. On a node with more
than one GPU the child is started by `accelerate launch` with DeepSpeed ZeRO-3
(`configs/accelerate/zero3.yaml`: bf16, 8 processes on one node), which the 7B and 32B profiles
need to fit full fine-tuning; on CPU or one GPU it is a plain Python process.

Which accelerate config runs is a launch argument, not a profile key: the same profile trains
on a laptop, one GPU or eight, and only the hardware changes. `default_accelerate_config()`
picks ZeRO-3 when CUDA sees more than one GPU, else None (plain process). The stage itself
splits the paper's global batch over the processes (`count_devices` reads WORLD_SIZE), and the
ZeRO-3 file leaves gradient accumulation and clipping to the Trainer ("auto").

The child hands back its `ArtifactRef` as JSON in the file given by `--ref-out`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlt_core import devices
from rlt_core.artifacts import ArtifactRef
from rlt_core.stages.specs import spec_of

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class StageLaunchError(RuntimeError):
    """A stage subprocess exited with an error; the message holds the command and stderr tail."""


class TransientStageError(StageLaunchError):
    """A stage subprocess failed in a way a retry may cure (the store or the network, inside
    the child: `rlt_core.store.is_transient`); the orchestration layer retries it."""


def transient_marker(ref_out: Path) -> Path:
    """The file a stage child leaves beside its `--ref-out` when it failed transiently."""
    return ref_out.with_name(ref_out.name + ".transient")


@dataclass(frozen=True)
class NodeRole:
    """This machine's part in one launch over several (`resources.<stage>.nodes`).

    Every machine runs `accelerate launch` with the same `machines`, its own `rank` and the
    main machine's `main_address`:`main_port` (static rendezvous: machine 0 holds global rank
    0, the one process that publishes, so the artifact lands where the driver that placed the
    run on machine 0 reads it; c10d's rendezvous would hand out ranks by join order).
    """

    machines: int
    rank: int
    main_address: str
    main_port: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.machines:
            raise ValueError(f"machine rank {self.rank} is not one of {self.machines} machines")

    def arguments(self) -> list[str]:
        """`accelerate launch`'s multi-machine arguments."""
        return [
            "--num_machines", str(self.machines),
            "--machine_rank", str(self.rank),
            "--main_process_ip", self.main_address,
            "--main_process_port", str(self.main_port),
        ]  # fmt: skip


def default_accelerate_config(*, offload_optimizer: bool = False, nodes: int = 1) -> Path | None:
    """ZeRO-3 when CUDA sees more than one GPU or the run spans several nodes; None (a plain
    process) on CPU or one GPU (`rlt_core.devices.accelerate_config`)."""
    return devices.accelerate_config(offload_optimizer=offload_optimizer, nodes=nodes)


def check_stage_request(stage: str, inputs: Mapping[str, str | Path], recipe: str | None) -> None:
    """Raise ValueError when `stage`, its `inputs` or `recipe` cannot make a stage run.

    Checked in the driver before a process starts, and again in the child, against the stage's
    declaration (`rlt_core.stages.specs`): an unknown stage, a missing or unknown input name, an
    input path that does not exist (model inputs may be references), and a recipe missing for
    student_sft/student_rl or given to another stage.
    """
    spec = spec_of(stage)
    if spec.in_driver:
        raise ValueError(
            f"stage {stage!r} runs in the driver process (its declaration's runs='driver'): "
            f"call rlt_core.stages.specs.spec_of({stage!r}).call(cfg, store, inputs) or "
            f"`python -m rlt_core.stages {stage}`"
        )
    spec.check_inputs(inputs)
    spec.check_recipe(recipe)


def stage_arguments(
    stage: str,
    *,
    profile: str | Path,
    overrides: Sequence[str] = (),
    store: str | Path,
    inputs: Mapping[str, str | Path],
    recipe: str | None = None,
    ref_out: Path | None = None,
) -> list[str]:
    """The arguments of `python -m rlt_core.stages` for one stage run (after the module name)."""
    args = [stage, "--profile", str(profile), "--store", str(store)]
    for override in overrides:
        args += ["--set", override]
    for name, path in inputs.items():
        args += ["--input", f"{name}={path}"]
    if recipe is not None:
        args += ["--recipe", recipe]
    if ref_out is not None:
        args += ["--ref-out", str(ref_out)]
    return args


def accelerate_command(
    stage: str,
    *,
    profile: str | Path,
    overrides: Sequence[str] = (),
    store: str | Path,
    inputs: Mapping[str, str | Path],
    recipe: str | None = None,
    accelerate_config: Path | None = None,
    num_processes: int | None = None,
    ref_out: Path | None = None,
    node: NodeRole | None = None,
) -> list[str]:
    """The command line that runs `stage`: plain Python, or `accelerate launch` with a config.

    With `accelerate_config`, `num_processes` (this machine's processes; default: the GPUs CUDA
    sees, else the config's own value) is passed on the command line so it wins over the file's
    8. With `node`, the launch is this machine's part of one over `node.machines` machines with
    as many processes each (accelerate's --num_processes counts them all).
    """
    module = [
        "-m",
        "rlt_core.stages",
        *stage_arguments(
            stage,
            profile=profile,
            overrides=overrides,
            store=store,
            inputs=inputs,
            recipe=recipe,
            ref_out=ref_out,
        ),
    ]
    if accelerate_config is None:
        return [sys.executable, *module]
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher += ["--config_file", str(accelerate_config)]
    processes = num_processes or torch.cuda.device_count()
    if node is not None:
        processes = max(processes, 1) * node.machines
        launcher += node.arguments()
    if processes:
        launcher += ["--num_processes", str(processes)]
    return [*launcher, *module]


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to send SIGTERM when the parent dies.

    A flow process killed mid-stage must not leave its stage running on as an orphan that
    keeps writing checkpoints (and holding GPUs) while a rerun resumes the same directory.
    A no-op off Linux.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_streaming(command: Sequence[str], env: Mapping[str, str], *, what: str) -> None:
    """Run `command`; its stdout passes through, its stderr is echoed and its tail kept.

    Raises StageLaunchError naming `what`, the command and the last stderr lines on failure.
    """
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    with subprocess.Popen(
        list(command),
        env=dict(env),
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        preexec_fn=die_with_parent,
    ) as child:
        assert child.stderr is not None  # stderr=PIPE
        for line in child.stderr:
            sys.stderr.write(line)
            tail.append(line)
    if child.returncode != 0:
        raise StageLaunchError(
            f"{what} failed with exit code {child.returncode}.\n"
            f"command: {' '.join(command)}\n"
            f"last {len(tail)} line(s) of its stderr:\n{''.join(tail)}"
        )


def launch_config(
    stage: str,
    accelerate_config: Path | None,
    num_processes: int | None,
    *,
    offload_optimizer: bool = False,
    node: NodeRole | None = None,
) -> Path | None:
    """The accelerate config `launch_stage` runs `stage` with (None: a plain process), checked
    before anything starts (`launch_stage`'s rules). Raises ValueError for a machine's part of
    a multi-machine launch of a stage that does not train, and for an offloading config whose
    CPU Adam cannot step on this machine."""
    if node is not None and not spec_of(stage).trains:
        raise ValueError(
            f"stage {stage!r} does not train: only a training stage runs as one launch over "
            "several machines (resources.<stage>.nodes)"
        )
    single = node is None and (num_processes == 1 or spec_of(stage).single_process)
    if accelerate_config is None and not single:
        nodes = node.machines if node is not None else 1
        accelerate_config = default_accelerate_config(
            offload_optimizer=offload_optimizer, nodes=nodes
        )
    if accelerate_config is not None and devices.offloads_optimizer(accelerate_config):
        problem = devices.offload_problem()
        if problem is not None:  # before the launch, not after the model loads
            raise ValueError(
                f"stage {stage!r} offloads its optimizer (resources.{stage}.offload_optimizer) "
                f"but {problem}; or set resources.{stage}.offload_optimizer=false"
            )
    elif offload_optimizer:
        logger.warning(
            "stage %s: offload_optimizer is set but the run is a plain process (one GPU or "
            "none visible), so nothing is offloaded",
            stage,
        )
    return accelerate_config


def launch_stage(
    stage: str,
    *,
    profile: str | Path,
    overrides: Sequence[str] = (),
    store: str | Path,
    inputs: Mapping[str, str | Path],
    recipe: str | None = None,
    accelerate_config: Path | None = None,
    num_processes: int | None = None,
    env: Mapping[str, str] | None = None,
    offload_optimizer: bool = False,
    node: NodeRole | None = None,
) -> ArtifactRef | None:
    """Run one stage in a child process and return the ArtifactRef it wrote.

    `accelerate_config` None means `default_accelerate_config()` (ZeRO-3 on a multi-GPU node),
    unless `num_processes` is 1 or the stage generates (its declaration's `single_process`):
    then a plain process. `env` (default: this process' environment) is the child's
    environment. Bad requests raise ValueError before anything
    starts; a failed child raises StageLaunchError (stage, command, stderr tail).
    `offload_optimizer`: the default config is the one with AdamW's states on CPU; a machine
    whose DeepSpeed cannot step it (`devices.offload_problem`) raises ValueError at once.
    `node`: this machine's part of a launch over several (`tasks.multinode` starts one on each);
    only machine 0's part writes the ref and returns it, the others return None.
    """
    check_stage_request(stage, inputs, recipe)
    accelerate_config = launch_config(
        stage, accelerate_config, num_processes, offload_optimizer=offload_optimizer, node=node
    )
    with tempfile.TemporaryDirectory(prefix=f"rlt-{stage}-") as tmp:
        ref_out = Path(tmp) / "ref.json"
        command = accelerate_command(
            stage,
            profile=profile,
            overrides=overrides,
            store=store,
            inputs=inputs,
            recipe=recipe,
            accelerate_config=accelerate_config,
            num_processes=num_processes,
            ref_out=ref_out,
            node=node,
        )
        logger.info("stage %s: %s", stage, " ".join(command))
        try:
            run_streaming(command, os.environ if env is None else env, what=f"stage {stage!r}")
        except StageLaunchError as error:
            marker = transient_marker(ref_out)
            if marker.is_file():
                raise TransientStageError(f"{error}\ntransient: {marker.read_text()}") from None
            raise
        if node is not None and node.rank != 0:
            return None  # global rank 0, on machine 0, wrote the run's ref
        if not ref_out.is_file():
            raise StageLaunchError(
                f"stage {stage!r} exited 0 but wrote no artifact ref to {ref_out}.\n"
                f"command: {' '.join(command)}"
            )
        return ArtifactRef(**json.loads(ref_out.read_text()))
