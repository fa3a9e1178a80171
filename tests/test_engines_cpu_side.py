"""What the GPU engines promise on a machine without a GPU (or without TensorRT): clear
one-line refusals, cache keys, corrupt-cache handling and TensorRT's pure-Python parts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from rtmon.config import load_settings
from rtmon.core import Detections
from rtmon.engines import SPECS, create, resolve_optimized, unavailable_reason
from rtmon.engines.parity import match_detections, max_confidence_gap
from rtmon.engines.prepost import (
    Letterbox,
    Thresholds,
    detections_from_fixed,
    fixed_shape_nms,
    postprocess,
    preprocess_torch,
)
from rtmon.engines.tensorrt import INSTALL_HINT, PlanKey, resolve_shape
from rtmon.errors import UserError
from rtmon.models import ModelRef, onnx_path

GPU_ENGINES = ["torch-fp16", "torch-fp16-cpu", "torch-graph-cpu", "torch-graph-sync", "torch-graph", "torch-graph-compiled",
               "torch-compile", "ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
no_tensorrt = pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorrt") is not None, reason="checks the no-TensorRT behaviour"
)


def test_every_gpu_engine_is_registered_and_needs_a_gpu():
    for name in GPU_ENGINES:
        assert SPECS[name].needs_gpu, name


@no_gpu
@pytest.mark.parametrize("name", GPU_ENGINES)
def test_gpu_engines_are_unavailable_without_a_gpu_with_a_one_line_reason(name):
    why = unavailable_reason(name)
    assert why and "\n" not in why
    assert "GPU" in why or "pip install" in why


def test_torch_engine_refuses_an_unknown_mode():
    from rtmon.engines.torch_gpu import TorchGpuEngine

    with pytest.raises(ValueError, match="mode must be one of"):
        TorchGpuEngine("x", ModelRef(Path("x.pt"), "x", "user", "0" * 64), load_settings(), mode="graph-compile")


@no_gpu
def test_create_refuses_a_gpu_engine_with_a_user_error():
    ref = ModelRef(Path("x.pt"), "x", "user", "0" * 64)
    with pytest.raises(UserError, match="torch-graph is not available"):
        create("torch-graph", ref, load_settings())


@no_gpu
def test_optimized_falls_back_to_the_cpu_engine_without_a_gpu():
    assert resolve_optimized() == "ort-cpu"


@no_tensorrt
def test_trt_unavailable_message_says_how_to_install_tensorrt():
    why = unavailable_reason("trt")
    assert "tensorrt is not installed" in why and "pip install 'rtmon[tensorrt]'" in why
    assert "rtmon[tensorrt]" in INSTALL_HINT


def _key(**change) -> PlanKey:
    fields = dict(gpu="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), trt_version="10.13.0.35",
                  model_hash="ab" * 32, precision="fp16", imgsz=640, batch=1)
    fields.update(change)
    return PlanKey(**fields)


def test_plan_path_changes_with_everything_a_plan_depends_on():
    base = _key().plan_path(Path("engines"), "yolo11n")
    assert base.parent == Path("engines/trt") and base.suffix == ".plan"
    changes = [dict(gpu="NVIDIA GeForce RTX 5070"), dict(compute_capability=(12, 0)), dict(trt_version="10.9.0"),
               dict(model_hash="cd" * 32), dict(precision="fp32"), dict(imgsz=320), dict(batch=8)]
    paths = {_key(**c).plan_path(Path("engines"), "yolo11n") for c in changes}
    assert base not in paths and len(paths) == len(changes)


def test_timing_cache_is_shared_by_models_but_not_by_gpus_or_versions():
    assert _key().timing_cache_path(Path("e")) == _key(model_hash="ff" * 32, imgsz=320).timing_cache_path(Path("e"))
    assert _key().timing_cache_path(Path("e")) != _key(trt_version="10.9").timing_cache_path(Path("e"))
    assert _key().timing_cache_path(Path("e")) != _key(compute_capability=(8, 9)).timing_cache_path(Path("e"))
    assert " " not in _key().timing_cache_path(Path("e")).name


def test_binding_shapes_fill_batch_and_image_size_only():
    assert resolve_shape((-1, 3, -1, -1), 8, 640) == (8, 3, 640, 640)
    assert resolve_shape((1, 84, 8400), 1, 640) == (1, 84, 8400)
    assert resolve_shape((-1, 84, 8400), 4, 640) == (4, 84, 8400)
    with pytest.raises(ValueError, match="dynamic"):
        resolve_shape((1, 84, -1), 1, 640)


def test_onnx_cache_key_separates_precision_and_batch():
    ref = ModelRef(Path("m.pt"), "m", "user", "12" * 32)
    keys = {onnx_path(ref, Path("e"), 640, p, b) for p in ("fp16", "fp32") for b in (1, 8)}
    assert len(keys) == 4


def test_corrupt_cached_onnx_is_rebuilt_with_a_notice(tmp_path, monkeypatch, caplog):
    from rtmon import models

    ref = ModelRef(tmp_path / "m.pt", "m", "user", "34" * 32)
    target = onnx_path(ref, tmp_path, 640, "fp16", 1)
    target.write_bytes(b"\x00garbage")
    rebuilt = []

    def no_export_here(path):  # reaching the exporter is what this test checks; stop there
        rebuilt.append(path)
        raise UserError("stop")

    monkeypatch.setattr(models, "load_yolo", no_export_here)
    (tmp_path / "m.pt").write_bytes(b"w")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError):
        models.export_onnx(ref, tmp_path, 640, "fp16", 1)
    assert "corrupt" in caplog.text and rebuilt and not target.exists()


def _random_head(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, 4 + 5, 3000, generator=g)
    pred[:, :2] *= 640
    pred[:, 2:4] = pred[:, 2:4] * 150 + 4
    pred[:, 4:] = pred[:, 4:] ** 3
    return pred


def _dets(rows) -> Detections:
    return Detections.from_array(np.array(rows, np.float32))


def test_match_detections_needs_class_and_iou():
    a = _dets([[0, 0, 100, 100, 0.9, 1], [200, 200, 300, 300, 0.8, 2]])
    assert match_detections(a, a) == 1.0
    shifted = _dets([[2, 0, 102, 100, 0.88, 1], [200, 200, 300, 300, 0.8, 3]])  # IoU 0.96; wrong class
    assert match_detections(a, shifted) == 0.5
    assert max_confidence_gap(a, shifted) == pytest.approx(0.02)
    assert match_detections(a, _dets([[30, 0, 130, 100, 0.9, 1]])) == 0.0  # IoU 0.54
    assert match_detections(Detections.empty(), Detections.empty()) == 1.0
    assert match_detections(Detections.empty(), a) == 0.0


def test_match_detections_is_one_to_one():
    a = _dets([[0, 0, 100, 100, 0.9, 1], [1, 0, 101, 100, 0.8, 1]])
    b = _dets([[0, 0, 100, 100, 0.9, 1]])
    assert match_detections(a, b) == 0.5


@pytest.mark.parametrize("max_det", [300, 20])
def test_the_graphs_fixed_shape_nms_equals_postprocess(max_det):
    pred = _random_head(2, seed=3)
    pred[:, 4:] *= 0.3  # about 800 of 3000 anchors pass 0.25: fewer than k, many overlapping
    box = Letterbox.fit(1280, 720, 640)
    th = Thresholds(0.25, 0.7, max_det)
    rows = fixed_shape_nms(pred, box, th, k=1024, rounds=64).numpy()
    for i in range(2):
        want, got = postprocess(pred[i], box, th), detections_from_fixed(rows[i])
        assert got is not None and len(want) == len(got) > 0
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-4)
        np.testing.assert_allclose(got.confidence, want.confidence)
        np.testing.assert_array_equal(got.class_id, want.class_id)


def test_candidates_that_all_pass_the_threshold_ask_for_the_full_nms():
    pred = _random_head(1)[:, :, :300]
    pred[:, 4:] = 0.9  # every anchor passes: the 16 best rows cannot be the whole story
    box = Letterbox.fit(640, 640, 640)
    assert detections_from_fixed(fixed_shape_nms(pred, box, Thresholds(), k=16).numpy()[0]) is None
    every = fixed_shape_nms(pred, box, Thresholds(), k=10_000, rounds=300).numpy()[0]  # k ≥ anchors: nothing cut off
    assert detections_from_fixed(every) is not None


def test_letterbox_batch_one_image_at_a_time_equals_the_batched_letterbox():
    from rtmon.engines.gpu_common import letterbox_batch

    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 72, 128, 3), dtype=torch.uint8, generator=g)
    torch.testing.assert_close(letterbox_batch(images, 64, torch.float32), preprocess_torch(images, 64, torch.float32)[0])


def test_batched_letterbox_equals_per_image_letterbox():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 72, 128, 3), dtype=torch.uint8, generator=g)
    batched, box = preprocess_torch(images, 64, torch.float32)
    assert batched.shape == (3, 3, 64, 64)
    for i in range(3):
        single, same = preprocess_torch(images[i], 64, torch.float32)
        assert same == box
        torch.testing.assert_close(batched[i : i + 1], single)
