"""The house rules a reader relies on, checked on the source tree: engines are built only in
engine processes, every module imports without building an engine, and rooms stay small (no
import cycle: tests/test_import_cycles.py)."""

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
