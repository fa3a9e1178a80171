"""No import cycle among rtmon's modules: a module that needs another's idea imports it, never the
other way round as well. Read from the source (module-level imports, `TYPE_CHECKING` ones
included, since a cycle hidden behind it is still two modules that need each other); imports
inside functions are left out: they run later, and some are there to keep start-up lean."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """{dotted name: file} of every module of `package` under `root`."""
    out = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _module_level(tree: ast.Module):
    """The statements that run when the module is imported (function bodies excluded)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `name` imports at module level."""
    found: set[str] = set()
    for node in _module_level(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:  # `from package import module`
                    found.add(f"{source}.{alias.name}")
                elif source in modules:
                    found.add(source)
    return found - {name}


def cycles(root: Path, package: str) -> list[list[str]]:
    """Each group of modules that import one another in a circle (Tarjan's strongly connected
    components of more than one module)."""
    modules = module_names(root, package)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_rtmon_has_no_import_cycle() -> None:
    assert cycles(ROOT, "rtmon") == []


def test_mqtt_modules_import_one_way() -> None:
    modules = module_names(ROOT, "rtmon")
    mqtt = {n for n in modules if n.startswith("rtmon.mqtt.")}
    uses = {n: imports_of(n, modules[n], modules) & mqtt for n in mqtt}
    assert uses["rtmon.mqtt.topics"] == set() and uses["rtmon.mqtt.payloads"] == set()
    assert uses["rtmon.mqtt.address"] == {"rtmon.mqtt.topics"}
    assert uses["rtmon.mqtt.discovery"] == {"rtmon.mqtt.topics", "rtmon.mqtt.payloads"}
    assert imports_of("rtmon.mqtt", modules["rtmon.mqtt"], modules) == set()  # the package loads nothing


def test_the_check_finds_a_cycle_behind_type_checking(tmp_path: Path) -> None:
    """The shape mqtt.py and homeassistant.py had: one import at the top, one for type hints only."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b, c\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n")
    (package / "c.py").write_text("def later():\n    from pkg import a  # later: not a cycle\n")
    (package / "d.py").write_text("from . import c\n")
    assert cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b"]]
