"""One training stage run over several machines (`resources.<stage>.nodes`), placed by Ray.

A 32B student or a bigger teacher outgrows one 8-GPU node; the paper's ZeRO-3 launch then spans
several. Ray's own way to hold machines together for one job is a placement group: one bundle
of the stage's `gpus` and `cpus` per node, with `STRICT_SPREAD` so that no two bundles share a
node. Each bundle runs one Ray task that starts that machine's part of one `accelerate launch`
(`rlt_core.stages.launch.NodeRole`: `--num_machines`, `--machine_rank`, the main machine's
address, static rendezvous); bundle 0 is machine 0, whose global rank 0 publishes into the
work area of its node, and the others write nothing but their checkpoint shards. The group is
reserved whole before any process starts, and released when the run ends or fails.

Why not Ray Train's `TorchTrainer`: it starts the training processes itself inside Ray actors
(its own process group, its own checkpoint handling), whereas every stage here is a process
that `accelerate launch` starts with DeepSpeed's config and that resumes from the HF Trainer's
checkpoints; a placement group keeps that launch exactly as it is on one node.

Where the parts write: the ZeRO-3 checkpoint of a run is written by every process into the
run's work area (`<store>/.work/<stage>/<key>/checkpoints`), so the nodes must see the same
local working store path on a shared filesystem (NFS, Lustre: the usual cluster setup), as the
two Ray nodes of the rehearsal on one machine do. A killed part fails the whole launch (the
other parts are cancelled); running the stage again resumes from the last complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from rlt_core.artifacts import ArtifactRef
from rlt_core.config.resources import StageResources
from rlt_core.stages.launch import NodeRole, StageLaunchError, launch_stage

logger = logging.getLogger("rlt_core.tasks")

# How long the cluster may take to give every bundle (nodes join, other runs finish).
PLACEMENT_TIMEOUT_S = float(os.environ.get("RLT_PLACEMENT_TIMEOUT_S", "600"))


def launch_across_nodes(
    stage: str,
    resources: StageResources,
    *,
    extra_env: Mapping[str, str] | None = None,
    **launch: Any,
) -> tuple[ArtifactRef, list[str]]:
    """Run `stage` as one launch over `resources.nodes` Ray nodes; return its ArtifactRef and
    the Ray node id each machine rank ran on. `launch` holds `launch_stage`'s arguments
    (profile, overrides, store, inputs, recipe, accelerate_config, offload_optimizer);
    `extra_env` is added to every part's environment (the run's lease, `rlt_core.owner`).

    Raises TimeoutError when the cluster cannot give the nodes within PLACEMENT_TIMEOUT_S and
    StageLaunchError when a part fails (the other parts are stopped first).
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes = resources.nodes
    bundle = {"CPU": float(resources.cpus)}
    if resources.gpus:
        bundle["GPU"] = float(resources.gpus)
    group = placement_group([bundle] * nodes, strategy="STRICT_SPREAD")
    try:
        ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise TimeoutError(
                f"stage {stage!r} asks for {nodes} nodes with {bundle} each "
                f"(resources.{stage}), but the Ray cluster did not give them within "
                f"{PLACEMENT_TIMEOUT_S:g} s (STRICT_SPREAD: one bundle per node). Add nodes, "
                f"or lower resources.{stage}.nodes; RLT_PLACEMENT_TIMEOUT_S sets the wait."
            )

        def on(index: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)

        main_address, node_part = ray.remote(_main_address), ray.remote(_node_part)
        address, port = ray.get(
            main_address.options(scheduling_strategy=on(0), num_cpus=0).remote()
        )
        parts = [
            node_part.options(
                scheduling_strategy=on(rank),
                num_cpus=resources.cpus,
                num_gpus=resources.gpus,
                max_retries=0,
            ).remote(stage, NodeRole(nodes, rank, address, port), resources.cpus, extra_env, launch)
            for rank in range(nodes)
        ]
        results = _all_or_stop(ray, parts)
    finally:
        remove_placement_group(group)
    ref = results[0][1]
    assert ref is not None, "machine 0 returned no artifact ref"
    return ref, [node_id for node_id, _ in results]


def _all_or_stop(ray: Any, parts: list[Any]) -> list[Any]:
    """Every part's result; when one fails, the others are stopped and its error raised."""
    pending = list(parts)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(done[0])
        except Exception as error:
            for part in pending:
                ray.cancel(part, force=True)  # its launcher dies, and with it its processes
            cause = getattr(error, "cause", None) or error
            raise StageLaunchError(f"one machine's part of the launch failed: {cause}") from None
    return ray.get(parts)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _main_address() -> tuple[str, int]:
    """The address machine 0 is reached at, and a port free there for the rendezvous."""
    import ray

    return ray.util.get_node_ip_address(), _free_port()


def _node_part(
    stage: str,
    role: NodeRole,
    cpus: int,
    extra_env: Mapping[str, str] | None,
    launch: Mapping[str, Any],
) -> tuple[str, ArtifactRef | None]:
    """This machine's part of the launch, in the bundle Ray placed it in: as many torch threads
    per process as the bundle's cores, the GPUs Ray assigned."""
    import ray

    env = {**os.environ, **(extra_env or {}), "OMP_NUM_THREADS": str(cpus)}
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    logger.info("%s: machine %d of %d on this node", stage, role.rank, role.machines)
    ref = launch_stage(stage, **launch, env=env, node=role, num_processes=max(1, len(gpus)))
    return ray.get_runtime_context().get_node_id(), ref
