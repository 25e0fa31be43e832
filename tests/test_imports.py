"""Every module imports on its own in a fresh interpreter, and the project's module graph (the
imports a module runs when it is loaded) has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vtaplab import PROJECT_ROOT

PACKAGES = ("vtaplab", "components", "policy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES
           for p in sorted((PROJECT_ROOT / package).rglob("*.py"))
           if "__pycache__" not in p.parts and p.name != "__main__.py"}


def _load_time_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports when it is loaded: module-level statements (also
    inside a top-level ``if``/``try``, not under ``if TYPE_CHECKING``), not those inside
    functions."""
    me = _module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1]
                                    + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                       "typing.TYPE_CHECKING"):
                continue  # annotations only: never imported when the module loads
            elif isinstance(node, ast.If | ast.Try):
                walk(node.body)
                walk(node.orelse)
                for handler in getattr(node, "handlers", []):
                    walk(handler.body)

    walk(ast.parse(path.read_text(encoding="utf-8")).body)
    return {name for name in found if name in MODULES and name != me}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_module_graph_has_no_cycle():
    graph = {name: _load_time_imports(path) for name, path in MODULES.items()}
    assert sum(map(len, graph.values())) > len(MODULES) // 2  # the walk found the imports
    assert _cycles(graph) == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module first, in an interpreter of its own: an import-time cycle shows up as an
    ImportError only when the cycle is entered from the right module."""
    # policy/ is a Pulumi policy pack: its modules run inside the pack's own process, where
    # building the PolicyPack starts a server, so only the vtaplab and components modules here.
    names = sorted(n for n in MODULES if not n.startswith("policy"))
    assert len(names) > 40
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda name: subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, timeout=120, check=False), names))
    failed = {name: run.stderr.strip().splitlines()[-1:] for name, run in zip(names, runs,
                                                                                 strict=True)
              if run.returncode != 0}
    assert failed == {}
