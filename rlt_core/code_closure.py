"""What code a stage runs: the rlt_core modules its entry module imports, transitively.

Part of every stage key (`code_fingerprint`): an edit in any rlt_core module a stage imports,
however indirectly, invalidates that stage's cached artifacts, and an edit elsewhere does not.
The import graph is read from the source with `ast`, never by importing, and every import
statement counts: module level, inside functions (the lazy imports a stage makes when it
runs), under `if TYPE_CHECKING` too (harmless: a type-only module rarely changes behaviour, and
a wider key only costs a rerun), and so does `importlib.import_module("rlt_core.a.b")` with a
constant name (a computed one is refused by a test). Importing `rlt_core.a.b` runs the
packages' `__init__` files too, so those are in the closure; `from rlt_core.a import b` pulls
`a/b.py` when `b` is a module and `a/__init__.py` either way. Hand-kept module lists drifted
(teacher_rl's left out the log-prob module its reward runs); this one is computed, and a file
is parsed again whenever it changes, so a long-running process sees edits too.

A stage whose entry module lies outside rlt_core (a stage kept in a package of its own) is
keyed on that module's source and on the rlt_core modules it imports, transitively; imports of
other packages are not followed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent  # the rlt_core package
PACKAGE = ROOT.name


def module_file(module: str) -> Path | None:
    """The source file of an rlt_core module or package (`rlt_core.a.b`), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return _ROOTS.get(module)
    path = ROOT.joinpath(*parts[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _packages_of(module: str) -> list[str]:
    """`rlt_core.a.b` -> [`rlt_core`, `rlt_core.a`]: the packages importing it runs."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


_PARSED: dict[tuple[str, Path, int, int], frozenset[str]] = {}  # by file version (mtime, size)


def direct_imports(module: str) -> frozenset[str]:
    """The rlt_core modules `module`'s source imports (every import statement in it).

    Parsed once per version of the file (its path, modification time and size), so a
    long-running process still sees every edit.
    """
    path = module_file(module)
    if path is None:
        raise ValueError(f"{module!r} is not an rlt_core module (no {PACKAGE}/... source)")
    stat = path.stat()
    version = (module, path, stat.st_mtime_ns, stat.st_size)
    if version not in _PARSED:
        _PARSED[version] = _parse_imports(module, path)
    return _PARSED[version]


def _parse_imports(module: str, path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = (
                _resolve_relative(module, path.name == "__init__.py", node)
                if node.level
                else node.module or ""
            )
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
        elif (name := string_import(node)) is not None:
            found.add(name)
    return frozenset(
        name
        for candidate in found
        for name in (candidate, *_packages_of(candidate))
        if module_file(name) is not None
    )


def is_import_module_call(node: ast.AST) -> bool:
    """Whether `node` calls `importlib.import_module` (or a bare `import_module`)."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "import_module"


def string_import(node: ast.AST) -> str | None:
    """The module an `import_module("rlt_core....")` call names by a constant string, or
    None. A call with a computed name cannot be followed; the project allows it only where the
    module it loads is keyed by other means (`tests/unit/test_code_closure.py`)."""
    if not is_import_module_call(node):
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


_ROOTS: dict[str, Path] = {}  # entry modules outside rlt_core whose closure was asked for


def _outside_root(module: str) -> None:
    """Make `module`, an entry module outside rlt_core, a source `module_file` knows."""
    found = importlib.util.find_spec(module)
    origin = Path(found.origin) if found is not None and found.origin else None
    if origin is None or origin.suffix != ".py":
        raise ValueError(f"{module!r}: no Python source to key a stage on (found: {origin})")
    _ROOTS[module] = origin


def module_closure(module: str) -> tuple[str, ...]:
    """`module`, the packages it sits in and every rlt_core module they import, transitively;
    sorted. (For a module outside rlt_core: itself and the rlt_core modules it imports.)"""
    seen: set[str] = set()
    outside = module.split(".")[0] != PACKAGE
    if outside:
        _outside_root(module)
    todo = [module, *([] if outside else _packages_of(module))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(name) - seen)
    return tuple(sorted(seen))


def module_hashes(module: str) -> dict[str, str]:
    """sha256 (16 hex digits) of the source of each module of `module_closure(module)`: what
    `rlt plan` compares to say which module changed."""
    hashes = {}
    for name in module_closure(module):
        path = module_file(name)
        assert path is not None  # module_closure keeps only modules with a source file
        stat = path.stat()
        version = (path, stat.st_mtime_ns, stat.st_size)
        if version not in _HASHED:
            _HASHED[version] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        hashes[name] = _HASHED[version]
    return hashes


_HASHED: dict[tuple[Path, int, int], str] = {}  # by file version, like _PARSED


def code_fingerprint(module: str) -> str:
    """sha256 (16 hex digits) over the names and sources of `module_closure(module)`."""
    text = "\n".join(f"{name} {sha}" for name, sha in sorted(module_hashes(module).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
