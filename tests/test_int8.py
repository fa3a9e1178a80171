"""INT8 (rtmon/quantize.py, ort-cpu-int8, trt's int8 path): calibration never sees the evaluation
clip, the cache key follows everything the model depends on, ONNX Runtime really runs integer
convolutions, TensorRT's Q/DQ model is what TensorRT accepts, and bad input is one line."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtmon import int8_layers, quantize
from rtmon.config import Int8Settings, load_settings
from rtmon.core import Detections, Frame
from rtmon.engines import create
from rtmon.engines.onnxruntime import OnnxRuntimeEngine
from rtmon.engines.tensorrt import PlanKey, TensorRtEngine, build_flags
from rtmon.errors import UserError
from rtmon.evaluate import agreement_rate
from rtmon.models import export_onnx, resolve_model
from rtmon.quantize import (
    CALIBRATION_SEED_BASE,
    FRAMES_PER_SCENE,
    TENSORRT_OPS,
    VALIDATION_SEED_BASE,
    FolderCalibration,
    QuantKey,
    SceneCalibration,
    calibration_of,
    quantization_key,
    quantized_onnx,
    scene_frames,
    scene_seeds,
)
from rtmon.scene import SAMPLE_FRAMES, SAMPLE_SEED, render_scene
from rtmon.sources import read_frames, resolve_source
from tests.cli_helpers import assert_one_line_error, run_rtmon

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"int8.calibration_frames": 8}  # a quick calibration: what is tested here is not accuracy
CHOICE = ROOT / "docs" / "benchmarks" / "cpu-2026-12-01-int8" / "choice.json"


def _settings(engines_dir: Path, **overrides):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), **SMALL, **overrides})


@pytest.fixture(scope="module")
def demo(engines_dir):
    return resolve_model("demo", engines_dir)


@pytest.fixture(scope="module")
def cpu_model(demo, engines_dir):
    settings = _settings(engines_dir)
    return quantized_onnx(demo, engines_dir, 640, settings.int8, "cpu")


def _engines_copy(engines_dir: Path, tmp_path: Path, demo) -> Path:
    """A fresh engines folder holding only the session's FP32 export (so nothing re-exports)."""
    fp32 = export_onnx(demo, engines_dir, 640, "fp32")
    shutil.copy2(fp32, tmp_path / fp32.name)
    return tmp_path


def _training_seeds() -> set[int]:
    """The demo detector's training and validation scenes, as scripts/make_dataset.py made them
    (the counts are those of rtmon/assets/demo/RECIPE.md)."""
    spec = importlib.util.spec_from_file_location("make_dataset", ROOT / "scripts" / "make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.scene_seeds("train", 8000, 10)) | set(module.scene_seeds("val", 500, 10))


# --- calibration frames -----------------------------------------------------------------------


def test_calibration_scenes_are_not_the_sample_clip_the_training_or_the_validation_scenes():
    largest = Int8Settings.model_fields["calibration_frames"].metadata[-1].le
    calibration = set(SceneCalibration(largest).seeds)
    assert len(calibration) == -(-largest // FRAMES_PER_SCENE)
    assert SAMPLE_SEED not in calibration
    assert not calibration & _training_seeds()
    assert not calibration & set(scene_seeds(VALIDATION_SEED_BASE, 10_000))
    assert min(calibration) == CALIBRATION_SEED_BASE


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 90), interpolation=cv2.INTER_AREA).astype(np.float32)


def test_no_calibration_frame_is_a_frame_of_the_evaluation_clip(cache_dir):
    clip = np.stack([_small(f) for f in read_frames(resolve_source("sample", cache_dir), SAMPLE_FRAMES)])
    assert len(clip) == SAMPLE_FRAMES

    def nearest(image: np.ndarray) -> float:
        return float(np.abs(clip - _small(image)).mean(axis=(1, 2)).min())

    # The measure finds a frame of the clip again despite H.264 (mean difference of a 160x90 grey
    # copy about 1.8 grey levels; the clip's neighbouring frames 2-3): frame 0 of the sample,
    # rendered. Calibration frames measured 11 and more on 2026-12-01.
    rendered, _ = next(render_scene(SAMPLE_SEED, 1))
    assert nearest(rendered) < 2.5
    for image in SceneCalibration(8).images():
        assert nearest(image) > 8


def test_scene_frames_come_in_the_asked_number_with_labels():
    frames = list(scene_frames(CALIBRATION_SEED_BASE, 6))
    assert len(frames) == 6
    assert all(image.shape == (720, 1280, 3) and labels.shape[1] == 5 for image, labels in frames)


def test_a_folder_calibration_takes_its_first_images_by_name_and_is_known_by_content(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    two = calibration_of(Int8Settings(calibration_dir=str(tmp_path), calibration_frames=2))
    assert isinstance(two, FolderCalibration) and [name for name, _ in two.files] == ["f0.png", "f1.png"]
    assert len(list(two.images())) == 2
    before = two.identity
    cv2.imwrite(str(tmp_path / "f1.png"), np.full((40, 60, 3), 7, np.uint8))
    assert calibration_of(Int8Settings(calibration_dir=str(tmp_path), calibration_frames=2)).identity != before


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda folder: None, "holds no images"),
        (lambda folder: (folder / "a.txt").write_text("x"), "holds no images"),
        (lambda folder: (folder / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg"), "not an image OpenCV can read"),
    ],
)
def test_a_bad_calibration_folder_is_a_one_line_error_and_writes_nothing(make, fragment, tmp_path, demo, engines_dir):
    folder = tmp_path / "calibration"
    folder.mkdir()
    make(folder)
    (tmp_path / "engines").mkdir()
    engines = _engines_copy(engines_dir, tmp_path / "engines", demo)
    before = sorted(p.relative_to(engines) for p in engines.rglob("*"))
    settings = _settings(engines, **{"int8.calibration_dir": str(folder)})
    with pytest.raises(UserError, match=fragment) as err:
        quantized_onnx(demo, engines, 640, settings.int8, "cpu")
    assert "\n" not in str(err.value) and str(err.value).startswith("int8.calibration_dir:")
    assert sorted(p.relative_to(engines) for p in engines.rglob("*") if p.name != "int8") == before


def test_a_calibration_folder_that_is_a_file_or_cannot_be_listed(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        calibration_of(Int8Settings(calibration_dir=str(tmp_path / "file")))

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", refuse)  # root reads any folder: make one refuse
    with pytest.raises(UserError, match=r"cannot read .*Permission denied"):
        calibration_of(Int8Settings(calibration_dir=str(tmp_path)))


# --- the cache key ----------------------------------------------------------------------------


def _key(**changes) -> QuantKey:
    fields = dict(model_sha256="ab" * 32, imgsz=640, opset=17, calibration=SceneCalibration(64).identity,
                  method="minmax", fp32_nodes=("/model.23/Concat_3",), target="cpu", onnxruntime="1.32.0", batch=1)
    return QuantKey(**{**fields, **changes})


def test_the_cached_file_changes_with_everything_the_model_depends_on():
    base = _key().path(Path("engines"), "m")
    assert base.parent == Path("engines/int8") and base.suffix == ".onnx"
    changes = [dict(model_sha256="cd" * 32), dict(imgsz=320), dict(opset=18),
               dict(calibration=SceneCalibration(32).identity), dict(calibration=SceneCalibration(64, 700_000).identity),
               dict(method="entropy"), dict(method="percentile"), dict(fp32_nodes=()), dict(target="tensorrt"),
               dict(onnxruntime="1.31.0"), dict(batch=8), dict(recipe=quantize.RECIPE + 1)]
    paths = {_key(**c).path(Path("engines"), "m") for c in changes}
    assert base not in paths and len(paths) == len(changes)


def test_the_key_of_settings_follows_model_calibration_method_and_layers(demo, engines_dir, tmp_path):
    def key(model=demo, **overrides):
        return quantization_key(model, engines_dir, 640, _settings(engines_dir, **overrides).int8, "cpu")

    base = key()
    assert key() == base  # deterministic: the same settings name the same file
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    other_model = replace(demo, sha256="0" * 64)  # the same weights under another hash: exported again
    variants = [key(model=other_model), key(**{"int8.calibration_frames": 16}),
                key(**{"int8.calibration_dir": str(tmp_path)}), key(**{"int8.method": "percentile"}),
                key(**{"int8.method": "minmax"}), key(**{"int8.fp32_layers": ["head"]}),
                key(**{"int8.fp32_layers": ["decode"]}), key(**{"int8.fp32_layers": ["silu", "decode"]}),
                key(**{"int8.fp32_layers": ["stem", "decode"]})]
    assert len({v.digest for v in variants} | {base.digest}) == len(variants) + 1


def test_fp32_layer_groups_are_nested_and_found_in_the_export(demo, engines_dir):
    graph = onnx.load(str(export_onnx(demo, engines_dir, 640, "fp32"))).graph
    groups = {g: set(int8_layers.fp32_nodes(graph, [g])) for g in int8_layers.FP32_GROUPS}
    assert "/model.23/Concat_3" in groups["output"] and "/model.23/dfl/Softmax" not in groups["output"]
    assert groups["output"] < groups["decode"] < groups["head"]
    assert "/model.23/dfl/Softmax" in groups["decode"] and not any("/cv2." in n for n in groups["decode"])
    assert groups["stem"] and all(n.startswith("/model.0/") for n in groups["stem"])
    ops = {n.name: n.op_type for n in graph.node}
    assert sorted(ops[n] for n in groups["silu"]) == ["Mul"] * 77 + ["Sigmoid"] * 77  # every Conv's activation
    assert "/model.23/Sigmoid" not in groups["silu"]  # the class probabilities are no SiLU
    assert int8_layers.fp32_nodes(graph, []) == ()


def test_fuse_silu_computes_the_same_function_in_one_node():
    import onnxruntime as ort

    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="act/Sigmoid"),
             helper.make_node("Mul", ["x", "s"], ["y"], name="act/Mul"),
             helper.make_node("Sigmoid", ["y"], ["p"], name="probabilities")]  # a sigmoid no Mul takes: kept
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-12, 12, 256, dtype=np.float32).reshape(1, 4, 8, 8)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert int8_layers.fp32_nodes(model.graph, ["silu"]) == ("act/Sigmoid", "act/Mul")
    assert int8_layers.fuse_silu(model, ("act/Sigmoid", "act/Mul")) == 1
    assert [(n.op_type, n.name) for n in model.graph.node] == [("QuickGelu", "act/Mul"), ("Sigmoid", "probabilities")]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)


def test_the_defaults_are_the_measured_choice():
    chosen = json.loads(CHOICE.read_text())["chosen"]
    defaults = Int8Settings()
    assert (defaults.method, defaults.fp32_layers, defaults.calibration_frames) == (
        chosen["method"], chosen["fp32_layers"], chosen["calibration_frames"])


# --- the quantized model ----------------------------------------------------------------------


def test_onnx_runtime_runs_integer_convolutions(cpu_model, demo, engines_dir, tmp_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(cpu_model.path), options, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    fp32 = onnx.load(str(export_onnx(demo, engines_dir, 640, "fp32"))).graph
    convs = [n.name for n in fp32.node if n.op_type == "Conv"]
    kept = [n for n in convs if n in cpu_model.key.fp32_nodes]
    assert ran.count("QLinearConv") + ran.count("ConvInteger") == len(convs) - len(kept) > 80
    assert ran.count("Conv") + ran.count("FusedConv") <= len(kept)  # float convolutions only where asked
    # The default keeps SiLU in FP32: each is one fused float pass, not a table lookup and an
    # integer multiplication...
    assert {name for pair in int8_layers.silu_pairs(fp32) for name in pair} <= set(cpu_model.key.fp32_nodes)
    assert ran.count("QuickGelu") == len(int8_layers.silu_pairs(fp32)) == 77 and "QLinearSigmoid" not in ran
    # ...and the max-pools after one still run on the integers (they share its quantization).
    assert ran.count("MaxPool") == 0 and ran.count("NhwcMaxPool") == 3
    assert session.get_inputs()[0].type == "tensor(float)"  # the stem is FP32 by default: it takes FP32's input


def test_with_the_stem_in_int8_the_network_takes_the_frames_bytes(demo, engines_dir):
    import onnxruntime as ort

    settings = _settings(engines_dir, **{"int8.fp32_layers": ["silu", "decode"]})
    model = quantized_onnx(demo, engines_dir, 640, settings.int8, "cpu")
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"  # the frame's bytes go in as they are


def test_the_quantized_model_keeps_its_key_and_the_fp32_export_untouched(cpu_model, demo, engines_dir):
    props = {p.key: p.value for p in onnx.load(str(cpu_model.path)).metadata_props}
    assert json.loads(props[quantize.METADATA_KEY]) == json.loads(cpu_model.key.to_json())
    assert cpu_model.path.parent == engines_dir / "int8"
    again = quantized_onnx(demo, engines_dir, 640, _settings(engines_dir).int8, "cpu")
    assert again.path == cpu_model.path and "from the cache" in again.notes[-1]
    assert not [p for p in (engines_dir / "int8").iterdir() if p.name.startswith(".")]


def test_the_int8_engine_finds_what_fp32_finds(cpu_model, demo, engines_dir):
    settings = _settings(engines_dir)
    fp32, int8 = OnnxRuntimeEngine("ort-cpu", demo, settings), create("ort-cpu-int8", demo, settings)
    fp32.load()
    int8.load()
    assert int8.info.precision == "int8"
    found, reference = [], []
    for index, (image, _) in enumerate(scene_frames(VALIDATION_SEED_BASE, 4)):
        reference.append(fp32.infer(Frame(index, image, 0.0)).detections)
        found.append(int8.infer(Frame(index, image, 0.0)).detections)
    assert sum(len(d) for d in reference) >= 10
    assert agreement_rate(reference, found, 0.5) >= 0.9
    served = int8.network(2).run(np.full((2, 3, 640, 640), 0.5, np.float32))
    assert served.shape[0] == 2 and served.dtype == np.float32


def test_a_stale_or_corrupt_cached_model_is_rebuilt_with_a_notice(cpu_model, demo, engines_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    engines = _engines_copy(engines_dir, tmp_path, demo)
    (engines / "int8").mkdir()
    settings = _settings(engines)
    target = cpu_model.key.path(engines, demo.path.stem)
    model = onnx.load(str(cpu_model.path))
    stale = json.loads(next(p.value for p in model.metadata_props if p.key == quantize.METADATA_KEY))
    helper.set_model_props(model, {quantize.METADATA_KEY: json.dumps({**stale, "onnxruntime": "1.0.0"})})
    onnx.save(model, str(target))
    rebuilt = quantized_onnx(demo, engines, 640, settings.int8, "cpu")
    assert rebuilt.path == target and "made by onnxruntime 1.0.0" in rebuilt.notes[0] and "quantized in" in rebuilt.notes[1]
    assert "rebuilding" in caplog.text
    target.write_bytes(b"\x00 not onnx")
    rebuilt = quantized_onnx(demo, engines, 640, settings.int8, "cpu")
    assert "not a readable ONNX model" in rebuilt.notes[0]
    assert quantize._cache_problem(target, rebuilt.key) is None


def _tiny_model(path: Path) -> Path:
    """A valid ONNX model that takes 1x3x32x32 images: calibration frames of 640 cannot run it."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32))
    node = helper.make_node("Conv", ["images", "w"], ["output0"], name="/model.0/conv/Conv")
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4, 30, 30])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_model_that_cannot_be_quantized_is_a_one_line_error_and_writes_nothing(demo, tmp_path, monkeypatch):
    tiny = _tiny_model(tmp_path / "tiny.onnx")
    engines = tmp_path / "engines"
    monkeypatch.setattr(quantize, "export_onnx", lambda *args: tiny)
    with pytest.raises(UserError, match=r"^int8: cannot quantize tiny.onnx \(") as err:
        quantized_onnx(demo, engines, 640, _settings(engines, **{"int8.fp32_layers": []}).int8, "cpu")
    assert "\n" not in str(err.value)
    assert list((engines / "int8").iterdir()) == []


# --- TensorRT's int8 path (TensorRT itself is not installed here) ------------------------------


def test_the_tensorrt_model_has_qdq_where_tensorrt_wants_it(demo, engines_dir):
    settings = _settings(engines_dir)
    model = quantized_onnx(demo, engines_dir, 640, settings.int8, "tensorrt")
    assert model.key.target == "tensorrt"
    graph = onnx.load(str(model.path)).graph
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:  # TensorRT: signed INT8, zero point 0 (biases stay float: no INT32 DequantizeLinear)
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    convs = [n for n in graph.node if n.op_type in TENSORRT_OPS and n.name not in model.key.fp32_nodes]
    assert len(convs) > 80
    for conv in convs:  # every input of a weighted operation is quantized...
        assert producers[conv.input[0]].op_type == "DequantizeLinear", conv.name
        assert producers[conv.input[1]].op_type == "DequantizeLinear", conv.name
    sigmoids = [n for n in graph.node if n.op_type == "Sigmoid" and n.input[0] in producers]
    fused = [n for n in sigmoids if producers[n.input[0]].op_type == "Conv"]
    assert len(fused) > 70  # ...and its output is not, so TensorRT fuses the SiLU into the convolution
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_tensorrt_int8_builds_strongly_typed_without_precision_flags():
    fake = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
                           BuilderFlag=SimpleNamespace(FP16="FP16"))
    assert build_flags(fake, "int8") == (2, [])
    assert build_flags(fake, "fp16") == (0, ["FP16"])


def test_an_int8_plan_is_named_by_its_quantization():
    fields = dict(gpu="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), trt_version="10.13.0.35",
                  model_hash="ab" * 32, precision="int8", imgsz=640)
    a, b = PlanKey(**fields, quantization="1" * 64), PlanKey(**fields, quantization="2" * 64)
    assert a.plan_path(Path("e"), "m") != b.plan_path(Path("e"), "m")
    assert PlanKey(**{**fields, "precision": "fp16"}).plan_path(Path("e"), "m").name.count("-q") == 0


def test_trt_int8_takes_the_tensorrt_qdq_model_and_shares_the_calibration(demo, engines_dir):
    settings = _settings(engines_dir, **{"engine.precision": "int8"})
    engine = TensorRtEngine("trt", demo, settings)  # builds nothing until load(), which needs TensorRT
    assert engine.info.precision == "int8"
    onnx_file = engine._onnx_file(1)
    key = quantization_key(demo, engines_dir, 640, settings.int8, "tensorrt")
    assert onnx_file == key.path(engines_dir, demo.path.stem) and engine._quantization(1) == key.digest
    cpu_key = quantization_key(demo, engines_dir, 640, settings.int8, "cpu")
    shared = ("model_sha256", "calibration", "method", "fp32_nodes", "onnxruntime")
    assert all(getattr(key, f) == getattr(cpu_key, f) for f in shared) and key.digest != cpu_key.digest
    fp16 = TensorRtEngine("trt", demo, _settings(engines_dir))
    assert fp16.info.precision == "fp16" and fp16._quantization(1) == ""
    assert fp16._onnx_file(1) == export_onnx(demo, engines_dir, 640, "fp32", 1)


# --- eval's second agreement figure ------------------------------------------------------------


def test_agreement_at_iou_half_counts_boxes_a_few_pixels_off():
    reference = [Detections(np.array([[0, 0, 100, 100]], np.float32), np.array([0.9], np.float32), np.array([1]))]
    shifted = [Detections(np.array([[10, 10, 110, 110]], np.float32), np.array([0.9], np.float32), np.array([1]))]
    assert agreement_rate(reference, shifted) == 0.0  # IoU 0.68 < 0.9
    assert agreement_rate(reference, shifted, 0.5) == 1.0


# --- the command line ----------------------------------------------------------------------------


def test_eval_with_an_empty_calibration_folder_is_one_line(tmp_path, rtmon_env):
    (tmp_path / "empty").mkdir()
    result = run_rtmon(["eval", "--engines", "ort-cpu-int8", "--frames", "2", "--out", str(tmp_path / "eval"),
                        "--set", f"int8.calibration_dir={tmp_path / 'empty'}"], rtmon_env, cwd=tmp_path)
    assert_one_line_error(result, "int8.calibration_dir:", "holds no images")
    assert not (tmp_path / "eval").exists()


# --- the docs -----------------------------------------------------------------------------------


def test_the_docs_int8_rung_is_what_the_generator_writes_from_the_committed_report():
    spec = importlib.util.spec_from_file_location("ladder", ROOT / "scripts" / "ladder.py")
    ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ladder)
    report = ROOT / "docs" / "benchmarks" / "cpu-2026-12-01-int8"
    rung = ladder.int8_rung(json.loads((report / "bench" / "bench.json").read_text()),
                            json.loads((report / "eval" / "eval.json").read_text()))
    assert rung in (ROOT / "docs" / "optimizations.md").read_text()
    assert rung in (report / "README.md").read_text()
    assert rung.splitlines()[-1] in (ROOT / "README.md").read_text()  # "What INT8 costs: …"
