"""The code in a stage's key is the import closure of its module (rlt_core.code_closure)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from rlt_core import code_closure
from rlt_core.code_closure import code_fingerprint, module_closure
from rlt_core.stages.plan import stage_module
from rlt_core.stages.specs import STAGES

ALL_MODULES = sorted(
    ".".join(("rlt_core", *path.relative_to(code_closure.ROOT).with_suffix("").parts)).replace(
        ".__init__", ""
    )
    for path in code_closure.ROOT.rglob("*.py")
)


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the rlt_core sources that the closure reads instead of the real ones."""
    copy = tmp_path / "rlt_core"
    shutil.copytree(code_closure.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_closure, "ROOT", copy)
    return copy


def _touch(package: Path, module: str) -> None:
    path = code_closure.module_file(module)
    assert path is not None and path.is_relative_to(package)
    path.write_text(path.read_text() + "\n# touched\n")


@pytest.mark.parametrize("stage", STAGES)
def test_touching_a_module_changes_a_stage_key_iff_the_stage_imports_it(
    stage: str, package_copy: Path
) -> None:
    module = stage_module(stage)
    closure = set(module_closure(module))
    assert module in closure and "rlt_core.artifacts" in closure
    for name in ALL_MODULES:
        before = code_fingerprint(module)
        path = code_closure.module_file(name)
        assert path is not None
        original = path.read_text()
        _touch(package_copy, name)
        changed = code_fingerprint(module) != before
        path.write_text(original)
        assert changed == (name in closure), f"{stage}: touching {name}"


def test_indirect_imports_are_in_the_closure() -> None:
    # The RLT reward's log-prob math, two imports away from the stages that score with it:
    # the hand-kept lists of generate_traces and rank_traces had left it out.
    for stage in ("teacher_rl", "generate_traces", "rank_traces"):
        assert "rlt_core.logprobs" in module_closure(stage_module(stage)), stage
    # evaluate runs lighteval tasks from rlt_core.evaluation, not the reward.
    assert "rlt_core.reward.scorer" not in module_closure(stage_module("evaluate"))


def test_imports_anywhere_in_a_module_count(tmp_path: Path, monkeypatch) -> None:
    # A small package: `a` imports `b` inside a function (a lazy import runs when the stage
    # does), `sub.c` with a relative import, and `sub` imports `d`; `e` is imported by no one.
    package = tmp_path / "rlt_core"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .sub import c\n\ndef f():\n    from rlt_core import b\n",
        "b.py": "import os\n",
        "sub/__init__.py": "from rlt_core.d import thing\n",
        "sub/c.py": "from ..b import name\n",
        "d.py": "thing = 1\n",
        "e.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    monkeypatch.setattr(code_closure, "ROOT", package)
    assert module_closure("rlt_core.a") == (
        "rlt_core",
        "rlt_core.a",
        "rlt_core.b",
        "rlt_core.d",
        "rlt_core.sub",
        "rlt_core.sub.c",
    )
    assert module_closure("rlt_core.e") == ("rlt_core", "rlt_core.e")
    with pytest.raises(ValueError, match="not an rlt_core module"):
        module_closure("rlt_core.nothing_here")


def _bound_names(tree: ast.Module) -> set[str]:
    """The names a module binds at its top level (what `from it import name` can find
    without running its `__getattr__`)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_no_rlt_core_module_imports_through_a_lazy_package_facade() -> None:
    # The closure reads import statements; a name a package serves from `__getattr__`
    # (rlt_core.stages, rlt_core.evaluation load theirs on first use) would hide the module it
    # comes from. Inside rlt_core, import such names from their own module.
    hidden = []
    for name in ALL_MODULES:
        path = code_closure.module_file(name)
        assert path is not None
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            package = code_closure.module_file(node.module)
            if package is None or package.name != "__init__.py":
                continue
            bound = _bound_names(ast.parse(package.read_text()))
            for alias in node.names:
                submodule = code_closure.module_file(f"{node.module}.{alias.name}")
                if submodule is None and alias.name not in bound:
                    hidden.append(f"{name}: from {node.module} import {alias.name}")
    assert not hidden, "imports the closure cannot follow:\n" + "\n".join(hidden)


# The rlt_core modules that import a module by a computed name, and why that module is keyed
# anyway. Any other computed import would hide code from the stage keys.
COMPUTED_IMPORTS = {
    # the lazy facade: each name comes from a stage module, itself the root of its stage's key
    "rlt_core.stages": "stage modules, each keyed as its stage's own closure",
    # `StageSpec.entry_function`: the entry's module is `StageSpec.module`, the closure's root
    "rlt_core.stages.specs": "StageSpec.module, the root of the stage's closure",
    # lighteval's own built-in task modules (not rlt_core; lighteval's version is in the key)
    "rlt_core.evaluation.tasks": "lighteval's task modules, keyed by lighteval's version",
}


def test_string_imports_are_followed_or_explained() -> None:
    computed = set()
    for name in ALL_MODULES:
        path = code_closure.module_file(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if code_closure.is_import_module_call(node):
                target = code_closure.string_import(node)
                if target is None:
                    computed.add(name)
                elif target.startswith("rlt_core"):  # a constant name: in the closure
                    assert target in module_closure(name), (name, target)
    assert computed == set(COMPUTED_IMPORTS), (
        f"import_module with a computed name in {sorted(computed - set(COMPUTED_IMPORTS))}: "
        "the stage keys cannot see that code; import it by name, or explain here why it is "
        "keyed by other means"
    )


def test_a_constant_string_import_is_in_the_closure(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "rlt_core"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "import importlib\n\ndef f():\n    return importlib.import_module('rlt_core.b')\n"
    )
    (package / "b.py").write_text("")
    monkeypatch.setattr(code_closure, "ROOT", package)
    assert module_closure("rlt_core.a") == ("rlt_core", "rlt_core.a", "rlt_core.b")


def test_a_stage_module_outside_rlt_core_is_keyed_on_its_source_and_its_rlt_core_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stage kept in a package of its own (README "Adding a stage"): its own file and the
    # rlt_core modules it imports are its code; other packages' are not followed.
    (tmp_path / "own_stage.py").write_text("import pandas\nfrom rlt_core import formats\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    closure = module_closure("own_stage")
    assert "own_stage" in closure and "rlt_core.formats" in closure
    assert not any(name.startswith("pandas") for name in closure)
    before = code_fingerprint("own_stage")
    (tmp_path / "own_stage.py").write_text("import pandas\nfrom rlt_core import formats  # !\n")
    assert code_fingerprint("own_stage") != before
    with pytest.raises(ValueError, match="no Python source"):
        module_closure("math")  # a built-in module: nothing to key a stage on
