"""Prometheus metric families of one `MonitorSnapshot`: a pure function (`families()`) that the
exporter's collector calls once per scrape, so a scrape shows one consistent instant.

Names follow Prometheus' conventions: base units (seconds, bytes, ratios 0–1), `_total` on
counters, and labels `engine`, `role`, `stream`, `quantile`, `stage`, `counter`. A value rtmon
does not know (no GPU, no frame yet) is left out, never exported as 0. Metric names are listed
in docs/mqtt.md ("Prometheus").
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from rtmon import __version__
from rtmon.core import EngineState
from rtmon.metrics import LatencyStats
from rtmon.snapshot import MonitorSnapshot

MIB = 1024 * 1024
QUANTILES = {"0.5": "p50", "0.9": "p90", "0.95": "p95", "0.99": "p99"}
ENGINE = ("engine", "role")


def _latency(family: GaugeMetricFamily, labels: list[str], latency: LatencyStats | None) -> None:
    if latency is None:
        return
    for quantile, field in QUANTILES.items():
        family.add_metric([*labels, quantile], getattr(latency, field) / 1e3)


def _add(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: float | None,
         scale: float = 1.0) -> None:  # fmt: skip
    if value is not None:
        family.add_metric(labels, value * scale)


def families(snap: MonitorSnapshot) -> Iterable[Metric]:
    """Every metric family of one snapshot."""
    info = InfoMetricFamily("rtmon", "rtmon's version and the model it runs")
    info.add_metric([], {"version": __version__, "model": snap.model})
    uptime = GaugeMetricFamily("rtmon_uptime_seconds", "Seconds since the monitor started")
    uptime.add_metric([], snap.uptime_s)
    yield from (info, uptime)
    yield from _engine_families(snap)
    yield from _stream_families(snap)
    yield from _gpu_families(snap)


def _engine_families(snap: MonitorSnapshot) -> Iterable[Metric]:
    state = GaugeMetricFamily("rtmon_engine_state", "1 for the state the engine is in, 0 for the others",
                              labels=[*ENGINE, "state"])  # fmt: skip
    fps = GaugeMetricFamily("rtmon_engine_fps", "Delivered frames per second over the last few seconds", labels=ENGINE)
    capacity = GaugeMetricFamily("rtmon_engine_capacity_fps", "Frames per second of busy time: what the engine "
                                 "could sustain if frames came as fast as it takes them", labels=ENGINE)  # fmt: skip
    busy = GaugeMetricFamily("rtmon_engine_busy_ratio", "Share of the last few seconds the engine was busy", labels=ENGINE)
    latency = GaugeMetricFamily("rtmon_engine_latency_seconds", "Capture-to-boxes latency quantiles over the recent window",
                                labels=[*ENGINE, "quantile"])  # fmt: skip
    mean = GaugeMetricFamily("rtmon_engine_latency_mean_seconds", "Mean capture-to-boxes latency over the recent window",
                             labels=ENGINE)  # fmt: skip
    stages = GaugeMetricFamily("rtmon_engine_stage_seconds", "Mean time per frame in each stage", labels=[*ENGINE, "stage"])
    processed = CounterMetricFamily("rtmon_engine_frames_processed", "Frames the engine answered", labels=ENGINE)
    skipped = CounterMetricFamily("rtmon_engine_frames_skipped", "Frames the frame policy skipped to stay live",
                                  labels=ENGINE)  # fmt: skip
    memory = GaugeMetricFamily("rtmon_engine_gpu_memory_bytes", "The engine's GPU memory: its process (NVML), the CUDA "
                               "context, the engine's own share, PyTorch's allocator peak and reserve",
                               labels=[*ENGINE, "counter"])  # fmt: skip
    for engine in snap.engines:
        labels = [engine.name, str(engine.role)]
        for name in dict.fromkeys([*(str(s) for s in EngineState), str(engine.state)]):
            state.add_metric([*labels, name], 1.0 if name == str(engine.state) else 0.0)
        _add(fps, labels, engine.fps)
        _add(capacity, labels, engine.capacity_fps)
        _add(busy, labels, engine.busy_pct, 1 / 100)
        _latency(latency, labels, engine.latency)
        _add(mean, labels, engine.latency.mean if engine.latency else None, 1 / 1e3)
        for stage, ms in engine.stages_ms.items():
            stages.add_metric([*labels, stage], ms / 1e3)
        processed.add_metric(labels, engine.processed)
        skipped.add_metric(labels, engine.skipped)
        for counter, mib in engine.memory.as_dict().items():
            _add(memory, [*labels, counter.removesuffix("_mib")], mib, MIB)
    yield from (state, fps, capacity, busy, latency, mean, stages, processed, skipped, memory)
    head = snap.headline
    pair = ["baseline", "optimized"]
    speedup = GaugeMetricFamily("rtmon_headline_speedup_ratio", "Optimized capacity / baseline capacity", labels=pair)
    p95 = GaugeMetricFamily("rtmon_headline_p95_latency_ratio", "Baseline P95 latency / optimized P95 latency",
                            labels=pair)  # fmt: skip
    if head:
        _add(speedup, [head.baseline, head.optimized], head.speedup)
        _add(p95, [head.baseline, head.optimized], head.p95_ratio)
    yield from (speedup, p95)


def _stream_families(snap: MonitorSnapshot) -> Iterable[Metric]:
    labels_of = ["stream", "kind"]
    source_fps = GaugeMetricFamily("rtmon_source_fps", "Rate at which the source's frames arrive", labels=labels_of)
    source_frames = CounterMetricFamily("rtmon_source_frames", "Frames the source delivered", labels=labels_of)
    reconnects = CounterMetricFamily("rtmon_source_reconnects", "Times the source was reopened", labels=labels_of)
    for source in snap.sources:
        labels = [str(source.stream), source.kind]
        _add(source_fps, labels, source.fps)
        source_frames.add_metric(labels, source.frames)
        reconnects.add_metric(labels, source.reconnects)
    yield from (source_fps, source_frames, reconnects)
    per = ["stream", *ENGINE]
    fps = GaugeMetricFamily("rtmon_stream_fps", "Frames per second the engine delivers for this stream", labels=per)
    latency = GaugeMetricFamily("rtmon_stream_latency_seconds", "The engine's latency quantiles for this stream",
                                labels=[*per, "quantile"])  # fmt: skip
    processed = CounterMetricFamily("rtmon_stream_frames_processed", "Frames of this stream the engine answered", labels=per)
    dropped = CounterMetricFamily("rtmon_stream_frames_dropped", "Frames of this stream the engine never took", labels=per)
    for stream in snap.streams:
        for name, figures in stream.engines.items():
            engine = snap.engine(name)
            labels = [str(stream.source.stream), name, str(engine.role) if engine else ""]
            _add(fps, labels, figures.fps)
            _latency(latency, labels, figures.latency)
            processed.add_metric(labels, figures.processed)
            dropped.add_metric(labels, figures.dropped)
    yield from (fps, latency, processed, dropped)


def _gpu_families(snap: MonitorSnapshot) -> Iterable[Metric]:
    gpu = snap.gpu
    labels = ["gpu"]
    utilization = GaugeMetricFamily("rtmon_gpu_utilization_ratio", "Share of time the GPU was busy (NVML)", labels=labels)
    used = GaugeMetricFamily("rtmon_gpu_memory_used_bytes", "GPU memory in use on the device", labels=labels)
    total = GaugeMetricFamily("rtmon_gpu_memory_total_bytes", "GPU memory of the device", labels=labels)
    process = GaugeMetricFamily("rtmon_gpu_process_memory_bytes", "GPU memory of the rtmon process (NVML)", labels=labels)
    temperature = GaugeMetricFamily("rtmon_gpu_temperature_celsius", "GPU temperature", labels=labels)
    power = GaugeMetricFamily("rtmon_gpu_power_watts", "GPU power draw", labels=labels)
    if gpu is not None:
        name = [gpu.name]
        _add(utilization, name, gpu.utilization_pct, 1 / 100)
        _add(used, name, gpu.memory_used_mib, MIB)
        _add(total, name, gpu.memory_total_mib, MIB)
        _add(process, name, gpu.process_mem_mib, MIB)
        _add(temperature, name, gpu.temperature_c)
        _add(power, name, gpu.power_w)
    yield from (utilization, used, total, process, temperature, power)
