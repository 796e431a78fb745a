"""The package's shape (docs/design.md): layers, one concept per module, small units.

Every import in ``lrtune/`` is read from the source with ``ast``, lazy ones inside
functions too (a lazy import hides a cycle from Python, not from the design), and:

- no import cycle between lrtune's modules;
- the lower layers never reach up: ``lrtune.training`` and ``lrtune.search`` import
  nothing from ``group`` (a group's lifecycle), ``export``, ``dashboard``, ``report`` or
  ``cli``, and ``search`` does not use ``training.oracle`` (a benchmark's dense grids, not
  part of a study);
- a private name (``_x``) is private to its module: never imported from another module,
  nor reached as ``module._x`` through an imported lrtune module;
- no module over 400 lines, no function over 80.

Imports under ``if TYPE_CHECKING:`` are for annotations only and never run; they are left
out of the cycle check but still obey the layers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrtune"
DESIGN = PACKAGE.parent / "docs" / "design.md"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# (importer prefix, forbidden prefixes): a lower layer must not import a higher one.
LAYERS = {
    "lrtune.training": (
        "lrtune.group",
        "lrtune.export",
        "lrtune.dashboard",
        "lrtune.report",
        "lrtune.cli",
    ),
    "lrtune.search": (
        "lrtune.group",
        "lrtune.export",
        "lrtune.dashboard",
        "lrtune.report",
        "lrtune.cli",
        "lrtune.training.oracle",
    ),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _resolve(name: str) -> str | None:
    """The lrtune module ``name`` refers to (a submodule, or the package holding it)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``module``."""
    if node.level == 0:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@dataclass(frozen=True, kw_only=True)
class Import:
    """One lrtune name imported by one module."""

    importer: str
    target: str  # the lrtune module that runs when this import runs
    name: str | None  # the name taken from it (``from m import name``), None for ``import m``
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


@cache
def _imports(module: str) -> tuple[Import, ...]:
    tree = _tree(module)
    type_only = _type_checking_lines(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name) if alias.name.startswith("lrtune") else None
                if target:
                    found.append(
                        Import(
                            importer=module,
                            target=target,
                            name=None,
                            line=node.lineno,
                            type_only=node.lineno in type_only,
                        )
                    )
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            if not base.startswith("lrtune"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from pkg import sub` imports the submodule; `from mod import name`, mod.
                target = sub if sub in MODULES else _resolve(base)
                if target:
                    found.append(
                        Import(
                            importer=module,
                            target=target,
                            name=None if sub in MODULES else alias.name,
                            line=node.lineno,
                            type_only=node.lineno in type_only,
                        )
                    )
    return tuple(found)


def _all_imports() -> list[Import]:
    return [imp for module in MODULES for imp in _imports(module)]


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_even_through_lazy_imports() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in _all_imports():
        if not imp.type_only and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.target}"
        for imp in _all_imports()
        for low, high in LAYERS.items()
        if (imp.importer == low or imp.importer.startswith(low + "."))
        and any(imp.target == h or imp.target.startswith(h + ".") for h in high)
    ]
    assert not wrong, "a lower layer imports a higher one:\n" + "\n".join(wrong)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_attribute_uses(module: str) -> list[str]:
    """``alias._x`` where ``alias`` names an lrtune module imported by ``module``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lrtune") and (target := _resolve(alias.name)):
                    aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    uses = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = ast.unparse(node.value)
            if owner in aliases and aliases[owner] != module:
                uses.append(f"{module}:{node.lineno} uses {aliases[owner]}.{node.attr}")
    return uses


def test_no_private_name_crosses_a_module() -> None:
    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.target}.{imp.name}"
        for imp in _all_imports()
        if imp.name and _private(imp.name) and imp.target != imp.importer
    ]
    wrong += [use for module in MODULES for use in _private_attribute_uses(module)]
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_line_limit() -> None:
    long = [
        f"{name}.{node.name} ({n} lines, line {node.lineno})"
        for name in MODULES
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_import_names_a_module_that_exists() -> None:
    missing = []
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.ImportFrom):
                module = _absolute(name, node)
                if module.startswith("lrtune") and module not in MODULES:
                    missing.append(f"{name}:{node.lineno}: from {module}")
            elif isinstance(node, ast.Import):
                missing += [
                    f"{name}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("lrtune") and a.name not in MODULES
                ]
    assert not missing, missing


def test_design_md_maps_every_module() -> None:
    """docs/design.md's tables name every module (a command's module by its command)."""
    text = DESIGN.read_text()
    commands = next(line for line in text.splitlines() if line.startswith("| `cli/<command>.py`"))
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and rel != "cli/__init__.py":
            continue  # a package's re-exports, described with the package
        if f"`{rel}`" in text or (rel.startswith("cli/") and f"`{path.stem}`" in commands):
            continue
        missing.append(rel)
    assert not missing, f"modules missing from docs/design.md: {missing}"


def test_the_checks_see_what_they_should() -> None:
    """The reader itself: a lazy import, a TYPE_CHECKING one and a relative one are seen."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lrtune.errors import UserError\n"
        "def f():\n    from lrtune.schedules import forms\n    import lrtune.masking as m\n"
    )
    assert _type_checking_lines(tree) == {3}
    assert "lrtune.schedules.forms" in MODULES and "lrtune.masking" in MODULES
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
