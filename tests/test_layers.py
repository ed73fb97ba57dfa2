"""The layers: `asr` (recognition) never imports `server` or the command line, `server`
never imports the command line, and no module imports itself through others (every
import counted, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("asr", "server", "tingxie")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (a name imported from a package counts
    as that submodule when one exists)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                deps.add(base)
                deps.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_lower_layers_never_import_upper_ones():
    graph = imports()
    for name, deps in graph.items():
        top = name.split(".")[0]
        forbidden = {"asr": ("server", "tingxie"), "server": ("tingxie",), "tingxie": ()}[top]
        bad = sorted(d for d in deps if d.split(".")[0] in forbidden)
        assert not bad, f"{name} imports {bad}"


def test_no_import_cycles():
    graph = imports()
    # A package's __init__ re-exports its modules; an edge from a module to its own
    # package (or an ancestor) is then not a dependency on its siblings.
    for name, deps in graph.items():
        deps -= {p for p in deps if name.startswith(p + ".")}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if seen.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in seen:
                visit(d)
        path.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert len(seen) == len(graph) and set(seen.values()) == {2}
