"""Adding a stage is one module, one declaration, one config section and the profile values
that set it: nothing else in the project is edited (README, "Adding a stage").

The toy stage here lives in a package of its own, written into a temporary folder: a config
section (`ToyConfig`), an entry function and its `StageSpec`. The test then adds the
declaration to `SPECS` and the section to the pipeline config (what a line in
`rlt_core/stages/specs.py` and one in `rlt_core/config/schema.py` do for a stage of the
project), and shows that the planner lists it, a flow runs it through its Prefect task on a
real server and a second run is a cache hit, and its key moves with its config value."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from prefect import flow

from flows.common import start_run
from flows.plan import start_plan
from rlt_core import artifacts
from rlt_core.config import PipelineConfig, loader
from rlt_core.stages.specs import SPECS

pytestmark = pytest.mark.e2e

TOY_MODULE = '''
"""How many rows a table has, times a factor: a stage kept in a package of its own."""

import json
from dataclasses import dataclass, field

import pandas as pd

from rlt_core.config import key_dict
from rlt_core.owner import Outcome
from rlt_core.stages.specs import InputSpec, StageSpec


@dataclass(frozen=True)
class ToyConfig:
    """Counts a table's rows (toy stage)."""

    factor: int = field(default=1, metadata={"help": "what the row count is multiplied by"})


@dataclass(frozen=True)
class ToyFiles:
    counts: str = "counts.json"


def count_rows(work, cfg, table):
    rows = len(pd.read_parquet(table)) * cfg.factor
    (work.out / ToyFiles.counts).write_text(json.dumps({"rows": rows}))
    return Outcome({"rows": rows})


TOY = StageSpec(
    name="toy",
    summary="Counts a table's rows (a toy stage).",
    entry="toy_stage:count_rows",
    inputs=(InputSpec("table", "file"),),
    reads=lambda cfg, recipe: {"cfg": cfg.toy},
    key_config=lambda cfg: {"recipe": key_dict(cfg)},
    outputs=ToyFiles(),
    runs="driver",
)
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The toy stage's package on the path, its declaration in SPECS and its config section on
    the pipeline config (all undone after the test)."""
    package = tmp_path / "toy-package"
    package.mkdir()
    (package / "toy_stage.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(package))
    module = importlib.import_module("toy_stage")
    monkeypatch.setitem(sys.modules, "toy_stage", module)  # dropped after the test
    monkeypatch.setitem(SPECS, "toy", module.TOY)

    # `toy: ToyConfig = _sub(ToyConfig)` in PipelineConfig, for this test only
    section = dataclasses.field(default_factory=module.ToyConfig, metadata={"help": "toy"})
    with_toy = dataclasses.make_dataclass(
        "WithToy", [("toy", module.ToyConfig, section)], bases=(PipelineConfig,), frozen=True
    )
    monkeypatch.setattr(loader, "PipelineConfig", with_toy)
    return module


@flow(name="rlt-test-toy")
def toy_flow(store: str, table: str, overrides: list[str]) -> dict:
    """The toy stage alone, through the flows' own Runner and its Prefect task."""
    from tasks import stages

    with start_run("tiny", overrides, store) as run:
        counted = run(stages.toy, "toy", table=table)
        return {"ref": run.result(counted), "state": counted.state.name}


def test_a_new_stage_is_a_module_a_declaration_and_a_config_section(
    toy: ModuleType, prefect_api: str, tmp_path: Path
) -> None:
    table = tmp_path / "table.parquet"
    pd.DataFrame({"question": ["a", "b", "c"]}).to_parquet(table)
    store = str(tmp_path / "store")

    planner = start_plan("tiny", [], store)  # what `rlt plan` builds its table from
    from tasks import stages

    planner(stages.toy, "toy", table=str(table))
    (row,) = planner.rows
    assert (row.stage, row.status) == ("toy", "run") and (row.gpus, row.cpus) == (0, 1)

    first = toy_flow(store, str(table), [])
    assert first["state"] == "Completed"
    assert json.loads((Path(first["ref"]["uri"]) / "counts.json").read_text()) == {"rows": 3}
    assert artifacts.read_manifest(first["ref"]["uri"])["key"]["modules"]["toy_stage"]
    again = toy_flow(store, str(table), [])
    assert again["state"] == "Cached" and again["ref"] == first["ref"]

    changed = start_plan("tiny", ["toy.factor=2"], store)
    changed(stages.toy, "toy", table=str(table))
    (row,) = changed.rows
    assert row.status == "run" and any("factor: 1 -> 2" in why for why in row.reasons)
    doubled = toy_flow(store, str(table), ["toy.factor=2"])
    assert doubled["state"] == "Completed" and doubled["ref"]["uri"] != first["ref"]["uri"]
    assert json.loads((Path(doubled["ref"]["uri"]) / "counts.json").read_text()) == {"rows": 6}
