"""The benchmark scenarios, as the field defines them (MLPerf Inference, Triton's perf_analyzer).

- **single-stream**: frame N+1 is handed over when frame N's boxes are on the host — what a
  live camera user feels. Latency statistics, MLPerf's early-stopping P90, VALID when at least
  `MIN_QUERIES` frames over at least `min_duration` seconds.
- **offline**: every frame available up front; frames per second, with the engine's pipelining
  and a micro-batch sweep — what a user with a folder of videos wants.
- **multi-stream** (capacity): N cameras, each delivering a frame every 1/fps seconds on a fixed
  schedule; the largest N the engine serves with P99 (from the scheduled arrival) within one
  frame period and at most 0.1% of frames dropped.

Each engine runs alone in its own process through `rtmon.runner`, on frames decoded before any
timing starts. Warm-up is excluded and its length reported.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtmon.bench.harness import EngineUnderTest, Measured, early_stopping_estimate, stability
from rtmon.core import Frame
from rtmon.errors import UserError
from rtmon.metrics import LatencyStats
from rtmon.runner import RunnerOptions
from rtmon.sources import FrameBus

MIN_QUERIES = 1024  # MLPerf SingleStream's minimum query count
STRICT_MIN_DURATION_S = 60.0
OFFLINE_BATCH_DELAY_MS = 50.0  # frames are all there: a batch fills long before this
MAX_DROP_PCT = 0.1

Progress = Callable[[str, float, float], None]  # (what, done, total)


def _engine_facts(eut: EngineUnderTest) -> dict:
    r = eut.runner
    return {
        "name": r.name, "role": r.role.value, "backend": r.info.backend, "precision": r.info.precision,
        "device": r.info.device, "notes": list(r.info.notes), "load_s": r.load_s,
        "lanes": r.lanes, "max_batch": r._engine_max_batch,
    }


def _optimizations(eut: EngineUnderTest, pipelined: bool, batch: int) -> list[str]:
    """What the engine used in this scenario, for the optimization ladder."""
    backend = eut.runner.info.backend.lower()
    used = []
    if "graph" in backend or "graph" in eut.runner.name:
        used.append("CUDA graph")
    if "inductor" in backend or "compile" in backend:
        used.append("Inductor kernels")
    if eut.runner.info.precision == "fp16":
        used.append("FP16")
    if pipelined and eut.runner.lanes > 1:
        used.append(f"pipelining ({eut.runner.lanes} in flight)")
    if batch > 1:
        used.append(f"micro-batch {batch}")
    return used


def _require_loaded(eut: EngineUnderTest) -> None:
    if not eut.runner.wait_loaded():
        error = eut.runner.metrics.error or "did not load"
        eut.stop()
        raise UserError(f"engine: {eut.runner.name}: {error}")


def _run_sequential(eut: EngineUnderTest, count: int, first_index: int, until: Callable[[int, float], bool] | None = None,
                    progress: Progress | None = None, total: float = 0) -> int:
    """Hand frames over one at a time, each when the previous one's boxes are back."""
    col = eut.collector
    t0 = time.perf_counter()
    n = 0
    while True:
        if until is None and n >= count:
            break
        if until is not None and until(n, time.perf_counter() - t0):
            break
        want = col.count + 1
        if not eut.hand_over(first_index + n, first_index + n) or not col.wait_for(
                want, eut.runner.options.timeout_s + 1, lambda: eut.failed):
            raise UserError(f"engine: {eut.runner.name}: {eut.runner.metrics.error or 'stopped answering'}")
        n += 1
        if progress and n % 16 == 0:
            progress(eut.runner.name, n, total or count)
    return n


def single_stream(eut: EngineUnderTest, frames: int, warmup: int, min_duration: float, max_duration: float,
                  window_s: float, timing_probe: int, progress: Progress | None = None) -> dict:
    """The single-stream scenario for one loaded engine; the engine's entry of bench.json."""
    _require_loaded(eut)
    t_warm = time.perf_counter()
    _run_sequential(eut, warmup, -warmup)
    warmup_s = time.perf_counter() - t_warm
    start = eut.collector.count

    def done(n: int, elapsed: float) -> bool:
        if n < frames or elapsed < min_duration:
            return False
        if elapsed >= max_duration:
            return True
        return n % 64 == 0 and stability(eut.collector.since(start), window_s).stable

    _run_sequential(eut, frames, 0, done, progress, frames)
    measured = eut.collector.since(start)
    memory = eut.memory
    entry = {**_engine_facts(eut), **_latency_entry(measured, window_s), "warmup": {"frames": warmup, "s": warmup_s},
             "optimizations": _optimizations(eut, False, 1), "mode": "single", "batch": 1}
    entry["validity"] = _validity(measured, min_duration)
    entry["valid"] = not entry["validity"]
    entry["gpu_mem"] = memory.as_dict()
    entry["timing_cost"] = _timing_cost(eut, measured, timing_probe) if timing_probe else None
    return entry


def _latency_entry(measured: Measured, window_s: float) -> dict:
    lat = LatencyStats.of(measured.latency_ms)
    stab = stability(measured, window_s)
    return {
        "frames": measured.frames,
        "wall_s": measured.wall_s,
        "fps": measured.fps,
        "latency_ms": None if lat is None else lat.as_dict(),
        "early_stopping_p90": early_stopping_estimate(measured.latency_ms, 0.90),
        "stages_ms": measured.stage_means(),
        "stability": stab.as_dict(),
        "stable": stab.stable,
        "latencies_ms": measured.latency_ms.round(4).tolist(),
    }


def _validity(measured: Measured, min_duration: float) -> list[str]:
    """Why the result is not VALID (MLPerf's minimums); [] when it is."""
    why = []
    if measured.frames < MIN_QUERIES:
        why.append(f"{measured.frames} frames < {MIN_QUERIES}")
    if measured.wall_s < min_duration:
        why.append(f"{measured.wall_s:.1f} s < the minimum {min_duration:g} s")
    return why


def _timing_cost(eut: EngineUnderTest, timed: Measured, frames: int) -> dict:
    """Run `frames` more frames with per-stage timing off and compare mean latency: what the
    timing itself costs. Engines whose stages are not event-timed say so."""
    if eut.runner.info.device in ("", "cpu") or "ultralytics" in eut.runner.info.backend:
        return {"note": "stage times from the engine's own host timers (ultralytics' Profile or rtmon's Stopwatch); "
                        "not switchable, so not measured apart"}
    eut.runner.control(stage_times=False)
    start = eut.collector.count
    try:
        _run_sequential(eut, frames, 10_000_000)
    finally:
        eut.runner.control(stage_times=True)
    untimed = eut.collector.since(start)
    recent = timed.latency_ms[-frames:]
    a, b = float(np.mean(recent)), float(np.mean(untimed.latency_ms))
    return {"timed_mean_ms": a, "untimed_mean_ms": b, "cost_ms": a - b, "cost_pct": 100 * (a - b) / b if b else None,
            "frames": frames}


# ---- offline ----------------------------------------------------------------------------------------


def offline(eut: EngineUnderTest, batches: list[int], frames: int, warmup_batches: int,
            progress: Progress | None = None) -> dict:
    """Frames/s and batch latency per micro-batch size (every frame available up front)."""
    _require_loaded(eut)
    runner = eut.runner
    sweep = []
    index = 0
    for batch in batches:
        if batch > runner._engine_max_batch:
            sweep.append({"batch": batch, "fps": None, "latency_ms": None,
                          "note": f"the engine takes at most {runner._engine_max_batch} frame(s) at once"})
            continue
        runner.control(max_batch=batch)
        for _ in range(warmup_batches * batch):
            eut.hand_over(index, index)
            index += 1
        runner.drain(runner.options.timeout_s)
        start = eut.collector.count
        count = max(frames, batch * 16)
        for n in range(count):
            if not eut.hand_over(index, index):
                raise UserError(f"engine: {runner.name}: {runner.metrics.error or 'stopped answering'}")
            index += 1
            if progress and n % 64 == 0:
                progress(f"{runner.name} batch {batch}", n, count)
        if not eut.collector.wait_for(start + count, runner.options.timeout_s * 4, lambda: eut.failed):
            raise UserError(f"engine: {runner.name}: {runner.metrics.error or 'stopped answering'}")
        measured = eut.collector.since(start)
        batch_ms = _batch_latencies(measured)
        sweep.append({"batch": batch, "fps": measured.fps, "frames": measured.frames,
                      "latency_ms": None if batch_ms is None else batch_ms.as_dict(),
                      "stages_ms": measured.stage_means()})
    measured_rows = [row for row in sweep if row["fps"]]
    if not measured_rows:
        raise UserError(f"engine: {runner.name}: no batch size could be measured")
    best = max(measured_rows, key=lambda row: row["fps"])
    return {**_engine_facts(eut), "fps": best["fps"], "batch": best["batch"], "sweep": sweep,
            "latency_ms": best["latency_ms"], "stages_ms": best["stages_ms"], "mode": "offline",
            "optimizations": _optimizations(eut, True, best["batch"]), "gpu_mem": eut.memory.as_dict(),
            "latency_note": "batch latency: the engine's busy time per micro-batch (taken → boxes on the host)"}


def _batch_latencies(measured: Measured) -> LatencyStats | None:
    """One latency per micro-batch: from the engine taking it to its boxes being on the host."""
    if not measured.frames:
        return None
    pairs = np.unique(np.stack([measured.t_start, measured.t_done], axis=1), axis=0)
    return LatencyStats.of((pairs[:, 1] - pairs[:, 0]) * 1e3)


# ---- multi-stream capacity --------------------------------------------------------------------------


@dataclass
class Trial:
    streams: int
    p99_ms: float | None
    drop_pct: float
    delivered: int
    dropped: int
    fps: float | None
    passed: bool

    def as_dict(self) -> dict:
        return {"streams": self.streams, "p99_ms": self.p99_ms, "drop_pct": self.drop_pct, "delivered": self.delivered,
                "dropped": self.dropped, "fps": self.fps, "passed": self.passed}


def _schedule(streams: int, camera_fps: float, seconds: float) -> list[tuple[float, int, int]]:
    """(offset s, stream, frame index) for every frame of every camera, fixed in advance; cameras
    start evenly spread over one frame period (real cameras are not in phase)."""
    period = 1.0 / camera_fps
    frames = int(seconds * camera_fps)
    events = [((k + s / streams) * period, s, k) for s in range(streams) for k in range(frames)]
    events.sort()
    return events


def capacity_trial(eut: EngineUnderTest, streams: int, camera_fps: float, seconds: float, warmup_s: float) -> Trial:
    """N cameras on the engine for `seconds` (after `warmup_s`): P99 from the scheduled arrival
    and the share of frames dropped (a camera's frame never taken before its next one came)."""
    runner = eut.runner
    bus = FrameBus()
    for s in range(streams):
        bus.add_stream(s)
    sub = bus.subscribe(runner.name, "latest")
    start_count = eut.collector.count
    pool = len(eut.pool)
    slot_of: dict[tuple[int, int], int] = {}
    stop = threading.Event()
    t0 = time.perf_counter() + 0.05
    total = warmup_s + seconds

    def publish() -> None:
        for offset, s, k in _schedule(streams, camera_fps, total):
            due = t0 + offset
            delay = due - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            slot = (s * 7919 + k) % pool
            slot_of[(s, k)] = slot
            bus.publish(Frame(k, eut.pool[slot], due, s), stop)
        for s in range(streams):
            bus.end(s)

    publisher = threading.Thread(target=publish, name="rtmon-cameras", daemon=True)
    publisher.start()
    try:
        while True:
            if not runner.wait_room(0.2):
                if eut.failed:
                    raise UserError(f"engine: {runner.name}: {runner.metrics.error}")
                continue
            try:
                taken = sub.take(max(runner.depth - runner.in_flight, 1), timeout=0.5)
            except queue.Empty:
                if not publisher.is_alive():
                    break
                continue
            if not taken:
                break
            for frame, skipped in taken:
                runner.send(frame, skipped, slot=slot_of[(frame.stream, frame.index)])
    finally:
        stop.set()
        publisher.join(5)
        runner.drain(runner.options.timeout_s)
    measured = eut.collector.since(start_count)
    scheduled_at = measured.t_done - measured.latency_ms / 1e3
    keep = scheduled_at >= t0 + warmup_s  # frames scheduled after the warm-up
    lat = measured.latency_ms[keep]
    delivered = int(keep.sum())
    dropped = int(measured.skipped[keep].sum())
    scheduled = delivered + dropped
    drop_pct = 100.0 * dropped / scheduled if scheduled else 100.0
    p99 = float(np.percentile(lat, 99)) if len(lat) else None
    fps = delivered / seconds if seconds else None
    passed = p99 is not None and p99 <= 1000.0 / camera_fps and drop_pct <= MAX_DROP_PCT
    return Trial(streams, p99, drop_pct, delivered, dropped, fps, passed)


def capacity_search(eut: EngineUnderTest, camera_fps: float, seconds: float, warmup_s: float, max_streams: int,
                    progress: Progress | None = None) -> dict:
    """The largest number of cameras that passes: double until a trial fails, then bisect."""
    _require_loaded(eut)
    trials: dict[int, Trial] = {}

    def run(n: int) -> Trial:
        if n not in trials:
            if progress:
                progress(f"{eut.runner.name}: {n} cameras", len(trials), 0)
            trials[n] = capacity_trial(eut, n, camera_fps, seconds, warmup_s)
        return trials[n]

    good, bad = 0, None
    n = 1
    while bad is None:
        if not run(n).passed:
            bad = n
        elif n >= max_streams:
            good = n
            break
        else:
            good, n = n, min(n * 2, max_streams)
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if run(mid).passed:
            good = mid
        else:
            bad = mid
    curve = [trials[k].as_dict() for k in sorted(trials)]
    return {**_engine_facts(eut), "max_streams": good, "curve": curve, "camera_fps": camera_fps,
            "trial_s": seconds, "warmup_s": warmup_s, "gpu_mem": eut.memory.as_dict(),
            "optimizations": _optimizations(eut, True, eut.runner._engine_max_batch),
            "limit_reached": bad is None and good >= max_streams}


def options_for(settings, scenario: str, max_batch: int = 1) -> RunnerOptions:
    """How each scenario drives an engine."""
    if scenario == "single-stream":
        return RunnerOptions.of(settings, depth=1, pipelined=False, max_batch=1, max_delay_ms=0.0)
    if scenario == "offline":
        return RunnerOptions.of(settings, pipelined=True, max_batch=max_batch, max_delay_ms=OFFLINE_BATCH_DELAY_MS,
                                queued_batches=1)
    return RunnerOptions.of(settings, pipelined=True, max_batch=max_batch, queued_batches=1)
