"""What rtmon publishes, schema version 2 (docs/mqtt.md): pure functions of a `MonitorSnapshot`.

The status topic carries a plain word (`online` / `offline`, what Home Assistant's availability
and Frigate expect); every other topic a JSON object with `schema` and `ts`. A figure rtmon does
not know is `null`, never 0. `rtmon watch` is the first consumer of this schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rtmon.metrics import EngineSnapshot
from rtmon.snapshot import MonitorSnapshot, StreamSnapshot

SCHEMA = 2
ONLINE, OFFLINE = "online", "offline"


def _header(ts: float) -> dict[str, Any]:
    return {"schema": SCHEMA, "ts": round(float(ts), 3)}


def _num(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def status_payload(online: bool) -> bytes:
    """The status topic's plain text: what Home Assistant's availability expects."""
    return (ONLINE if online else OFFLINE).encode()


def stream_payload(snapshot: MonitorSnapshot, stream: StreamSnapshot) -> dict[str, Any]:
    """One source of several: its state and, per engine that takes it, what that engine delivered."""
    src = stream.source
    return {
        **_header(snapshot.time),
        "stream": src.stream,
        "source": src.uri,
        "state": str(src.state),
        "reconnects": src.reconnects,
        "source_fps": _num(src.fps),
        "engines": {
            name: {
                "fps": _num(fig.fps),
                "latency_ms": None if fig.latency is None else {
                    "p50": _num(fig.latency.p50), "p95": _num(fig.latency.p95), "p99": _num(fig.latency.p99)},
                "frames_processed": fig.processed,
                "frames_dropped": fig.dropped,
            }
            for name, fig in stream.engines.items()
        },
    }


def engine_payload(snapshot: MonitorSnapshot, engine: EngineSnapshot) -> dict[str, Any]:
    """One engine's figures: state, FPS, capacity, latency, stages, counters, GPU memory."""
    info = snapshot.engine_info.get(engine.name)
    lat = engine.latency
    head = snapshot.headline
    return {
        **_header(snapshot.time),
        "engine": engine.name,
        "role": str(engine.role),
        "backend": info.backend if info else None,
        "precision": info.precision if info else None,
        "device": info.device if info else None,
        "model": snapshot.model,
        "state": str(engine.state),
        "error": engine.error,
        "fps": _num(engine.fps),
        "fps_overall": _num(engine.fps_overall),
        "capacity_fps": _num(engine.capacity_fps),
        "busy_pct": _num(engine.busy_pct, 1),
        "latency_ms": None
        if lat is None
        else {"mean": _num(lat.mean), "p50": _num(lat.p50), "p95": _num(lat.p95), "p99": _num(lat.p99)},
        "stages_ms": {stage: _num(ms) for stage, ms in engine.stages_ms.items()},
        "frames_processed": engine.processed,
        "frames_skipped": engine.skipped,
        "gpu_mem_mib": _num(engine.gpu_mem_mib, 1),
        "gpu_mem": {counter: _num(mib, 1) for counter, mib in engine.memory.as_dict().items()},
        "speedup_vs_baseline": _num(head.speedup) if head and head.optimized == engine.name else None,
    }


def gpu_payload(snapshot: MonitorSnapshot) -> dict[str, Any]:
    """Device telemetry; every field null when there is no GPU (unknown, not zero)."""
    gpu = snapshot.gpu
    return {
        **_header(snapshot.time),
        "name": gpu.name if gpu else None,
        "utilization_pct": _num(gpu.utilization_pct, 1) if gpu else None,
        "memory_used_mib": _num(gpu.memory_used_mib, 1) if gpu else None,
        "memory_total_mib": _num(gpu.memory_total_mib, 1) if gpu else None,
        "temperature_c": _num(gpu.temperature_c, 1) if gpu else None,
        "power_w": _num(gpu.power_w, 1) if gpu else None,
        "process_mem_mib": _num(gpu.process_mem_mib, 1) if gpu else None,
        "allocator_peak_mib": _num(gpu.allocator_peak_mib, 1) if gpu else None,
    }


def detections_payload(
    snapshot: MonitorSnapshot, engine: EngineSnapshot, class_names: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Per-class counts in the engine's latest frame, keyed by class name (or id as text)."""
    names = class_names or {}
    return {
        **_header(snapshot.time),
        "engine": engine.name,
        "counts": {names.get(cid, str(cid)): n for cid, n in sorted(engine.class_counts.items())},
    }


def encode(payload: dict[str, Any]) -> bytes:
    """A payload as the compact JSON that goes on the wire (NaN refused: it is not JSON)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
