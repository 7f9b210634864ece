"""No import cycle in the repository's packages (flowmgr_tui, server): every import counts, lazy
ones and TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "flowmgr_tui"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(
    node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool, modules: set[str]
) -> set[str]:
    """The package's modules one import statement loads (submodules named in a from-import
    too); relative imports are resolved against `here`."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = here.split(".")[: len(here.split(".")) - node.level + (1 if is_pkg else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    found = set()
    for name in names:
        while name and name not in modules:  # `import flowmgr_tui.x.Y` -> flowmgr_tui.x
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _targets(node, name, path.name == "__init__.py", modules)
        # Importing a.b runs a/__init__.py first.
        parent = name.rpartition(".")[0]
        if parent:
            deps.add(parent)
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when there is none (depth-first, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_flowmgr_tui_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "flowmgr_tui.app" in graph and "flowmgr_tui.screens.dashboard" in graph
    assert find_cycle(graph) == []


def test_the_repository_has_no_import_cycle() -> None:
    """server and flowmgr_tui together: a cycle through both packages counts too. Here a
    package's `__init__` may re-export its own modules (server.core.validation does): only
    imports written in the code count, not the parent package Python runs first."""
    repo = ROOT.parent
    graph: dict[str, set[str]] = {}
    for package in ("server", "flowmgr_tui"):
        graph.update(import_graph(repo / package))
    for name, deps in graph.items():
        deps.discard(name.rpartition(".")[0])
    modules = set(graph)
    for name, path in ((n, _path_of(repo, n)) for n in list(graph)):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _targets(node, name, path.name == "__init__.py", modules) - {name}
    assert "server.core.manager" in graph and "server.wire.pushes" in graph
    assert find_cycle(graph) == []


def _path_of(repo: Path, module: str) -> Path:
    base = repo.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def test_nothing_in_the_package_imports_the_app() -> None:
    users = [m for m, deps in import_graph().items() if "flowmgr_tui.app" in deps]
    assert users == ["flowmgr_tui.__main__"], "screens post messages; only `flowmgr` builds it"


def test_the_check_finds_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "screens").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "screens" / "__init__.py").write_text("")
    (pkg / "app.py").write_text("from flowmgr_tui.screens.main import Main\n")
    (pkg / "screens" / "main.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..app import App\n"
    )
    assert find_cycle(import_graph(pkg)) == [
        "flowmgr_tui.app",
        "flowmgr_tui.screens.main",
        "flowmgr_tui.app",
    ]
