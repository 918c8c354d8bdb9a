"""The layers: rlt_core is the library and never imports prefect, flows or tasks
(ARCHITECTURE.md), and no module imports from a layer above its own (`LAYERS`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RLT_CORE = ROOT / "rlt_core"
FORBIDDEN = ("prefect", "flows", "tasks")

# The project's units, lowest first: the one written record of the layering. A module may
# import from its own unit and from units of LOWER layers only: never from a unit of its own
# layer (they stay independent of each other) nor from one above. A new module or package of
# rlt_core, or a new top-level package, has to be placed here (`test_every_unit_has_a_layer`).
LAYERS: tuple[tuple[str, ...], ...] = (
    # names, rules and pure helpers: nothing of the project below them
    ("rlt_core", "rlt_core.config", "rlt_core.formats", "rlt_core.layout", "rlt_core.failures",
     "rlt_core.code_closure", "rlt_core.figures", "rlt_core.logprobs", "rlt_core.remote_lease",
     "rlt_core.batches"),
    # records on disk, the device policy, data sets, the GPU memory estimate
    # and the endpoint refine_traces calls
    ("rlt_core.artifacts", "rlt_core.devices", "rlt_core.data", "rlt_core.fit",
     "rlt_core.endpoint"),
    # models by reference, the owner of a stage run, SFT examples
    ("rlt_core.models", "rlt_core.owner", "rlt_core.sft_data"),
    # the artifact store and what keys a stage's inputs
    ("rlt_core.store", "rlt_core.identity"),
    ("rlt_core.reward",),
    ("rlt_core.generation",),  # the keep rule ranks with the reward
    ("rlt_core.training", "rlt_core.evaluation"),  # GRPO rollouts and lighteval use generation
    ("rlt_core.stages",),  # every stage: declarations, entry functions, the launcher
    ("rlt_core.reports", "rlt_core.cli"),
    ("tasks",),  # Prefect tasks over the stages
    ("flows",),
    ("deployments",),
)  # fmt: skip
PACKAGES = ("rlt_core", "tasks", "flows", "deployments")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_rlt_core_source_never_imports_the_orchestration_layers():
    offenders = {
        str(path.relative_to(RLT_CORE)): sorted(_imported_modules(path) & set(FORBIDDEN))
        for path in RLT_CORE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_rlt_core_does_not_load_prefect():
    # Import every rlt_core module in a fresh interpreter and check sys.modules afterwards.
    code = (
        "import importlib, pkgutil, sys, rlt_core\n"
        "for m in pkgutil.walk_packages(rlt_core.__path__, 'rlt_core.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('prefect', 'flows', 'tasks'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_print_in_library_code():
    calls = []
    for path in RLT_CORE.rglob("*.py"):
        if path.name == "__main__.py" or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                calls.append(f"{path.relative_to(RLT_CORE)}:{node.lineno}")
    assert calls == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """The unit a dotted module name belongs to (`rlt_core.reward.spans` -> `rlt_core.reward`),
    or None outside the project."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] != "rlt_core" or len(parts) == 1:
        return parts[0]
    return f"rlt_core.{parts[1]}"


def _project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every project import in `path`, function-level ones included;
    `from pkg import name` counts as `pkg.name` when that is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                as_path = ROOT / candidate.replace(".", "/")
                is_module = as_path.with_suffix(".py").exists() or as_path.is_dir()
                found.append((node.lineno, candidate if is_module else node.module))
    return [(line, module) for line, module in found if _unit(module) is not None]


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_module_imports_from_its_own_layer_or_above():
    # A package's command line (`__main__`) is an entry point above every layer: it may use
    # any unit (`python -m rlt_core.config validate` checks a config against the stages'
    # declarations too), and no library module imports one (the next test).
    layer = {unit: index for index, units in enumerate(LAYERS) for unit in units}
    offenders = []
    for path in _sources():
        if path.name == "__main__.py":
            continue
        own = _unit(_module_name(path))
        for line, module in _project_imports(path):
            target = _unit(module)
            if target != own and layer[target] >= layer[own]:
                where = "its own layer" if layer[target] == layer[own] else "a higher layer"
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({where})")
    assert offenders == []


def test_no_library_module_imports_a_command_line():
    # Only the `rlt` command (rlt_core.cli, flows.cli) gathers the packages' command lines.
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources()
        if path.name not in ("__main__.py", "cli.py")
        for line, module in _project_imports(path)
        if module.endswith(".__main__")
    ]
    assert offenders == []


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(path)) for path in _sources()}
    placed = [unit for units in LAYERS for unit in units]
    assert len(placed) == len(set(placed)), "a unit is listed twice"
    assert units - set(placed) == set(), "place the new units in LAYERS"
    assert set(placed) - units == set(), "LAYERS names a unit that no longer exists"
