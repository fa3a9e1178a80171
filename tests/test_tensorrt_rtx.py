"""TensorRT for RTX (`trt-rtx`) where there is no RTX GPU: the demo detector's engine built ahead
of time on the CPU (as CI does), what its header declares, its cache key, `rtmon export
--tensorrt-rtx`, and every refusal as one line. Running the engine needs an RTX card: the tests
marked `gpu` say what a GPU machine shows.

In CI these tests run (TensorRT-RTX is in `./scripts/test`'s extras); elsewhere they are skipped
when TensorRT-RTX is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from rtmon import engines as registry
from rtmon.config import load_settings
from rtmon.engines.tensorrt_rtx import (
    TARGETS,
    EngineKey,
    TensorRtxEngine,
    build_engine,
    declared_targets,
    import_tensorrt_rtx,
    onnx_for,
    parse_targets,
    require_rtx_gpu,
    runtime_cache_path,
)
from rtmon.errors import UserError
from rtmon.models import resolve_model
from tests.cli_helpers import assert_one_line_error, run_rtmon

installed = importlib.util.find_spec("tensorrt_rtx") is not None
needs_trt_rtx = pytest.mark.skipif(not installed and not os.environ.get("CI"),
                                   reason="TensorRT-RTX is not installed (pip install 'rtmon[tensorrt-rtx]')")  # fmt: skip


@pytest.fixture(scope="session")
def trt():
    return import_tensorrt_rtx()


@pytest.fixture(scope="session")
def demo(engines_dir):
    return resolve_model("demo", engines_dir)


@pytest.fixture(scope="session")
def fp16_onnx(demo, engines_dir) -> Path:
    return onnx_for(demo, engines_dir, 640, "fp16", 1)


@pytest.fixture(scope="session")
def built(trt, fp16_onnx, tmp_path_factory):
    """The demo detector's FP16 engine, built once per session ahead of time, without a GPU."""
    return build_engine(trt, fp16_onnx, tmp_path_factory.mktemp("trt-rtx") / "demo.engine")


def _settings(engines_dir: Path, **overrides):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), **overrides})


# --- the ahead-of-time build -------------------------------------------------------------------


@needs_trt_rtx
def test_the_demo_detectors_engine_is_built_ahead_of_time_on_a_cpu(built):
    (inp,), (out,) = built.inputs, built.outputs
    assert (inp.name, inp.shape, inp.dtype) == ("images", (1, 3, 640, 640), "float16")
    assert (out.name, out.shape, out.dtype) == ("output0", (1, 10, 8400), "float16")  # 4 box + 6 demo classes
    assert built.path.stat().st_size == built.size > 1_000_000
    assert "SM120" in built.targets  # the RTX 5070
    assert declared_targets(built.path.read_bytes()) == built.targets
    assert not [p for p in built.path.parent.iterdir() if p != built.path]  # no temporary file left


@needs_trt_rtx
@pytest.mark.parametrize("targets", [("SM120",), ("SM86", "SM89"), ("SM121",)])
def test_the_header_declares_exactly_the_targets_built_for(trt, fp16_onnx, tmp_path, targets):
    engine = build_engine(trt, fp16_onnx, tmp_path / "e.engine", targets)
    assert engine.targets == targets


def test_a_file_that_is_no_engine_declares_nothing():
    assert declared_targets(b"not an engine" * 8) is None
    assert declared_targets(b"") is None


def test_targets_are_named_as_tensorrt_rtx_names_them():
    assert parse_targets("sm86, SM120,sm120") == ("SM86", "SM120")
    assert parse_targets("") == ()
    with pytest.raises(UserError, match="sm90 is not a TensorRT-RTX target"):
        parse_targets("sm90")


# --- what the engine and its runtime cache are kept under --------------------------------------


def test_the_engine_key_changes_with_everything_the_engine_depends_on():
    base = EngineKey("ab" * 32, "fp16", 640, 1, "1.7.1.116")
    name = base.file_name("demo")
    assert base.engine_path(Path("engines"), "demo") == Path("engines/trt-rtx") / name
    assert name.endswith(".engine") and EngineKey("ab" * 32, "fp16", 640, 1, "1.7.1.116").file_name("demo") == name
    changed = [replace(base, model_hash="cd" * 32), replace(base, precision="fp32"), replace(base, imgsz=480),
               replace(base, batch=4), replace(base, trt_rtx_version="1.8.0.12"), replace(base, targets=("SM120",))]
    names = {key.file_name("demo") for key in changed}
    assert len(names) == len(changed) and name not in names


def test_the_engines_own_key_follows_its_settings_and_the_installed_version(demo, engines_dir, monkeypatch):
    class FakeTrt:
        __version__ = "1.7.1.116"

    def key(batch=1, version="1.7.1.116", **overrides):
        engine = TensorRtxEngine("trt-rtx", demo, _settings(engines_dir, **overrides))
        engine._trt = FakeTrt()
        monkeypatch.setattr(FakeTrt, "__version__", version)
        return engine.key(batch)

    base = key()
    assert (base.model_hash, base.precision, base.imgsz, base.batch) == (demo.sha256, "fp16", 640, 1)
    assert key(**{"model.imgsz": 480}).imgsz == 480
    assert key(batch=8).batch == 8
    assert key(version="1.8.0").trt_rtx_version == "1.8.0"
    assert len({k.file_name("demo") for k in (base, key(**{"model.imgsz": 480}), key(batch=8), key(version="1.8.0"))}) == 4


def test_the_runtime_cache_is_kept_per_engine_and_gpu():
    engine = Path("engines/trt-rtx/demo-b1.engine")
    here = runtime_cache_path(engine, "NVIDIA GeForce RTX 5070", (12, 0))
    assert here.parent == engine.parent and here.suffix == ".rtcache"
    others = {runtime_cache_path(engine, "NVIDIA GeForce RTX 4090", (8, 9)),
              runtime_cache_path(engine, "NVIDIA GeForce RTX 5070", (12, 1)),
              runtime_cache_path(Path("engines/trt-rtx/demo-b2.engine"), "NVIDIA GeForce RTX 5070", (12, 0))}
    assert here not in others and len(others) == 3


# --- a stale or corrupt engine file is rebuilt ---------------------------------------------------


class RtxCardRuntime:
    """What an RTX 5070's runtime answers (this machine has none): an engine whose header
    declares SM120 is valid, anything else invalid for `why`."""

    engine_header_size = 64

    def __init__(self, trt, why: str = "MALFORMED_ENGINE") -> None:
        self.trt, self.why, self.loaded = trt, why, 0

    def get_engine_validity(self, header: bytes):
        if "SM120" in (declared_targets(header) or ()):
            return self.trt.EngineValidity.VALID, 0
        return self.trt.EngineValidity.INVALID, int(getattr(self.trt.EngineInvalidityDiagnostics, self.why))

    def deserialize_cuda_engine(self, blob: bytes):
        self.loaded += 1
        return "engine" if declared_targets(blob) else None


def _engine_on_an_rtx_card(trt, demo, engines_dir: Path, fp16_onnx: Path, why: str = "MALFORMED_ENGINE") -> TensorRtxEngine:
    if not (engines_dir / fp16_onnx.name).is_file():  # the session's export, so no test exports again
        shutil.copy2(fp16_onnx, engines_dir / fp16_onnx.name)
    engine = TensorRtxEngine("trt-rtx", demo, _settings(engines_dir))
    engine._trt, engine._runtime = trt, RtxCardRuntime(trt, why)
    return engine


@needs_trt_rtx
@pytest.mark.parametrize(("content", "why", "said"), [
    (b"\x00garbage" * 4096, "MALFORMED_ENGINE", "not valid here (malformed_engine)"),
    (b"short", "MALFORMED_ENGINE", "shorter than an engine's header"),
    (None, "VERSION_MISMATCH", "not valid here (version_mismatch)"),  # another TensorRT-RTX's engine
], ids=["garbage", "truncated-header", "stale"])
def test_a_corrupt_or_stale_engine_file_is_rebuilt_with_a_notice(trt, demo, tmp_path, fp16_onnx, content, why, said):
    engine = _engine_on_an_rtx_card(trt, demo, tmp_path, fp16_onnx, why)
    path = engine.key(1).engine_path(tmp_path, demo.path.stem)
    path.parent.mkdir(parents=True)
    # A stale engine: a real one whose header this GPU's runtime refuses (built for SM86 only).
    path.write_bytes(content if content is not None else build_engine(trt, onnx_for(demo, tmp_path, 640, "fp16", 1),
                                                                       tmp_path / "sm86.engine", ("SM86",)).path.read_bytes())
    assert engine.engine(1) == ("engine", path)
    assert any(note.startswith(f"rebuilt {path.name}: ") and said in note for note in engine._notes), engine._notes
    assert "SM120" in declared_targets(path.read_bytes())
    again = _engine_on_an_rtx_card(trt, demo, tmp_path, fp16_onnx)
    assert again.engine(1) == ("engine", path) and not again._notes  # the rebuilt file is used as it is


@needs_trt_rtx
def test_an_engine_that_does_not_deserialize_is_rebuilt(trt, demo, tmp_path, built, fp16_onnx):
    engine = _engine_on_an_rtx_card(trt, demo, tmp_path, fp16_onnx)
    path = engine.key(1).engine_path(tmp_path, demo.path.stem)
    path.parent.mkdir(parents=True)
    path.write_bytes(built.path.read_bytes()[:200_000])  # a valid header, a truncated body
    engine._runtime.deserialize_cuda_engine = lambda blob: "engine" if len(blob) == len(path.read_bytes()) > 200_000 else None
    assert engine.engine(1) == ("engine", path)
    assert any("could not deserialize it (corrupt)" in note for note in engine._notes)


# --- bad input: one line, nothing half-written ---------------------------------------------------


def _unknown_op_onnx(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Frobnicate", ["images"], ["output0"], domain="example.unknown")], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT16, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT16, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)])
    onnx.save(model, str(path))
    return path


@needs_trt_rtx
@pytest.mark.parametrize("make", [_unknown_op_onnx, lambda p: p.write_bytes(b"not an onnx file") and p],
                         ids=["unknown-operator", "not-onnx"])
def test_an_onnx_tensorrt_rtx_cannot_parse_is_a_one_line_error_and_writes_nothing(trt, tmp_path, make):
    source = make(tmp_path / "bad.onnx")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match=r"engine: trt-rtx: TensorRT-RTX cannot parse bad\.onnx") as error:
        build_engine(trt, source, out / "bad.engine")
    assert "\n" not in str(error.value)
    assert not list(out.iterdir())


def test_without_tensorrt_rtx_the_engine_says_how_to_install_it(monkeypatch, demo, engines_dir):
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"engine: trt-rtx: TensorRT-RTX is not installed; pip install 'rtmon\[tensorrt-rtx\]'"):
        TensorRtxEngine("trt-rtx", demo, _settings(engines_dir)).load()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt_rtx" else real(name, *a))
    assert "tensorrt_rtx is not installed; pip install 'rtmon[tensorrt-rtx]'" in registry.unavailable_reason("trt-rtx")


def _gpu(monkeypatch, name: str, cc: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cc)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@needs_trt_rtx
def test_on_a_gpu_tensorrt_rtx_does_not_run_on_the_engine_refuses_at_once(monkeypatch, demo, tmp_path):
    _gpu(monkeypatch, "NVIDIA H200", (9, 0))
    with pytest.raises(UserError) as error:
        TensorRtxEngine("trt-rtx", demo, _settings(tmp_path)).load()
    assert str(error.value) == ("engine: trt-rtx: TensorRT-RTX cannot run on this GPU (NVIDIA H200, compute capability "
                                "9.0; it runs on 8.6, 8.9, 12.0, 12.x)")
    assert not list(tmp_path.iterdir())  # refused before exporting or building anything


@pytest.mark.parametrize(("cc", "runs"), [((12, 0), True), ((12, 1), True), ((8, 9), True), ((8, 6), True),
                                          ((9, 0), False), ((8, 0), False), ((10, 0), False), ((7, 5), False)])
def test_the_compute_capabilities_tensorrt_rtx_runs_on(monkeypatch, cc, runs):
    _gpu(monkeypatch, "some GPU", cc)
    if runs:
        require_rtx_gpu("trt-rtx")
    else:
        with pytest.raises(UserError, match=f"compute capability {cc[0]}.{cc[1]};"):
            require_rtx_gpu("trt-rtx")


def test_optimized_tries_trt_rtx_first_where_it_is_installed_and_there_is_a_gpu(monkeypatch):
    assert registry.OPTIMIZED_ORDER[0] == "trt-rtx" and registry.SPECS["trt-rtx"].needs_gpu
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt_rtx" else real(name, *a))
    monkeypatch.setattr(registry, "_cuda_available", lambda: True)
    assert registry.candidates_for("optimized")[0] == "trt-rtx"


@needs_trt_rtx
def test_every_target_is_one_tensorrt_rtx_knows(trt):
    assert all(hasattr(trt.ComputeCapability, name) for name in TARGETS)


@needs_trt_rtx
def test_the_doctors_probe_builds_ahead_of_time_and_reports_the_runtimes_answer():
    from rtmon import readiness

    facts = readiness.run_probe("tensorrt-rtx")  # in its own process, as `rtmon doctor` runs it
    assert facts["version"] == import_tensorrt_rtx().__version__ and "build_error" not in facts
    if not torch.cuda.is_available():  # built, and the runtime cannot say yes without a GPU
        assert facts["validity"] == "INVALID" and "max_error" not in facts


# --- rtmon export --tensorrt-rtx -----------------------------------------------------------------


@needs_trt_rtx
def test_export_builds_the_engine_for_rtx_cards_through_the_command(tmp_path, rtmon_env):
    out = tmp_path / "demo-rtx.engine"
    result = run_rtmon(["export", "--tensorrt-rtx", str(out), "--model", "demo"], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SM120" in declared_targets(out.read_bytes())
    assert f"engine: {out}" in result.stdout and "images 1×3×640×640 float16 → output0 1×10×8400 float16" in result.stdout
    assert "engines/trt-rtx/rtmon-demo-yolo11n-" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@needs_trt_rtx
@pytest.mark.parametrize(("args", "fragment"), [
    ([], "give one of --triton DIR or --tensorrt-rtx FILE"),
    (["--tensorrt-rtx", "{tmp}/e.engine", "--targets", "sm86,sm90"], "sm90 is not a TensorRT-RTX target"),
    (["--tensorrt-rtx", "{tmp}"], "is a folder; give the engine file's name"),
    (["--tensorrt-rtx", "{tmp}/no/such/e.engine"], "there is no folder"),
    (["--tensorrt-rtx", "{tmp}/e.engine", "--precision", "int8"], "--precision int8: choose one of fp16, fp32"),
])
def test_export_tensorrt_rtx_bad_input_is_one_line(tmp_path, rtmon_env, args, fragment):
    result = run_rtmon(["export", *[a.format(tmp=tmp_path) for a in args], "--model", "demo"], rtmon_env)
    assert_one_line_error(result, fragment)
    assert not list(tmp_path.iterdir())


# --- on a GPU machine ----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_trt_rtx
def test_on_this_gpu_trt_rtx_runs_or_refuses_in_one_line(demo, tmp_path):
    from rtmon.readiness import runs_tensorrt_rtx

    engine = registry.create("trt-rtx", demo, _settings(tmp_path))
    if not runs_tensorrt_rtx(tuple(torch.cuda.get_device_capability())):
        with pytest.raises(UserError, match="TensorRT-RTX cannot run on this GPU"):
            engine.load()
        return
    from rtmon.core import Frame
    from rtmon.engines.parity import match_detections
    from rtmon.scene import render_scene

    frames = [Frame(i, image, 0.0) for i, (image, _) in enumerate(render_scene(seed=7, frames=8, stride=2))]
    reference = registry.create("ort-cuda-fp32", demo, _settings(tmp_path))
    engine.load()
    reference.load()
    try:
        for frame in frames:
            theirs, mine = reference.infer(frame).detections, engine.infer(frame).detections
            assert match_detections(theirs, mine) >= 0.95
        assert any("runtime cache saved" in note for note in engine.info.notes)
    finally:
        engine.close()
        reference.close()
