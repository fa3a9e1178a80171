"""GPU engines against the baseline, on the GPU machine (`pytest -m gpu`; CI skips these).

Parity runs on a re-initialised yolo11n that outputs boxes (`make_detecting_weights`): it
proves each engine computes the baseline's function (letterbox, network, NMS, rescale) box for
box; a trained model's accuracy is covered once the trained fixture exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rtmon.config import load_settings
from rtmon.engines import create, unavailable_reason
from rtmon.engines.base import Frame
from rtmon.engines.parity import CONFIDENCE_TOLERANCE, make_detecting_weights, match_detections, max_confidence_gap
from rtmon.models import onnx_path, resolve_model, untrained_ref

pytestmark = pytest.mark.gpu

GPU_ENGINES = ["torch-fp16", "torch-graph", "torch-compile", "ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"]


def _assets() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets"


@pytest.fixture(scope="module")
def engines_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def detecting_ref(engines_dir):
    untrained = untrained_ref("yolo11n.yaml", engines_dir)
    path = make_detecting_weights(untrained.path, engines_dir / "yolo11n-detecting-seed0.pt")
    return resolve_model(str(path), engines_dir)


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    images = [cv2.imread(str(p)) for p in sorted(_assets().glob("*.jpg"))]
    images += [cv2.resize(images[0], (1280, 720)), cv2.flip(images[-1], 1)]
    return [Frame(i, img, 0.0) for i, img in enumerate(images)]


def _settings(engines_dir: Path, batch: int = 1):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), "engines.batch": batch})


def _loaded(name: str, ref, engines_dir: Path, batch: int = 1):
    why = unavailable_reason(name)
    if why:
        pytest.skip(f"{name}: {why}")
    engine = create(name, ref, _settings(engines_dir, batch))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def baseline_detections(detecting_ref, engines_dir, frames):
    engine = _loaded("torch-fp32", detecting_ref, engines_dir)
    out = [engine.infer(f).detections for f in frames]
    engine.close()
    assert sum(len(d) for d in out) >= 20, "the parity model must detect something"
    return out


@pytest.mark.parametrize("name", GPU_ENGINES)
def test_engine_matches_baseline(name, detecting_ref, engines_dir, frames, baseline_detections):
    engine = _loaded(name, detecting_ref, engines_dir)
    got = [engine.infer(f).detections for f in frames]
    engine.close()
    total = sum(len(d) for d in baseline_detections)
    matched = sum(match_detections(b, g) * len(b) for b, g in zip(baseline_detections, got, strict=True))
    gap = max(max_confidence_gap(b, g) for b, g in zip(baseline_detections, got, strict=True))
    print(f"parity {name}: {matched:.0f}/{total} matched ({matched / total:.2%}), max confidence gap {gap:.4f}")
    assert matched / total >= 0.99
    assert gap <= CONFIDENCE_TOLERANCE


@pytest.mark.parametrize("name", ["torch-graph", "ort-cuda"])
def test_graph_replay_follows_changing_inputs(name, detecting_ref, engines_dir, frames):
    """Static buffers must carry each new frame: poison the output between runs and check
    every result still equals the eager engine's for that frame."""
    eager = _loaded("torch-fp16", detecting_ref, engines_dir)
    expected = [eager.infer(f).detections for f in frames]
    eager.close()
    engine = _loaded(name, detecting_ref, engines_dir)
    run = engine.runner(1)
    for frame, want in zip(frames + frames[::-1], expected + expected[::-1], strict=True):
        with torch.cuda.stream(engine._stream):
            run(torch.full((1, 3, 640, 640), 0.5, device="cuda", dtype=engine.input_dtype)).fill_(float("nan"))
        got = engine.infer(frame).detections
        assert match_detections(want, got) >= 0.99
    engine.close()


@pytest.mark.parametrize("name", ["torch-graph", "ort-cuda"])
def test_stream_and_batch_agree_with_single_frames(name, detecting_ref, engines_dir, frames):
    engine = _loaded(name, detecting_ref, engines_dir, batch=4)
    single = [engine.infer(f).detections for f in frames]
    streamed = [r.detections for r in engine.infer_stream(frames)]
    batched = [r.detections for r in engine.infer_batch(frames[:3])]  # padded to 4
    engine.close()
    for want, got in zip(single + single[:3], streamed + batched, strict=True):
        assert match_detections(want, got) >= 0.99


def test_corrupt_cached_onnx_is_rebuilt_with_a_notice(detecting_ref, tmp_path, frames, caplog):
    if unavailable_reason("ort-cuda"):
        pytest.skip(unavailable_reason("ort-cuda"))
    target = onnx_path(detecting_ref, tmp_path, 640, "fp16", 1)
    target.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING):
        engine = _loaded("ort-cuda", detecting_ref, tmp_path)
    assert "corrupt" in caplog.text
    assert len(engine.infer(frames[0]).detections) >= 0
    engine.close()


def test_gpu_memory_not_above_baseline(detecting_ref, engines_dir, frames):
    def used_by(name: str) -> float:
        torch.cuda.empty_cache()
        free0, _ = torch.cuda.mem_get_info()
        engine = _loaded(name, detecting_ref, engines_dir)
        for f in frames:
            engine.infer(f)
        free1, _ = torch.cuda.mem_get_info()
        engine.close()
        return (free0 - free1) / 2**20

    baseline = used_by("torch-fp32")
    for name in ("torch-graph", "ort-cuda"):
        used = used_by(name)
        print(f"memory {name}: {used:.0f} MiB vs baseline {baseline:.0f} MiB")
        assert used <= max(baseline, 1.0) * 1.05


def test_nvdec_frames_match_cpu_decoding(tmp_path):
    from rtmon.nvdec import nvdec_unavailable_reason, open_nvdec

    if nvdec_unavailable_reason():
        pytest.skip(nvdec_unavailable_reason())
    clip = Path("bench_clip.mp4")
    if not clip.is_file():
        pytest.skip("no bench_clip.mp4 (a 1280x720 H.264 file) in the working tree")
    cap = cv2.VideoCapture(str(clip))
    ok, first = cap.read()
    _, gpu_first = next(open_nvdec(clip))
    assert ok and tuple(gpu_first.shape) == first.shape
    # Both decoders are exact H.264 decoders; only the YUV→RGB conversion may round differently.
    assert np.abs(gpu_first.cpu().numpy().astype(int) - first.astype(int)).mean() < 3
