"""What every stage task shares: the run it belongs to, its cache key, retries, how it runs.

A *run* is the JSON-ready dict every task receives: the profile, the `key.path=value`
overrides and the artifact store root (`flows.common.start_run` builds it). Tasks return
artifact refs (`{"uri", "digest"}`), never models or tables, and Prefect persists them as JSON.

Cache key (`StageCache`): the stage's own artifact key (`rlt_core.stages.specs`: the config it
reads, its inputs' identities and the rlt_core code it imports), prefixed with the stage name
(Prefect's cache records share one namespace): `<stage>-<key>` for `<store>/<stage>/<key>/`.
Prefect's own TASK_SOURCE would only hash the task's few lines. A cached ref is served without
running anything; a stage that is not cached still returns at once when its artifact is
finished (the stage functions check their manifest), and a killed one resumes from its
checkpoints.

Where a stage runs (`RLT_STAGE_PROCESS`): `subprocess` starts `python -m rlt_core.stages`
(through `accelerate launch` with ZeRO-3 on a multi-GPU node), so GPU memory is returned between
stages; `inline` calls the entry function in the flow's process (fast on CPU, where a new
interpreter costs ~15 s of imports); `auto` (default) is subprocess when CUDA is visible.

Where Ray placed it (`placement`): under the `ray` runner (`flows.runners`) a stage task runs
in a Ray worker that reserved the stage's GPUs and cores; the stage then uses exactly those:
as many torch threads as cores (inline, and OMP_NUM_THREADS for a subprocess), and the
subprocess sees the GPUs Ray assigned (CUDA_VISIBLE_DEVICES from Ray, none when it gave none),
so stages side by side never share a GPU or oversubscribe the cores.

Retries are for transient failures only (`is_transient`: the store or the network), never for
bad input, which fails at once with the stage's own message. Each waits
`RLT_RETRY_DELAY_SECONDS` (default 5) before the next try (`retry_delay_seconds`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import torch
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.results import ResultRecord, ResultRecordMetadata
from prefect.serializers import JSONSerializer
from pydantic import ValidationError

from rlt_core.artifacts import ArtifactRef, member_identity
from rlt_core.config import PipelineConfig, load_config
from rlt_core.identity import input_identity
from rlt_core.stages.launch import TransientStageError, launch_stage
from rlt_core.stages.plan import stage_cache_key
from rlt_core.stages.specs import spec_of
from rlt_core.store import ArtifactStore, StoreUnavailableError, translated
from rlt_core.store import is_transient as transient_error

logger = logging.getLogger("rlt_core.tasks")

Run = Mapping[str, Any]
# A task input: an upstream artifact ref, a {"ref", "file"} pair (a file inside an artifact),
# or a model reference string (an offline name or a hub id).
Input = Mapping[str, Any] | str
TRANSIENT = (StoreUnavailableError, TransientStageError, ConnectionError, TimeoutError)


def run_config(run: Run) -> PipelineConfig:
    """The run's validated pipeline config (profile + overrides)."""
    return load_config(run["profile"], run.get("overrides") or ())


def open_store(run: Run) -> ArtifactStore:
    """The run's artifact store (its local working store, and the remote root if any)."""
    return ArtifactStore.open(
        run["store"], cache_dir=run.get("cache_dir"), storage_options=run.get("storage_options")
    )


def input_digest(value: Input) -> str:
    """What identifies a task input in the key: what the stage itself computes from the local
    path (`rlt_core.identity.input_identity`), from the ref alone."""
    if isinstance(value, str):
        return input_identity(value)
    if "ref" in value:
        return member_identity(value["ref"]["digest"], value["file"])
    return str(value["digest"])


def local_input(store: ArtifactStore, value: Input) -> str:
    """A task input as the local path (or model reference) a stage function takes."""
    if isinstance(value, str):
        return value
    if "ref" in value:
        return str(store.fetch(value["ref"]) / value["file"])
    return str(store.fetch(value))


class StageCache(CachePolicy):
    """Prefect cache policy keyed like the stage's own artifacts (module docstring)."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """`<stage>-<key>` from the run's config, the inputs' digests and the stage's code;
        the cached record of that key is checked first (`drop_unverified_record`)."""
        run, recipe = inputs["run"], inputs.get("recipe")
        upstream = {
            name: input_digest(value)
            for name, value in inputs.items()
            if name not in ("run", "recipe") and value is not None
        }
        key = stage_cache_key(task_ctx.task.name, run_config(run), upstream, recipe)
        drop_unverified_record(task_ctx.task.result_storage, key, open_store(run))
        return key


# The result record a stage task writes: Prefect's JSON serializer with its defaults.
_RECORD_SERIALIZER = JSONSerializer().model_dump(mode="json")


def drop_unverified_record(storage: Any, key: str, store: ArtifactStore) -> None:
    """Delete the cached result record of `key` unless it is one this project wrote and the
    store still holds what it names, so Prefect recomputes the stage instead of serving it.

    Prefect reads a record with the serializer named INSIDE it (a planted `pickle` record would
    be unpickled on the cache lookup, whatever the task's `result_serializer`), so a record is
    only ever accepted when its serializer is exactly the default JSON one and its result is a
    plain `{"uri", "digest"}` whose artifact the store holds with that digest (a deleted or
    rebuilt artifact, a ref into another store, or one that climbs out with `..`, is not).
    This runs in `compute_key`, before Prefect looks the record up.
    """
    if storage is None:
        return
    fs, path = _record_path(storage, key)
    with translated(f"checking the cached result {key}"):  # unreachable: no cache lookup
        if not fs.exists(path):
            return
        content = fs.cat_file(path)
    try:
        reason = _record_problem(content, store)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        reason = f"it cannot be read ({type(error).__name__}: {error})"
    if reason is not None:
        logger.warning("cached result %s is not used and is removed: %s", key, reason)
        with translated(f"removing the cached result {key}"):
            fs.rm(path)


def _record_path(storage: Any, key: str) -> tuple[Any, str]:
    if isinstance(storage, (str, Path)):
        return fsspec.filesystem("file"), str(Path(storage).expanduser().resolve() / key)
    basepath = str(getattr(storage, "basepath", "")).rstrip("/")
    fs, base = fsspec.core.url_to_fs(basepath, **dict(getattr(storage, "settings", {}) or {}))
    return fs, f"{base}/{key}"


def _record_problem(content: bytes, store: ArtifactStore) -> str | None:
    """Why a record cannot be served (None: it can). The record is read first the way Prefect
    reads it, with its own `ResultRecord` model and no key beyond the model's: a record that
    model refuses would be decoded by Prefect's fallback JSON decoder, which builds any
    `__class__` it names."""
    try:
        ResultRecord.model_validate_json(content)
    except ValidationError as error:
        return f"Prefect's ResultRecord refuses it ({error.error_count()} error(s))"
    record = json.loads(content)
    extra = sorted(set(record) - set(ResultRecord.model_fields))
    extra += sorted(set(record.get("metadata") or {}) - set(ResultRecordMetadata.model_fields))
    if extra:
        return f"it has keys a record this project writes has not: {extra}"
    serializer = (record.get("metadata") or {}).get("serializer")
    if serializer != _RECORD_SERIALIZER:
        return f"its serializer is {serializer!r}, not the JSON one this project writes"
    ref = json.loads(record.get("result") or "null")
    if not (isinstance(ref, dict) and set(ref) == {"uri", "digest"}
            and all(isinstance(v, str) for v in ref.values())):  # fmt: skip
        return "its result is not an artifact ref"
    if not store.holds(ArtifactRef(**ref)):
        return f"the store no longer holds {ref['uri']} with digest {ref['digest'][:12]}"
    return None


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry store and network failures (raised in this process or
    in the stage's child, `TransientStageError`), nothing else: not bad input, not an
    out-of-memory error, not refused credentials."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and (
        isinstance(error, TRANSIENT) or transient_error(error)
    )


DEFAULT_RETRY_DELAY_SECONDS = 5.0


def retry_delay_seconds() -> float:
    """How long a stage task waits before retrying a transient failure: `RLT_RETRY_DELAY_SECONDS`
    (seconds, at least 0), else 5. Read when the tasks are defined (`tasks.stages` import)."""
    given = os.environ.get("RLT_RETRY_DELAY_SECONDS")
    if given is None:
        return DEFAULT_RETRY_DELAY_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(
            f"RLT_RETRY_DELAY_SECONDS={given!r} is not a number of seconds: the stage tasks wait "
            "that long before retrying a store or network failure. Set a finite number >= 0 (e.g. "
            f"30 for a slow store) or unset it for the default {DEFAULT_RETRY_DELAY_SECONDS:g}."
        )
    return seconds


def in_subprocess() -> bool:
    """Whether stages run as `python -m rlt_core.stages` children (module docstring)."""
    mode = os.environ.get("RLT_STAGE_PROCESS", "auto")
    if mode not in ("auto", "inline", "subprocess"):
        raise ValueError(f"RLT_STAGE_PROCESS={mode!r}: use auto, inline or subprocess")
    return mode == "subprocess" or (mode == "auto" and torch.cuda.is_available())


@dataclass(frozen=True)
class Placement:
    """What Ray reserved for the task running in this process: cores and GPU ids."""

    cpus: int
    gpus: tuple[str, ...]

    def env(self) -> dict[str, str]:
        """A stage subprocess' environment: these GPUs only, one thread per core."""
        return {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": ",".join(self.gpus),
            "OMP_NUM_THREADS": str(self.cpus),
        }


def placement() -> Placement | None:
    """The cores and GPUs Ray reserved for the task this process runs; None outside a Ray
    task (the sequential runner: the stage has the whole machine)."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    cpus = context.get_assigned_resources().get("CPU", 1)
    gpus = context.get_accelerator_ids().get("GPU", [])
    return Placement(cpus=max(1, int(cpus)), gpus=tuple(str(gpu) for gpu in gpus))


def execute(
    stage: str, run: Run, inputs: Mapping[str, Input | None], recipe: str | None = None
) -> dict[str, str]:
    """Run one stage on the run's store (inline or as a subprocess) and publish its artifact.

    Upstream artifacts are fetched into the local working store first; the returned ref points
    into the store root (a local path, or `s3://...` for a remote store). On a remote store
    the run holds the key's remote lease (`ArtifactStore.lease`): a run of the same key on
    another node waits, then returns the artifact the first one published.
    """
    store = open_store(run)
    if not store.remote:
        return _run_here(stage, run, store, inputs, recipe)
    upstream = {name: input_digest(v) for name, v in inputs.items() if v is not None}
    key = spec_of(stage).key(run_config(run), recipe, upstream)
    with store.lease(key.cache_key):
        done = store.published(key.stage, key.digest)
        if done is not None:
            logger.info("%s: published by another run: %s", stage, done.uri)
            return done.to_dict()
        return _run_here(stage, run, store, inputs, recipe)


def _run_here(
    stage: str,
    run: Run,
    store: ArtifactStore,
    inputs: Mapping[str, Input | None],
    recipe: str | None,
) -> dict[str, str]:
    paths = {name: local_input(store, v) for name, v in inputs.items() if v is not None}
    placed = placement()
    if placed is not None:
        torch.set_num_threads(placed.cpus)
        logger.info("%s: %d core(s), GPUs [%s] (Ray)", stage, placed.cpus, ",".join(placed.gpus))
    spec = spec_of(stage)
    given = spec.resources(run_config(run))
    launch = None
    if given.nodes > 1 and spec.trains:
        if placed is None:
            raise ValueError(
                f"resources.{stage}.nodes={given.nodes}: a run over several machines is placed "
                "by Ray (one bundle per node, tasks.multinode); run the flow with --runner ray "
                f"on a cluster of {given.nodes} or more nodes, or set resources.{stage}.nodes=1"
            )

        def launch(lease_env: Mapping[str, str]) -> None:
            """The stage's work as one launch over `given.nodes` Ray nodes, under this lease."""
            from tasks.multinode import launch_across_nodes

            ref, where = launch_across_nodes(
                stage,
                given,
                extra_env=lease_env,
                profile=run["profile"],
                overrides=run.get("overrides") or (),
                store=store.working,
                inputs=paths,
                recipe=recipe,
                offload_optimizer=spec.offloads(run_config(run)),
            )
            logger.info("%s: trained on %d nodes %s: %s", stage, len(where), where, ref.uri)

    elif in_subprocess() and not spec.in_driver:

        def launch(lease_env: Mapping[str, str]) -> None:
            """The stage's work in a child process, under this process' lease."""
            env = placed.env() if placed is not None else dict(os.environ)
            launch_stage(
                stage,
                profile=run["profile"],
                overrides=run.get("overrides") or (),
                store=store.working,
                inputs=paths,
                recipe=recipe,
                env={**env, **lease_env},
                # One process per GPU Ray gave (none given: one CPU process); outside Ray,
                # the GPUs this process sees.
                num_processes=max(1, len(placed.gpus)) if placed is not None else None,
                offload_optimizer=spec.offloads(run_config(run)),
            )

    local = spec.call(run_config(run), store.working, paths, recipe, launch=launch)
    ref = store.publish(Path(local.uri))
    logger.info("%s: %s", stage, ref.uri)
    return ref.to_dict()
