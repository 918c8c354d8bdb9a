"""rlt_core is the library: it never imports prefect, flows or tasks (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RLT_CORE = Path(__file__).resolve().parents[2] / "rlt_core"
FORBIDDEN = ("prefect", "flows", "tasks")


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
