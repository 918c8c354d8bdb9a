"""Planning a flow without running it (`rlt plan`, `--plan`): a `Planner` stands in for the
`Runner` (`Caller` is either), and `print_plan` shows what would run and why."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.common import Runner, _variant, stage_run_id, store_root, with_strict_env
from rlt_core.config import PipelineConfig, load_config
from rlt_core.stages.plan import PlanRow, StoreIndex, plan_stage
from rlt_core.stages.specs import SPECS, check_config
from rlt_core.store import check_store_uri
from tasks.runtime import input_digest


@dataclass
class Planner:
    """Stands in for a Runner to plan a flow without running it (`rlt plan`): each stage call
    is looked up in the store (`rlt_core.stages.plan.plan_stage`) and answered with the cached
    artifact's ref, or with a pending ref that makes its downstream stages wait on it."""

    run: dict[str, Any]
    cfg: PipelineConfig
    index: StoreIndex
    rows: list[PlanRow] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # what the flow's report is given
    once: dict[str, dict[str, str]] = field(default_factory=dict)  # stage runs planned

    def __call__(self, task: Any, label: str, **inputs: Any) -> dict[str, str]:
        """The ref `task` would return, without running it; records the plan row (for the
        report, which is assembled after the stages and not cached: its inputs)."""
        if task.name not in SPECS:
            self.report = dict(inputs)
            return {"uri": "", "digest": "", "pending": label}
        same = stage_run_id(self.cfg, task.name, inputs)  # one row per stage run, as the
        if same in self.once:  # Runner submits it once (an ablation's shared teacher_sft)
            return self.once[same]
        recipe = inputs.pop("recipe", None)
        upstream, pending = {}, []
        for name, value in inputs.items():
            ref = value.get("ref", value) if isinstance(value, Mapping) else None
            if ref is not None and "pending" in ref:
                pending.append(ref["pending"])
            elif value is not None:
                upstream[name] = input_digest(value)
        row = plan_stage(label, task.name, self.cfg, recipe, upstream, pending, self.index)
        self.rows.append(row)
        if row.status == "cached":
            self.once[same] = {"uri": str(row.uri), "digest": str(row.digest)}
        else:
            self.once[same] = {"uri": "", "digest": "", "pending": label}
        return self.once[same]

    def derive(self, extra_overrides: Sequence[str]) -> Planner:
        """A planner for the same store with more overrides (an ablation's variant)."""
        variant = start_plan(**_variant(self.run, extra_overrides))
        variant.index, variant.rows = self.index, self.rows  # one plan for the whole flow
        variant.report, variant.once = self.report, self.once
        return variant


def start_plan(
    profile: str,
    overrides: Sequence[str] | None,
    store: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    strict_env: bool = False,
) -> Planner:
    """A Planner over `store` (read only: nothing is created or written)."""
    overrides = with_strict_env(overrides, strict_env)
    cfg = load_config(profile, list(overrides or ()))  # ConfigError before anything else
    check_config(cfg)  # and what the stages' declarations refuse in it
    check_store_uri(store, storage_options)
    root = store_root(store)
    run = {
        "profile": profile,
        "overrides": list(overrides or ()),
        "store": root,
        "storage_options": dict(storage_options or {}) or None,
    }
    return Planner(run, cfg, StoreIndex(root, storage_options))


Caller = Runner | Planner  # what the flows' DAG functions call stages through


def print_plan(planner: Planner, *, as_json: bool = False) -> list[dict[str, Any]]:
    """Print the plan's rows (a table, or JSON with `as_json`) and return them as dicts."""
    rows = [row.to_dict() for row in planner.rows]
    if as_json:
        summary = {
            "profile": planner.run["profile"],
            "overrides": planner.run["overrides"],
            "store": planner.run["store"],
            "stages": rows,
            "cached": sum(r["status"] == "cached" for r in rows),
            "run": sum(r["status"] == "run" for r in rows),
            "fits": all(r["fit"] is None or r["fit"]["fits"] is not False for r in rows),
        }
        print(json.dumps(summary, indent=2))
        return rows
    table = Table(title=f"rlt plan: {planner.run['profile']} on {planner.run['store']}")
    columns = ("stage run", "status", "key", "GPUs / CPUs", "fits (GiB per GPU)",
               "why it runs (cached: made with)")  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "[green]cached[/]" if row["status"] == "cached" else "[yellow]run[/]"
        why = "\n".join(row["reasons"])
        if row["environment"]:  # cached under other package versions: kept (lenient default)
            why = "made with " + ", ".join(row["environment"])
        given = f"{row['gpus']} / {row['cpus']}"
        if row.get("nodes", 1) > 1:
            given += f" on {row['nodes']} nodes"
        fits = _fit_cell(row["fit"])
        table.add_row(_run_cell(row), status, row["key"] or "—", given, fits, escape(why))
    console = Console(width=max(Console().width, 140))
    console.print(table)
    cached = sum(r["status"] == "cached" for r in rows)
    console.print(f"{cached} cached, {len(rows) - cached} to run (the report is rebuilt after).")
    unfit = [row["label"] for row in rows if row["fit"] and row["fit"]["fits"] is False]
    if unfit:
        names = escape(", ".join(unfit))
        console.print(
            f"[red]{len(unfit)} stage run(s) would not fit their GPUs[/] ({names}): a flow on "
            "this profile is refused before any stage (RLT_IGNORE_FIT=1 overrides)."
        )
    return rows


def _run_cell(row: Mapping[str, Any]) -> str:
    """The stage-run column: its label, and for a training run its recipe and rows."""
    cell = escape(row["label"])
    rows = row.get("train_rows")
    if rows is not None:
        count = f"{rows:,}" if isinstance(rows, int) else rows
        recipe = f"{row['recipe']}: " if row.get("recipe") else ""
        cell += f"\n[dim]{escape(recipe)}{count} training rows[/]"
    return cell


def _fit_cell(fit: Mapping[str, Any] | None) -> str:
    """The fit column: "—" for CPU runs, else fits / does not fit, peak / capacity, the knob."""
    if not fit:
        return "—"
    if fit["fits"] is None:
        return escape(str(fit["unknown"]))
    text = f"{fit['peak_gib']:.1f} / {fit['gpu_memory_gib']:g}"
    if fit["fits"]:
        return f"[green]fits[/] {text}"
    knob = f"; {fit['notes'][0]}" if fit["notes"] else ""
    return f"[red]does NOT fit[/] {text}{escape(knob)}"
