"""GPU engines against the baseline, on the GPU machine (`pytest -m gpu`; CI skips these).

Parity uses the trained demo detector on frames of a synthetic scene it detects real objects
in: every engine must find the baseline's boxes again (same class, IoU ≥ 0.9) with confidences
within FP16 rounding. The parity lines printed here are the evidence quoted in the docs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rtmon.config import load_settings
from rtmon.core import Frame
from rtmon.engines import create, unavailable_reason
from rtmon.engines.parity import CONFIDENCE_TOLERANCE, match_detections, max_confidence_gap
from rtmon.models import onnx_path, resolve_model
from rtmon.scene import render_scene

pytestmark = pytest.mark.gpu

GPU_ENGINES = ["torch-fp16", "torch-fp16-cpu", "torch-graph-cpu", "torch-graph-sync", "torch-graph", "torch-graph-compiled",
               "torch-compile", "ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"]


@pytest.fixture(scope="module")
def engines_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def demo_ref(engines_dir):
    return resolve_model("demo", engines_dir)


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    images = [image for image, _ in render_scene(seed=7, frames=24, stride=2)]
    return [Frame(i, img, 0.0) for i, img in enumerate(images)]


def _settings(engines_dir: Path):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir)})


def _loaded(name: str, ref, engines_dir: Path, batch: int = 1, pipelined: bool = True):
    from rtmon.runner import batch_sizes

    why = unavailable_reason(name)
    if why:
        pytest.skip(f"{name}: {why}")
    engine = create(name, ref, _settings(engines_dir))
    engine.prepare(pipelined, batch_sizes(batch), (720, 1280, 3))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def baseline_detections(demo_ref, engines_dir, frames):
    engine = _loaded("torch-fp32", demo_ref, engines_dir)
    out = [engine.infer(f).detections for f in frames]
    engine.close()
    assert sum(len(d) for d in out) >= 24, "the demo detector must detect the scene's objects"
    return out


def _parity(name: str, baseline, got) -> tuple[float, float]:
    total = sum(len(d) for d in baseline)
    matched = sum(match_detections(b, g) * len(b) for b, g in zip(baseline, got, strict=True))
    gap = max(max_confidence_gap(b, g) for b, g in zip(baseline, got, strict=True))
    extra = sum(len(g) for g in got) - total
    print(f"parity {name}: {matched:.0f}/{total} baseline boxes matched ({matched / total:.2%}), "
          f"{extra:+d} boxes vs baseline, max confidence gap {gap:.4f}")
    return matched / total, gap


@pytest.mark.parametrize("name", GPU_ENGINES)
def test_engine_matches_baseline(name, demo_ref, engines_dir, frames, baseline_detections):
    engine = _loaded(name, demo_ref, engines_dir)
    got = [engine.infer(f).detections for f in frames]
    fallbacks = getattr(engine, "overflows", 0)
    engine.close()
    share, gap = _parity(name, baseline_detections, got)
    assert share >= 0.99
    assert gap <= CONFIDENCE_TOLERANCE
    assert fallbacks == 0, "the demo scene never has more candidates than k"


def _stream(engine, frames, per: int = 1):
    """As the runner drives an engine: micro-batches of `per` frames, up to `lanes` submissions
    open, collected in order."""
    open_, out = [], []
    for i in range(0, len(frames), per):
        if len(open_) == engine.lanes:
            out += engine.collect(open_.pop(0))
        open_.append(engine.submit(frames[i : i + per]))
    for ticket in open_:
        out += engine.collect(ticket)
    return out


@pytest.mark.parametrize("name", ["torch-graph", "torch-graph-compiled", "ort-cuda"])
def test_stream_and_batch_agree_with_single_frames(name, demo_ref, engines_dir, frames):
    engine = _loaded(name, demo_ref, engines_dir, batch=4)
    single = [engine.infer(f).detections for f in frames]
    streamed = [r.detections for r in _stream(engine, frames)]
    backwards = [r.detections for r in _stream(engine, frames[::-1])][::-1]  # static buffers follow new frames
    batched = [r.detections for r in engine.collect(engine.submit(frames[:3]))]  # on the plan for 4
    # Micro-batches of 4 on both lanes: the engine stream's plans share one device copy of the frames.
    batches = [r.detections for r in _stream(engine, frames, per=4)]
    on_device = [r.detections for r in _stream(engine, [Frame(f.index, torch.from_numpy(f.image).cuda(), 0.0)
                                                        for f in frames])]
    engine.close()
    for want, got in zip(single * 4 + single[:3], streamed + backwards + on_device + batches + batched, strict=True):
        assert match_detections(want, got) == 1.0 and len(want) == len(got)


def test_candidate_overflow_falls_back_to_full_nms(demo_ref, engines_dir, frames):
    """With k = 4 nearly every frame overflows; the fallback must give the same boxes."""
    from rtmon.engines import gpu_common

    engine = _loaded("torch-graph", demo_ref, engines_dir)
    want = [engine.infer(f).detections for f in frames]
    engine.close()
    k, gpu_common.CANDIDATES = gpu_common.CANDIDATES, 4
    try:
        engine = _loaded("torch-graph", demo_ref, engines_dir)
        got = [r.detections for r in _stream(engine, frames)]
        overflows = engine.overflows
        engine.close()
    finally:
        gpu_common.CANDIDATES = k
    assert overflows > len(frames) // 2
    for w, g in zip(want, got, strict=True):
        assert match_detections(w, g) == 1.0 and len(w) == len(g)


def test_the_graphs_nms_on_the_device_keeps_the_host_nms_boxes(demo_ref, engines_dir, frames):
    """On the same candidates, `fixed_shape_nms` on the GPU keeps the boxes the shared host NMS
    keeps: one to one at IoU ≥ 0.999, same classes, scores within 1e-3."""
    from rtmon.engines.parity import iou_matrix
    from rtmon.engines.prepost import (
        Letterbox,
        Thresholds,
        detections_from_fixed,
        fixed_shape_nms,
        nms_rows,
        preprocess_torch,
        scale_boxes,
        top_candidates,
    )
    from rtmon.models import load_yolo

    net = load_yolo(demo_ref.path).model.fuse().eval().cuda().half()
    th, box = Thresholds(), Letterbox.fit(1280, 720, 640)
    checked = 0
    with torch.no_grad():
        for f in frames:
            x, _ = preprocess_torch(torch.from_numpy(f.image).cuda(), 640, torch.float16)
            pred = net(x)[0].float()
            got = detections_from_fixed(fixed_shape_nms(pred, box, th).cpu().numpy()[0])
            rows = top_candidates(pred, 512)[0].cpu()
            kept = nms_rows(rows[rows[:, 4] > th.conf], th)
            want = torch.cat((scale_boxes(kept[:, :4], box), kept[:, 4:]), 1).numpy()
            assert got is not None and len(got) == len(want)
            if len(want):
                assert (np.diag(iou_matrix(got.xyxy, want[:, :4])) >= 0.999).all()
                np.testing.assert_array_equal(got.class_id, want[:, 5].astype(int))
                np.testing.assert_allclose(got.confidence, want[:, 4], atol=1e-3)
            checked += len(want)
    assert checked >= 24


def test_corrupt_cached_onnx_is_rebuilt_with_a_notice(demo_ref, tmp_path, frames, caplog):
    if unavailable_reason("ort-cuda"):
        pytest.skip(unavailable_reason("ort-cuda"))
    target = onnx_path(demo_ref, tmp_path, 640, "fp16", 1)
    target.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING):
        engine = _loaded("ort-cuda", demo_ref, tmp_path)
    assert "corrupt" in caplog.text
    assert len(engine.infer(frames[0]).detections) > 0
    engine.close()


_MEMORY_PROBE = """
import json, sys
import torch
from pathlib import Path
from rtmon import gpu
from rtmon.config import load_settings
from rtmon.engines import create
from rtmon.engines.base import warmup_frames
from rtmon.models import resolve_model
name, engines_dir = sys.argv[1], sys.argv[2]
engine = create(name, resolve_model("demo", Path(engines_dir)), load_settings(overrides={"paths.engines_dir": engines_dir}))
engine.prepare(False, (1,), (720, 1280, 3))  # as single-stream runs it: one frame at a time
engine.load()
for f in warmup_frames(count=20):
    engine.infer(f)
free, total = torch.cuda.mem_get_info()
print(json.dumps({"nvml": gpu.process_memory_mib(), "device_used": (total - free) / 2**20}))
"""


def test_gpu_memory_not_above_baseline(engines_dir):
    """Each engine in a fresh process, its whole footprint as the driver sees it (NVML)."""

    def used_by(name: str) -> float:
        if unavailable_reason(name):
            pytest.skip(unavailable_reason(name))
        free, total = torch.cuda.mem_get_info()  # this process's own share, when NVML cannot see pids
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, name, str(engines_dir)], capture_output=True,
                             text=True, check=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        return probe["nvml"] if probe["nvml"] is not None else probe["device_used"] - (total - free) / 2**20

    baseline = used_by("torch-fp32")
    used = {name: used_by(name) for name in ("torch-graph", "torch-graph-compiled", "ort-cuda")}
    for name, mib in used.items():
        print(f"memory {name}: {mib:.0f} MiB vs baseline {baseline:.0f} MiB (NVML, whole process)")
    assert all(mib <= baseline for mib in used.values())


def test_frames_in_the_runners_page_locked_ring_upload_directly(demo_ref, engines_dir, frames):
    from rtmon.runner import FrameRing

    engine = _loaded("torch-graph", demo_ref, engines_dir)
    want = [engine.infer(f).detections for f in frames]
    ring = FrameRing(len(frames), frames[0].image.nbytes)
    try:
        assert engine.register_host_memory(ring.address, ring.shm.size)
        views = [Frame(f.index, ring.view(i, f.image.shape), 0.0) for i, f in enumerate(frames) if ring.write(i, f.image)]
        assert engine._registered_image(views[0].image)
        got = [r.detections for r in _stream(engine, views)]
        engine.close()
    finally:
        ring.close()
    for w, g in zip(want, got, strict=True):
        assert match_detections(w, g) == 1.0 and len(w) == len(g)


def test_the_runner_splits_each_engines_memory_into_context_and_its_own(demo_ref, engines_dir, frames):
    from rtmon.runner import EngineRunner, RunnerOptions

    if unavailable_reason("torch-graph"):
        pytest.skip(unavailable_reason("torch-graph"))
    settings = _settings(engines_dir)
    runners = [EngineRunner([n], demo_ref, settings, RunnerOptions.of(settings)) for n in ("torch-fp32", "torch-graph")]
    try:
        for r in runners:
            r.start(frames[0].image.nbytes)
        for r in runners:
            assert r.wait_loaded(300), r.metrics.error
        for r in runners:
            m = r.metrics.memory
            print(f"memory {r.name}: process {m.process_mib} = context {m.context_mib} + own {m.engine_mib} MiB "
                  f"(allocator peak {m.allocator_peak_mib})")
            assert m.context_mib and m.context_mib > 100 and m.engine_mib and m.engine_mib > 0
        assert runners[0].info.device.startswith("NVIDIA")  # the baseline says where it really runs
    finally:
        for r in runners:
            r.stop()


def test_nvdec_frames_match_cpu_decoding(tmp_path):
    from rtmon.nvdec import nvdec_unavailable_reason, open_nvdec

    if nvdec_unavailable_reason():
        pytest.skip(nvdec_unavailable_reason())
    clip = _h264_clip(tmp_path / "clip.mp4")
    cap = cv2.VideoCapture(str(clip))
    ok, first = cap.read()
    frames = open_nvdec(clip)
    _, gpu_first = next(frames)
    frames.close()  # a decoder dropped mid-file must not take the interpreter down
    assert ok and tuple(gpu_first.shape) == first.shape
    # Both decoders are exact H.264 decoders; only the YUV→RGB conversion may round differently.
    assert np.abs(gpu_first.cpu().numpy().astype(int) - first.astype(int)).mean() < 3


def _h264_clip(path: Path, frames: int = 30) -> Path:
    """A 1280x720 H.264 file of rendered demo-scene frames, written by rtmon's own encoder."""
    from rtmon.scene import render_scene
    from rtmon.sinks import H264Writer

    with H264Writer(path, 30, (1280, 720)) as writer:
        for image, _ in render_scene(seed=7, frames=frames):
            writer.write(image)
    return path
