"""Will a stage run fit its GPUs? Peak memory per GPU, estimated from the model's shape and the
recipe before anything loads (`rlt plan`'s fit column; `check_fit` refuses a run that cannot).

The shape comes from the model's `config.json` (a local directory, or the Hugging Face cache
when the hub id was downloaded before); without it the estimate says "shape unknown offline".
Every figure is an estimate in bytes per GPU of what dominates; the parts are reported so a user
sees which knob moves what:

- training (teacher_sft, student_sft, teacher_rl, student_rl), one process per GPU:
  - model states: on several GPUs, DeepSpeed ZeRO-3 (`configs/accelerate/zero3.yaml`, or
    `zero3_offload.yaml` with `resources.<stage>.offload_optimizer`) with
    DeepSpeed's own estimate (`estimate_zero3_model_states_mem_needs`: 4 bytes per parameter of
    the largest layer, plus 18 bytes per parameter over the GPUs; with the optimizer offloaded
    2, with parameters offloaded too 0); on one GPU the whole model in the training dtype:
    weights, gradients and AdamW's two moments (4 x dtype bytes per parameter);
  - activations of one micro-batch at the recipe's context: with gradient checkpointing each
    layer's input (layers x tokens x hidden) plus one layer recomputed, without it every
    layer's saved tensors (`layer_activation_bytes`; attention by SDPA, no tokens^2 term);
  - the output head: TRL's fused LM head (both trainers, `trl.trainer.utils.add_fused_lm_head`)
    projects 4,096 tokens x 32,768 vocabulary columns at a time into one reused tile and never
    holds the logits; its backward accumulates the hidden states' and the head weight's
    gradients in fp32 (scored tokens x hidden, vocabulary x hidden) and casts them back;
  - teacher_rl also holds GRPO's reference model (beta > 0; sharded like the policy), the
    RLT reward's frozen student (whole, in the dtype, on every GPU), the reward's logits chunk
    for teacher and student, and colocated vLLM rollouts (`ROLLOUT_MEMORY_SHARE` of the GPU);
- vLLM engines (generate_traces, rank_traces, raw_traces, teacher_eval, evaluate): weights over
  tensor parallelism, and the KV cache that vLLM's share of the GPU (0.9) leaves, as the number
  of full-length sequences (prompt allowance + new tokens) it holds at once.

A run fits when its peak is at most the GPU's memory (`resources.<stage>.gpu_memory_gib`).
These are planning figures, not guarantees: the allocator's fragmentation, CUDA context (~0.5
GiB) and NCCL buffers come on top (`HEADROOM`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlt_core.batches import max_micro_batch, plan_batch
from rlt_core.config import PipelineConfig, StageResources

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TRL_TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE: tokens per tile
TRL_VOCAB_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE: vocabulary per tile
ROLLOUT_MEMORY_SHARE = 0.3  # TRL's vllm_gpu_memory_utilization for colocated rollouts
ENGINE_MEMORY_SHARE = 0.9  # vLLM's default gpu_memory_utilization (generation, evaluation)
ENGINE_OVERHEAD = 1.5 * GIB  # vLLM's activations, sampler and CUDA graphs beside weights and KV
PROMPT_TOKENS = 2048  # prompt allowance of a generation (question, solution, system prompt)
HEADROOM = 0.5 * GIB  # CUDA context and allocator slack, counted in every GPU run

FitKind = Literal["sft", "grpo", "engine"]


@dataclass(frozen=True)
class FitPlan:
    """What the planner needs of a stage that runs a model (its declaration's `fit`,
    `rlt_core.stages.specs`): how a run holds GPU memory (`kind`: an SFT or a GRPO training
    step under ZeRO-3, or a generation engine), the model it loads when that is not its
    recipe's own `model` (`model(cfg)`: an engine runs a teacher's or a student's), and whether
    each step also scores with the RLT reward's student (teacher_rl). The recipe is the
    stage's own config argument `cfg` (its declaration's `reads`)."""

    kind: FitKind
    model: Callable[[PipelineConfig], str | None] | None = None
    scores_with_reward: bool = False

    @property
    def trains(self) -> bool:
        """A training step (SFT or GRPO), not an engine."""
        return self.kind != "engine"


class FitError(RuntimeError):
    """A run whose stage runs cannot fit their GPUs (`check_fit`)."""


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, from a causal LM's `config.json`."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> ModelShape:
        """From a `config.json` dict (Llama / Qwen2 field names)."""
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            name=name,
            layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            # Qwen2 has biases on q, k and v; Llama has them when `attention_bias` says so
            qkv_bias=str(config.get("model_type", "")).startswith("qwen2")
            or bool(config.get("attention_bias", False)),
        )

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: attention, SwiGLU MLP and the two norms."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * (q + 2 * kv) + q * self.hidden
        bias = (q + 2 * kv) if self.qkv_bias else 0
        return attention + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        """The token embedding (vocabulary x hidden); an untied output head is as big."""
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Every parameter: embedding, layers, final norm, and an untied output head."""
        head = 0 if self.tied else self.embedding_params
        return self.embedding_params + self.layers * self.layer_params + self.hidden + head

    @property
    def largest_layer_params(self) -> int:
        """DeepSpeed's "largest layer": the biggest single module, the embedding here."""
        return max(self.embedding_params, self.hidden * self.intermediate)

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel: int = 1) -> int:
        """K and V of every layer for one token on one GPU (KV heads split over TP ranks)."""
        kv_heads = max(1, self.kv_heads // tensor_parallel)
        return 2 * self.layers * kv_heads * self.head_dim * dtype_bytes

    def layer_activation_bytes(self, tokens: int, dtype_bytes: int) -> int:
        """What one decoder layer saves for backward over `tokens` tokens (micro-batch x
        length): the two norm inputs and outputs, q, k and v, RoPE's two saved tensors each
        for q and k (the input and its rotated half), the attention output, and the MLP's
        gate, up, activation and product (SDPA attention saves no tokens^2 matrix). Checked
        against a measured CPU forward (`benchmarks/fit_check.py --parts activations`)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_token = 4 * self.hidden + 3 * q + 4 * kv + q + 4 * self.intermediate
        return tokens * dtype_bytes * per_token


def zero3_model_states(
    params: int, largest_layer_params: int, gpus: int, *, offload_optimizer: bool = False,
    offload_params: bool = False,
) -> int:  # fmt: skip
    """GPU bytes of model states per GPU under ZeRO-3 on one node of `gpus`: DeepSpeed's
    `estimate_zero3_model_states_mem_needs` (zero_init on; the `additional_buffer_factor`
    only scales its CPU figure)."""
    largest = 4 * largest_layer_params
    if offload_params:
        return largest
    if offload_optimizer:
        return largest + int(2 * params / gpus)
    return largest + int(18 * params / gpus)


def zero3_offload_cpu_bytes(params: int) -> int:
    """CPU bytes of one node whose ZeRO-3 run offloads the optimizer (zero_init on):
    DeepSpeed's estimate, 16 bytes per parameter x its 1.5 buffer factor."""
    return int(params * 16 * 1.5)


@dataclass(frozen=True)
class Fit:
    """The estimate for one stage run: peak bytes per GPU by part, against its GPUs."""

    stage: str
    model: str
    gpus: int
    gpu_memory_gib: float
    parts: dict[str, float] = field(default_factory=dict)  # GiB per GPU
    notes: list[str] = field(default_factory=list)
    unknown: str | None = None  # why there is no estimate (shape unknown offline, no GPU)
    micro_batch: int | None = None  # training: samples per GPU micro-batch (its activations)

    @property
    def peak_gib(self) -> float:
        """The sum of the parts: GiB per GPU at the run's peak."""
        return round(sum(self.parts.values()), 2)

    @property
    def fits(self) -> bool | None:
        """None when nothing was estimated (CPU run, unknown shape)."""
        if self.unknown is not None:
            return None
        return self.peak_gib <= self.gpu_memory_gib

    def summary(self) -> str:
        """One cell of `rlt plan`: fits / does not fit by how much, and the knob."""
        if self.unknown is not None:
            return self.unknown
        text = f"{self.peak_gib:.1f} / {self.gpu_memory_gib:g} GiB"
        if self.fits:
            return f"fits: {text}"
        over = self.peak_gib - self.gpu_memory_gib
        knob = f"; {self.notes[0]}" if self.notes else ""
        return f"does NOT fit (+{over:.1f} GiB): {text}{knob}"

    def describe(self) -> str:
        """The parts, largest first: `model states 12.3, activations 4.5, ...` (GiB)."""
        ranked = sorted(self.parts.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {gib:.1f}" for name, gib in ranked)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`rlt plan --json`): the fields, the peak and the verdict."""
        out = asdict(self)
        out.update(peak_gib=self.peak_gib, fits=self.fits)
        return out


def model_shape(ref: str) -> ModelShape | None:
    """The shape of model `ref` (a directory, or a hub id found in the local Hugging Face
    cache), or None when its `config.json` is not on this machine."""
    path = Path(ref).expanduser()
    if (path / "config.json").is_file():
        return ModelShape.from_config(json.loads((path / "config.json").read_text()), ref)
    if "/" not in ref or path.exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, (str, os.PathLike)) and Path(cached).is_file():
        return ModelShape.from_config(json.loads(Path(cached).read_text()), ref)
    return None


def _gib(value: float) -> float:
    return round(value / GIB, 2)


def activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, checkpointing: bool) -> int:
    """What a forward saves for backward over `tokens` tokens (micro-batch x length): with
    gradient checkpointing each layer's input plus one layer recomputed, without it every
    layer's saved tensors."""
    layer = shape.layer_activation_bytes(tokens, dtype_bytes)
    if checkpointing:
        return shape.layers * tokens * shape.hidden * dtype_bytes + layer
    return shape.layers * layer


def output_head_bytes(shape: ModelShape, scored_tokens: int, dtype_bytes: int) -> int:
    """TRL's fused LM head at its peak (the backward): one token x vocabulary tile in the
    compute dtype, and fp32 gradients of the hidden states and of the head's weight, each
    cast back to the dtype."""
    tile = min(scored_tokens, TRL_TOKEN_TILE) * min(shape.vocab, TRL_VOCAB_TILE) * dtype_bytes
    return tile + (scored_tokens + shape.vocab) * shape.hidden * (4 + dtype_bytes)


def training_parts(
    shape: ModelShape, *, dtype: str, gpus: int, micro_batch: int, tokens: int,
    checkpointing: bool, output_tokens: int, offload_optimizer: bool = False,
) -> dict[str, float]:  # fmt: skip
    """GiB per GPU of one training process: model states, activations, output head."""
    e = DTYPE_BYTES[dtype]
    if gpus > 1:
        states = zero3_model_states(
            shape.params, shape.largest_layer_params, gpus, offload_optimizer=offload_optimizer
        )
    else:
        states = 4 * e * shape.params
    return {
        "model states": _gib(states),
        "activations": _gib(activation_bytes(shape, micro_batch * tokens, e, checkpointing)),
        "output head": _gib(output_head_bytes(shape, micro_batch * output_tokens, e)),
        "headroom": _gib(HEADROOM),
    }


def engine_parts(
    shape: ModelShape, *, dtype: str, tensor_parallel: int, gpu_memory_gib: float,
    sequence_tokens: int, share: float = ENGINE_MEMORY_SHARE,
) -> tuple[dict[str, float], int]:  # fmt: skip
    """GiB per GPU of a vLLM engine (it takes `share` of the GPU) and how many full-length
    sequences its KV cache holds at once."""
    e = DTYPE_BYTES[dtype]
    weights = e * shape.params / tensor_parallel
    budget = share * gpu_memory_gib * GIB
    kv_room = budget - weights - ENGINE_OVERHEAD
    per_sequence = shape.kv_bytes_per_token(e, tensor_parallel) * sequence_tokens
    sequences = max(0, int(kv_room // per_sequence))
    parts = {
        "engine weights": _gib(weights),
        "engine KV cache": _gib(max(kv_room, 0)),
        "engine overhead": _gib(ENGINE_OVERHEAD),
    }
    return parts, sequences


def fit_stage(
    stage: str,
    cfg: PipelineConfig,
    recipe: Any,
    *,
    plan: FitPlan,
    given: StageResources,
    gpus: int | None = None,
) -> Fit:
    """The estimate for one run of `stage` with its `recipe` (the config section it runs),
    planned as its declaration says (`plan`), on the GPUs it is given (`given`), over all its
    nodes: ZeRO-3 shards the model states over every GPU of the launch (`gpus` overrides the
    count)."""
    count = given.gpus * given.nodes if gpus is None else gpus
    model = plan.model(cfg) if plan.model is not None else recipe.model
    base = {"stage": stage, "model": model or "", "gpus": count,
            "gpu_memory_gib": given.gpu_memory_gib}  # fmt: skip
    if count == 0:
        return Fit(**base, unknown="CPU run (no GPU to fit)")
    if model is None:
        return Fit(**base, unknown="no model (nothing to fit)")
    shape = model_shape(model)
    if shape is None:
        return Fit(**base, unknown=f"shape unknown offline ({model}: no config.json here)")
    if plan.trains:
        return _training_fit(stage, cfg, recipe, plan, given, shape, base)
    return _engine_fit(stage, cfg, recipe, shape, base)


def _training_fit(
    stage: str,
    cfg: PipelineConfig,
    spec: Any,
    plan: FitPlan,
    given: StageResources,
    shape: ModelShape,
    base: dict,
) -> Fit:
    gpus = base["gpus"]
    notes: list[str] = []
    sft = plan.kind == "sft"
    knob = max_micro_batch(plan.kind, given.micro_batch)
    offload = given.offload_optimizer and gpus > 1
    try:
        micro = plan_batch(spec.batch_size, gpus, knob).per_device
    except ValueError as error:
        return Fit(**base, unknown=f"no batch split: {error}")
    if sft:
        tokens = output = spec.max_length
    else:
        tokens = PROMPT_TOKENS + spec.max_completion_length
        output = spec.max_completion_length
    parts = training_parts(
        shape, dtype=spec.dtype, gpus=gpus, micro_batch=micro, tokens=tokens,
        checkpointing=spec.gradient_checkpointing, output_tokens=output,
        offload_optimizer=offload,
    )  # fmt: skip
    if offload:  # the states are sharded over every node's GPUs, so over the nodes' memory
        cpu = _gib(zero3_offload_cpu_bytes(shape.params)) / given.nodes
        notes.append(f"optimizer offloaded: ~{cpu:.0f} GiB of each node's CPU memory")
    e = DTYPE_BYTES[spec.dtype]
    if plan.kind == "grpo":
        if spec.beta > 0:  # GRPO's reference model, sharded like the policy
            parts["reference model"] = _gib(e * shape.params / gpus)
        if spec.generation_backend == "vllm" and spec.vllm_mode == "colocate":
            parts["colocated rollouts"] = round(ROLLOUT_MEMORY_SHARE * base["gpu_memory_gib"], 2)
    if plan.scores_with_reward:
        student = model_shape(cfg.reward.student_model)
        if student is None:
            notes.append(f"reward student {cfg.reward.student_model}: shape unknown offline")
        else:
            parts["reward student"] = _gib(e * student.params)
            chunk = cfg.reward.logprob_chunk_size
            parts["reward logits"] = _gib(chunk * (shape.vocab + student.vocab) * 4)
    estimate = Fit(**base, parts=parts, notes=notes, micro_batch=micro)
    advice = _advice(estimate, stage, spec, gpus, offload)
    return Fit(**base, parts=parts, notes=advice + notes, micro_batch=micro)


def _advice(fit: Fit, stage: str, spec: Any, gpus: int, offloaded: bool) -> list[str]:
    """The knob that would make a run that does not fit, fit (first the biggest part's)."""
    if fit.fits:
        return []
    parts = fit.parts
    biggest = max(parts, key=parts.get)
    if biggest == "activations" and not spec.gradient_checkpointing:
        return [f"turn on gradient checkpointing (--set {stage}...gradient_checkpointing=true)"]
    if biggest == "activations" and fit.micro_batch > 1:
        return [f"hold fewer samples per micro-batch (--set resources.{stage}.micro_batch=1)"]
    if biggest == "activations":
        return ["shorten the context (max_length / max_completion_length)"]
    if biggest == "colocated rollouts":
        return ["run rollouts on a vLLM server (vllm_mode=server) instead of colocated"]
    if gpus < 8:
        return [f"give it more GPUs (--set resources.{stage}.gpus=8) for ZeRO-3 sharding"]
    if not offloaded:
        return [f"offload the optimizer to CPU (--set resources.{stage}.offload_optimizer=true)"]
    return ["use bigger GPUs or more of them (this estimate is for one node)"]


def _engine_fit(stage: str, cfg: PipelineConfig, recipe: Any, shape: ModelShape, base: dict) -> Fit:
    new_tokens = getattr(recipe, "max_new_tokens", None) or cfg.teacher_rl.max_completion_length
    tp = getattr(recipe, "tensor_parallel_size", 1)
    sequence = PROMPT_TOKENS + new_tokens
    e = DTYPE_BYTES[recipe.dtype]
    if recipe.backend != "vllm":  # transformers' generate: the weights and one batch's KV
        batch = getattr(recipe, "batch_size", 1)
        parts = {
            "weights": _gib(e * shape.params),
            "KV cache": _gib(batch * sequence * shape.kv_bytes_per_token(e)),
            "headroom": _gib(HEADROOM),
        }
        return Fit(**base, parts=parts, notes=[f"transformers generation, batch {batch}"])
    parts, sequences = engine_parts(
        shape, dtype=recipe.dtype, tensor_parallel=tp, gpu_memory_gib=base["gpu_memory_gib"],
        sequence_tokens=sequence,
    )  # fmt: skip
    parts["headroom"] = _gib(HEADROOM)
    notes = [f"KV cache holds {sequences} sequence(s) of {sequence} tokens at once"]
    if sequences < 1:
        notes.insert(0, f"raise tensor_parallel_size (--set {stage}.tensor_parallel_size=2)")
        parts["missing KV room"] = _gib(shape.kv_bytes_per_token(e, tp) * sequence)
    return Fit(**base, parts=parts, notes=notes)


def ignored() -> bool:
    """Whether the user asked to run what does not fit (`RLT_IGNORE_FIT=1`)."""
    return os.environ.get("RLT_IGNORE_FIT", "") not in ("", "0")


def check_fit(fits: list[Fit]) -> None:
    """Raise FitError naming every stage run that does not fit, why, and the fix."""
    bad = [fit for fit in fits if fit.fits is False]
    if not bad:
        return
    lines = [
        f"- {fit.stage} ({fit.model}, {fit.gpus} x {fit.gpu_memory_gib:g} GiB): needs about "
        f"{fit.peak_gib:.1f} GiB per GPU ({fit.describe()})"
        + (f"; {fit.notes[0]}" if fit.notes else "")
        for fit in bad
    ]
    raise FitError(
        "these stage runs would run out of GPU memory after their models load:\n"
        + "\n".join(lines)
        + "\nChange the knob named for each (see `rlt plan`), give the stage bigger GPUs "
        "(--set resources.<stage>.gpu_memory_gib=...), or run anyway with RLT_IGNORE_FIT=1 if "
        "you know better than this estimate."
    )
