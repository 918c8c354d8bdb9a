"""The audit table of docs/paper_index.md ("Audit: every table and figure of the paper on
`paper-7b`") says what each flow makes of the paper; this plans every flow on paper-7b (as
`rlt plan --flow` does, running nothing) and checks the table against the plan: the rows of
each report table, and each training run's recipe and rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.cli import FLOWS, plan_flow

INDEX = Path(__file__).resolve().parents[2] / "docs" / "paper_index.md"
SECTION = "## Audit: every table and figure of the paper on `paper-7b`"
RANGE = re.compile(r"`([^`]*?)(\d+)([^`]*)` to `([^`]*?)(\d+)([^`]*)`")


def _cells(line: str) -> list[str]:
    """A markdown table line's cells (`\\|` inside a cell is a literal bar)."""
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _items(cell: str) -> list[str]:
    """The backticked items of a cell; `a 1 b` to `a 16 b` stands for the 16 of them."""
    items = []
    for part in cell.split("<br>"):
        ranged = RANGE.search(part)
        if ranged and ranged[1] == ranged[4] and ranged[3] == ranged[6]:
            start, end = int(ranged[2]), int(ranged[5])
            items += [f"{ranged[1]}{n}{ranged[3]}" for n in range(start, end + 1)]
        else:
            items += re.findall(r"`([^`]+)`", part)
    return items


def _audit() -> list[dict[str, str]]:
    text = INDEX.read_text()
    assert SECTION in text, f"{INDEX} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = _cells(lines[0])
    return [dict(zip(header, _cells(line), strict=True)) for line in lines[2:]]


def _flow(cell: str) -> str | None:
    name = cell.split()[0] if cell and cell != "—" else None
    return name if name in FLOWS else None


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every flow planned on paper-7b over an empty store, with no chat endpoint; the
    ablation with both of Table 9's ablations, as the audit table runs it."""
    store = str(tmp_path_factory.mktemp("empty-store"))
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            patch.delenv(name, raising=False)
        return {flow: plan_flow(flow, "paper-7b", [], store, lam=0.0, alpha=0.0) for flow in FLOWS}


def test_every_flow_is_audited_and_every_audited_flow_exists() -> None:
    flows = {_flow(row["Flow"]) for row in _audit()} - {None}
    assert flows == set(FLOWS)


def test_the_report_rows_are_the_ones_the_flows_plan(plans: dict) -> None:
    for row in _audit():
        flow, table = _flow(row["Flow"]), row["Report table"]
        if flow is None or row["Report rows"].startswith("as "):
            continue
        report = plans[flow].report["tables"]
        planned = [" | ".join(entry["labels"].values()) for entry in report[table]]
        assert planned == _items(row["Report rows"]), (row["Paper item"], planned)


def test_the_training_runs_are_the_ones_the_flows_plan_with_their_recipes_and_rows(
    plans: dict,
) -> None:
    audited: dict[str, list[str]] = {}
    for row in _audit():
        flow = _flow(row["Flow"])
        if flow is not None and not row["Training runs"].startswith("as "):
            audited.setdefault(flow, []).extend(_items(row["Training runs"]))
    for flow, planner in plans.items():
        planned = []
        for plan_row in (r.to_dict() for r in planner.rows):
            if plan_row.get("train_rows") is not None:
                recipe = plan_row.get("recipe") or plan_row["stage"]
                planned.append(f"{plan_row['label']} = {recipe}: {plan_row['train_rows']}")
        # A run may serve two paper items (Table 1's students cold-start Table 2's RL).
        assert sorted(set(planned)) == sorted(set(audited[flow])), flow


def test_table_2s_gpt_row_is_said_not_run_without_an_endpoint(plans: dict) -> None:
    notes = plans["full-pipeline"].report["notes"]
    assert notes and all("not run: no endpoint configured" in note for note in notes)
