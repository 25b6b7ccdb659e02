"""The sandbox's module layout: the core is handed its emulations, so no import circle runs through it, and no
emulation reads the client's dialect code (a shared mistake would make every test prove nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

import kling_cli.sandbox

PACKAGE = Path(kling_cli.sandbox.__file__).parent
PREFIX = "kling_cli.sandbox"


def imports_of(path: Path) -> set[str]:
    """Every kling_cli module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()}
            if node.module == PREFIX and submodules:  # `from kling_cli.sandbox import kling_api`: modules
                found.update(f"{PREFIX}.{name}" for name in submodules)
            else:
                found.add(node.module)
    return {name for name in found if name.startswith("kling_cli")}


def graph() -> dict[str, set[str]]:
    modules = {PREFIX if p.name == "__init__.py" else f"{PREFIX}.{p.stem}": p for p in PACKAGE.glob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_circle_in_the_sandbox():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in edges[module]:
            assert state.get(target) != "open", f"import circle: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in edges:
        if module not in state:
            visit(module, [module])


def test_the_core_stands_on_no_emulation():
    edges = graph()
    for base in ("core", "server", "store"):
        assert not {m for m in edges[f"{PREFIX}.{base}"] if m.endswith("_api")}, base


def test_no_emulation_imports_the_client_dialects():
    for path in PACKAGE.glob("*.py"):
        assert not {m for m in imports_of(path) if m.startswith("kling_cli.providers")}, path.name
