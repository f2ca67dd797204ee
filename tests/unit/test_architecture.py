"""The house rules of src/pgferry, checked: no import cycles (function-level imports count
too), no module over 500 lines, no formatter opt-outs, and a core that knows no orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "pgferry"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("pgferry", *path.relative_to(SRC).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → pgferry modules it imports anywhere (``TYPE_CHECKING`` blocks excluded)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgferry"):
                assert node.module is not None
                subs = [f"{node.module}.{a.name}" for a in node.names]
                subs = [s for s in subs if s in mods]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pgferry")]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def _is_package_of(pkg: str, mod: str) -> bool:
    return mod.startswith(pkg + ".")


def test_no_import_cycles() -> None:
    mods = _modules()
    graph = _imports(mods)
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        stack.append(node)
        for nxt in graph[node]:
            # A package importing its own submodules (its public API) is not a cycle.
            if _is_package_of(nxt, node) or _is_package_of(node, nxt):
                continue
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, stack, done)
        stack.pop()
        done.add(node)

    done: set[str] = set()
    for mod in sorted(graph):
        if mod not in done:
            visit(mod, [], done)
    assert cycles == []


def test_no_module_over_500_lines_and_no_formatter_opt_outs() -> None:
    long = {}
    skips = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            long[name] = text.count("\n")
        if "fmt: skip" in text or "fmt: off" in text:
            skips.append(name)
    assert long == {}
    assert skips == []


def test_core_never_imports_an_orchestrator() -> None:
    for name, path in _modules().items():
        if name.startswith(("pgferry.airflow", "pgferry.dagster")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for imported in names:
                    top = imported.split(".")[0]
                    assert top not in ("airflow", "dagster"), (name, imported)
                    assert not imported.startswith(("pgferry.airflow", "pgferry.dagster")), (
                        name,
                        imported,
                    )
