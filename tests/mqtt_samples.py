"""Fixed snapshots for the MQTT tests: the examples in docs/mqtt.md are these, through the payload
and discovery builders."""

from __future__ import annotations

from rtmon.config import MqttSettings
from rtmon.core import EngineInfo, EngineState, GpuMemory, Role
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot, LatencyStats, StreamFigures
from rtmon.mqtt import discovery as ha
from rtmon.mqtt.topics import topics
from rtmon.snapshot import MonitorSnapshot, SourceStatus, StreamSnapshot


def sample_stream() -> StreamSnapshot:
    """Stream 2 of several, for the docs' example of a stream's topic."""
    source = SourceStatus("rtsp://cam-2/stream", "stream", 1280, 720, 29.97, 30.0, "running", "", 8990, 1, 2)
    return StreamSnapshot(source, {
        "optimized": StreamFigures(29.9, LatencyStats(mean=9.1, p50=8.7, p95=12.3, p99=15.8), 8950, 3),
        "baseline": StreamFigures(29.6, LatencyStats(mean=31.0, p50=30.1, p95=36.0, p99=40.2), 8870, 118),
    })  # fmt: skip


def sample_snapshot(gpu: bool = True) -> MonitorSnapshot:
    """Fixed numbers: the examples in docs/mqtt.md are these, through the payload builders."""
    engine = EngineSnapshot(
        name="optimized",
        state=EngineState.RUNNING,
        error="",
        processed=1520,
        skipped=12,
        fps=58.41,
        fps_overall=57.9,
        latency=LatencyStats(mean=14.2, p50=13.8, p95=17.1, p99=21.46),
        stages_ms={"preprocess": 1.21, "inference": 10.52, "postprocess": 0.83},
        fps_history=(),
        latency_window_ms=(),
        class_counts={0: 3, 2: 1},
        memory=GpuMemory(process_mib=412.5, context_mib=301.0, allocator_peak_mib=88.2, allocator_reserved_mib=96.0),
        role=Role.OPTIMIZED,
        capacity_fps=212.4,
        busy_pct=27.5,
    )
    baseline = EngineSnapshot(
        "baseline", EngineState.RUNNING, "", 1490, 42, 29.9, 29.8, LatencyStats(mean=31.0, p50=30.2, p95=36.4, p99=41.0),
        {"preprocess": 2.1, "inference": 25.3, "postprocess": 1.9}, (), (), {0: 3}, GpuMemory(process_mib=702.0),
        Role.BASELINE, capacity_fps=47.2, busy_pct=63.3,
    )  # fmt: skip
    starting = EngineSnapshot("ort-cpu", EngineState.STARTING, "", 0, 0, None, None, None, {}, (), (), {}, role=Role.PEER)
    sample = GpuSample("NVIDIA H100 80GB HBM3", 41.0, 2351.2, 81559.0, 47.0, 182.3, 1210.0)
    return MonitorSnapshot(
        time=1767225600.25,
        uptime_s=31.0,
        model="yolo11n.pt",
        sources=(SourceStatus("sample", "sample", 1280, 720, 30.0, 30.0, "running", "", 930),),
        engines=(starting, baseline, engine),
        engine_info={"optimized": EngineInfo("optimized", "tensorrt", "fp16", "cuda:0", 640)},
        gpu=sample if gpu else None,
        recording="",
    )


def sample_discovery(snap: MonitorSnapshot | None = None) -> dict:
    """The Home Assistant config of instance `cam1` for `snap` (default: `sample_snapshot()`)."""
    snap = snap or sample_snapshot()
    return ha.device_config(snap, topics(MqttSettings(url="mqtt://b", instance="cam1")), "cam1", 10)
