"""The house rules a reader relies on, checked on the source tree: engines are built only in
engine processes, the modules import each other without a cycle, every module imports without
building an engine, and rooms stay small."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import rtmon

ROOT = Path(rtmon.__file__).parent
ENGINE_PROCESS = ROOT / "runner" / "engine_process.py"
# The two modules allowed past 450 lines, each because one idea needs the room: a GPU frame's
# whole journey (upload, graphs, plans, pools), and the main process's side of an engine process
# (hand-over, receiving, supervision and fallback).
LONG_MODULES = {"engines/gpu_common.py", "runner/supervisor.py"}
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _engine_classes() -> set[str]:
    """Every class defined in rtmon/engines/ (the engines and their helpers)."""
    names = set()
    for path in (ROOT / "engines").glob("*.py"):
        names |= {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)
                  and n.name.endswith("Engine")}
    return names


def test_no_engine_is_built_outside_an_engine_process():
    """Only the engine process calls the registry's `create` or an engine class: the monitor,
    bench, eval, serve and the load test all go through `rtmon.runner`."""
    engines = _engine_classes()
    assert {"UltralyticsEngine", "TorchGpuEngine", "OrtCudaEngine", "NullEngine"} <= engines
    offenders = []
    for path in _modules():
        if path == ENGINE_PROCESS or path.parent.name == "engines":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if called in engines or (called == "create" and owner in {"registry", "engines"}):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {owner + '.' if owner else ''}{called}")
    assert not offenders, offenders


def _top_level_imports(path: Path) -> set[str]:
    """The rtmon modules `path` imports at module level, type-checking imports included (not
    those imported inside functions: a lazy import is how a module avoids loading another)."""
    out = set()
    body = ast.parse(path.read_text()).body
    nodes = [*body, *(n for stmt in body if isinstance(stmt, ast.If) for n in stmt.body)]
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rtmon")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtmon") and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_modules_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _modules()}
    for path in _modules():
        graph[_module_name(path)] = {m for m in _top_level_imports(path) if m in names} - {_module_name(path)}

    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package's __init__ importing its own submodules is how packages re-export: not a cycle.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".") for m in c)]
    assert not real, real


def test_every_module_imports_without_building_an_engine(monkeypatch):
    from rtmon import engines as registry

    def refuse(*args, **kwargs):
        raise AssertionError("an engine was built while importing a module")

    monkeypatch.setattr(registry, "create", refuse)
    skipped = []
    for info in pkgutil.walk_packages(rtmon.__path__, "rtmon."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:  # an optional extra that is not installed here
            if exc.name and exc.name.split(".")[0] == "rtmon":
                raise
            skipped.append(f"{info.name} ({exc.name})")
    assert len(skipped) <= 3, skipped


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_rooms_stay_small(path):
    lines = len(path.read_text().splitlines())
    if str(path.relative_to(ROOT)) in LONG_MODULES:
        return
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines; split it where it holds several ideas"
