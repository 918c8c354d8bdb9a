"""Keys before running, and what a run would do: cached, or run and why.

The stage entry functions key their artifact directories with `StageSpec.key`; an orchestrator
that wants to skip a finished stage without calling it (Prefect's task cache) computes the same
key up front with `stage_cache_key`. `plan_stage` goes one step further for `rlt plan`: it
looks the key up in the store and, when the stage must run, compares it with the keys of the
stage's earlier artifacts there (every manifest records its key) to say why: which config
value changed, which input, which module of its code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec

from rlt_core.artifacts import MANIFEST, StageKey, environment_changes
from rlt_core.config import PipelineConfig
from rlt_core.owner import WORK_DIR
from rlt_core.stages.specs import STAGES, spec_of
from rlt_core.store import check_store_uri, translated

__all__ = [
    "STAGES",
    "PlanRow",
    "StoreIndex",
    "plan_stage",
    "stage_cache_key",
    "stage_module",
]
MAX_CONFIG_CHANGES = 4  # config paths shown per reason line
REFERENCES = "references."  # the key's identities of the config's references


def stage_module(stage: str) -> str:
    """The module of `stage`'s entry function (its import closure is the stage's code)."""
    return spec_of(stage).module


def stage_cache_key(
    stage: str, cfg: PipelineConfig, upstream: Mapping[str, str], recipe: str | None = None
) -> str:
    """`<stage>-<digest>`: the run's artifact directory key, prefixed with the stage name for
    the orchestrator's cache (one namespace for every stage). `upstream` maps input names to
    identities (`rlt_core.identity.input_identity`)."""
    return spec_of(stage).key(cfg, recipe, upstream).cache_key


class StoreIndex:
    """The finished artifacts of a store (a local directory or `s3://...`), read through fsspec
    and cached per stage: their manifests, by digest."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        check_store_uri(root, storage_options)  # StoreURIError before anything is contacted
        self.root = root.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.root, **dict(storage_options or {}))
        self._manifests: dict[str, dict[str, dict[str, Any]]] = {}

    def manifests(self, stage: str) -> dict[str, dict[str, Any]]:
        """The manifest of every finished `<stage>/<digest>/` in the store, by digest."""
        if stage not in self._manifests:
            found = {}
            with translated(f"reading the {stage} manifests of {self.root}"):
                for file in sorted(self.fs.glob(f"{self.path}/{stage}/*/{MANIFEST}")):
                    digest = file.rstrip("/").split("/")[-2]
                    with self.fs.open(file, "r") as handle:
                        found[digest] = json.load(handle)
            self._manifests[stage] = found
        return self._manifests[stage]

    def started(self, stage: str, digest: str) -> bool:
        """Whether an unfinished run of `<stage>/<digest>` left its work area in the store (a
        rerun resumes there; `rlt_core.owner`)."""
        with translated(f"reading {self.root}"):
            return bool(self.fs.exists(f"{self.path}/{WORK_DIR}/{stage}/{digest}"))

    def uri(self, stage: str, digest: str) -> str:
        """Where the artifact `<stage>/<digest>` is (or would be) in the store."""
        return f"{self.root}/{stage}/{digest}"


@dataclass
class PlanRow:
    """One stage run of a plan: its key, and `cached`, or `run` with the reasons."""

    label: str
    stage: str
    recipe: str | None
    status: str  # "cached" | "run"
    key: str | None  # the artifact digest; None while an upstream stage still has to run
    reasons: list[str] = field(default_factory=list)
    uri: str | None = None
    digest: str | None = None  # the finished artifact's content digest (cached rows)
    gpus: int = 0  # what one run is given (`resources.<stage>`), over all its nodes
    cpus: int = 1  # likewise
    nodes: int = 1  # the machines one run spans (`resources.<stage>.nodes`)
    environment: list[str] = field(default_factory=list)  # cached: what differs from then
    fit: dict[str, Any] | None = None  # GPU runs: the memory estimate (`rlt_core.fit.Fit`)
    # training stages: the rows the run trains on (its recipe's num_train_samples; "all")
    train_rows: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what `rlt plan --json` prints), without the content digest."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "digest"}


def plan_stage(
    label: str,
    stage: str,
    cfg: PipelineConfig,
    recipe: str | None,
    upstream: Mapping[str, str],
    pending: Iterable[str],
    index: StoreIndex,
) -> PlanRow:
    """Whether the run `label` of `stage` is cached in `index`'s store, or why it would run.

    `upstream`: the identities of its inputs that are known (finished upstream artifacts,
    files, model references); `pending`: the labels of upstream runs that have to run first
    (the key is unknown until they have)."""
    pending = list(dict.fromkeys(pending))  # each upstream run once
    spec = spec_of(stage)
    given = spec.resources(cfg)
    row = PlanRow(label, stage, recipe, "run", None, gpus=given.gpus * given.nodes,
                  cpus=given.cpus * given.nodes, nodes=given.nodes)  # fmt: skip
    if given.gpus:
        row.fit = spec.estimate(cfg, recipe).to_dict()
    section = spec.config_args(cfg, recipe).get("cfg")
    if hasattr(section, "num_train_samples"):
        row.train_rows = section.num_train_samples or "all"
    if pending:
        row.reasons = [f"upstream {name} runs first" for name in pending]
        return row
    key = spec.key(cfg, recipe, upstream)
    row.key = key.digest
    manifest = index.manifests(stage).get(key.digest)
    if manifest is not None:
        row.status, row.uri, row.digest = "cached", index.uri(stage, key.digest), manifest["digest"]
        row.environment = environment_changes(manifest.get("versions"))
        return row
    row.reasons = _why(key, index.manifests(stage).values())
    if index.started(stage, key.digest):
        row.reasons.append("an unfinished run of this key is in the store: it resumes")
    return row


def _why(key: StageKey, earlier: Iterable[Mapping[str, Any]]) -> list[str]:
    """What differs between `key` and the nearest earlier key of the same stage."""
    records = [m["key"] for m in earlier if m.get("key")]
    if not records:
        return ["no earlier run of this stage in the store"]
    diffs = [_differences(key, record) for record in records]
    return min(diffs, key=lambda d: (len(d), d))


def _differences(key: StageKey, record: Mapping[str, Any]) -> list[str]:
    reasons = []
    old_config, new_config = _flatten(record.get("config")), _flatten(key.config)
    changed = sorted(k for k in old_config.keys() | new_config.keys()
                     if old_config.get(k, "—") != new_config.get(k, "—"))  # fmt: skip
    # what a model or data source named in the config holds (rlt_core.identity)
    contents = [k.removeprefix(REFERENCES) for k in changed if k.startswith(REFERENCES)]
    changed = [k for k in changed if not k.startswith(REFERENCES)]
    if changed:
        shown = [f"{k}: {old_config.get(k, '—')!r} -> {new_config.get(k, '—')!r}"
                 for k in changed[:MAX_CONFIG_CHANGES]]  # fmt: skip
        more = (
            f" (+{len(changed) - MAX_CONFIG_CHANGES} more)"
            if len(changed) > MAX_CONFIG_CHANGES
            else ""
        )
        reasons.append("config changed: " + "; ".join(shown) + more)
    if contents:
        reasons.append("input changed: " + ", ".join(f"{k} (its content)" for k in contents))
    old_inputs, new_inputs = dict(record.get("upstream") or {}), key.upstream
    inputs = sorted(n for n in old_inputs.keys() | new_inputs.keys()
                    if old_inputs.get(n) != new_inputs.get(n))  # fmt: skip
    if inputs:
        reasons.append("input changed: " + ", ".join(inputs))
    old_modules, new_modules = dict(record.get("modules") or {}), key.modules
    modules = sorted(m for m in old_modules.keys() | new_modules.keys()
                     if old_modules.get(m) != new_modules.get(m))  # fmt: skip
    if modules:
        reasons.append("code changed: " + ", ".join(modules))
    elif record.get("code") != key.code:
        reasons.append("code changed")
    return reasons


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for name, item in value.items():
            flat |= _flatten(item, f"{prefix}{name}.")
        return flat
    return {prefix.rstrip("."): value}
