"""Per-engine live metrics: delivered FPS, capacity, busy share, latency percentiles, per-stage
times, frames processed and skipped, per-stream figures, and the headline comparison.

The runner's receiving thread calls `EngineMetrics.record()` with each `Result`; everything
downstream (TUI, MQTT, overlays, reports) reads an immutable `EngineSnapshot`. Memory is
bounded: a window of the most recent latencies, never the whole run.

Two rates, because a camera hides the difference between engines:

- **delivered FPS**: results per second. At a camera's 30 fps every engine that keeps up
  delivers 30, so this alone cannot show which is faster.
- **capacity**: frames per second of *busy* time (the time between the runner handing a frame
  to the engine and its boxes arriving back in the main process; overlapping frames of a
  pipelined engine or a micro-batch count once). It is the rate the engine could sustain if frames came as fast as it takes them,
  whatever the source's rate; `busy_pct` says how much of the time it was busy.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from rtmon.core import BenchPhase, EngineState, GpuMemory, Result, Role

PERCENTILES = (50, 90, 95, 99)
_stamps = itertools.count(1)


def change_stamp() -> int:
    """The next number of one counter for the whole process: whatever changed last holds the
    largest, so the largest stamp among several holders says whether any of them changed, even
    when a holder is replaced by a new one (a runner falling back to its next engine)."""
    return next(_stamps)  # one C call: no two threads get the same number


def throughput_fps(frames: int, t_begin: float, t_end: float) -> float | None:
    """rtmon's one definition of FPS: the frames whose boxes reached the main process in the
    stretch (t_begin, t_end], per second.

    A benchmark's stretch runs from the first frame's hand-over to the last frame's boxes, so it
    counts every frame; in a closed loop (single-stream) it is the sum of the frames' latencies
    and FPS × mean latency = 1. A live window's stretch runs from its first result's arrival to
    its last, counting the frames after the first."""
    span = t_end - t_begin
    return frames / span if frames and span > 0 else None


def busy_seconds(t_begin: np.ndarray, t_end: np.ndarray) -> float:
    """The length of the union of the intervals [t_begin, t_end]: frames that overlap (a
    pipelined engine, a micro-batch) count once."""
    if not len(t_begin):
        return 0.0
    order = np.argsort(t_begin, kind="stable")
    total, until = 0.0, float("-inf")
    for a, b in zip(t_begin[order].tolist(), t_end[order].tolist(), strict=True):
        total += max(b - max(a, until), 0.0)
        until = max(until, b)
    return total


def capacity_fps(t_begin: np.ndarray, t_end: np.ndarray) -> float | None:
    """rtmon's one definition of capacity: frames answered per second of busy time (the engine
    holding at least one frame, from its hand-over to its boxes in the main process): the rate
    the engine could sustain if frames came as fast as it takes them."""
    return per_busy_second(len(t_begin), busy_seconds(np.asarray(t_begin, np.float64), np.asarray(t_end, np.float64)))


def per_busy_second(frames: int, busy_s: float) -> float | None:
    """Capacity from its two parts (a live window accumulates the busy time as results come)."""
    return frames / busy_s if frames and busy_s > 0 else None


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over `count` frames (numpy's linear-interpolation percentiles)."""

    mean: float
    p50: float
    p95: float
    p99: float
    p90: float = 0.0
    std: float = 0.0
    max: float = 0.0
    count: int = 0

    @classmethod
    def of(cls, values_ms) -> LatencyStats | None:
        values = np.asarray(values_ms, dtype=np.float64)
        if len(values) == 0:
            return None
        p50, p90, p95, p99 = np.percentile(values, PERCENTILES)
        return cls(float(values.mean()), float(p50), float(p95), float(p99), float(p90), float(values.std()),
                   float(values.max()), len(values))

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class EngineSnapshot:
    """One engine's numbers at one instant. `None` means not known yet (shown as 'n/a')."""

    name: str
    state: EngineState | BenchPhase  # a bench reports its phase per engine instead
    error: str
    processed: int
    skipped: int
    fps: float | None  # delivered, over the last few seconds
    fps_overall: float | None  # delivered, since the first result
    latency: LatencyStats | None  # capture → boxes in the main process, recent frames
    stages_ms: dict[str, float]
    fps_history: tuple[float, ...]
    latency_window_ms: tuple[float, ...]
    class_counts: dict[int, int]
    memory: GpuMemory = field(default_factory=GpuMemory)
    role: Role = Role.OPTIMIZED
    capacity_fps: float | None = None  # frames per second of busy time, recent frames
    busy_pct: float | None = None  # share of the last few seconds the engine was busy
    notice: str = ""  # e.g. why `optimized` is not the first engine of the measured order

    @property
    def gpu_mem_mib(self) -> float | None:
        """The engine process's GPU memory (NVML), the figure panels and reports lead with."""
        return self.memory.process_mib


@dataclass(frozen=True)
class Headline:
    """Optimized vs baseline, computed from the figures on screen: capacity and P95 ratios."""

    baseline: str
    optimized: str
    speedup: float | None  # optimized capacity / baseline capacity
    p95_ratio: float | None  # baseline P95 / optimized P95 (how many times lower)

    def text(self) -> str:
        """The headline's one wording (overlay, window, TUI): a ratio below 1 reads the other way."""
        if self.speedup is None:
            return f"{self.optimized} vs {self.baseline}: measuring..."
        speed = (f"{self.speedup:.1f}x faster" if self.speedup >= 1 else f"{1 / self.speedup:.1f}x slower")
        p95 = ""
        if self.p95_ratio:
            p95 = (f", P95 {self.p95_ratio:.1f}x lower" if self.p95_ratio >= 1 else f", P95 {1 / self.p95_ratio:.1f}x higher")
        return f"OPTIMIZED {speed} than BASELINE (capacity){p95}"


def headline(engines: tuple[EngineSnapshot, ...] | list[EngineSnapshot], optimized: str | None = None) -> Headline | None:
    """The baseline against `optimized` (default: the first optimized engine); None without both."""
    base = next((e for e in engines if e.role == Role.BASELINE), None)
    opt = next((e for e in engines if e.name == optimized and e.role != Role.PROBE), None) if optimized else None
    opt = opt or next((e for e in engines if e.role == Role.OPTIMIZED), None)
    if base is None or opt is None:
        return None
    speedup = None
    if base.capacity_fps and opt.capacity_fps:
        speedup = opt.capacity_fps / base.capacity_fps
    p95 = None
    if base.latency and opt.latency and opt.latency.p95 > 0:
        p95 = base.latency.p95 / opt.latency.p95
    return Headline(base.name, opt.name, speedup, p95)


@dataclass(frozen=True)
class StreamFigures:
    """One engine's figures for one stream."""

    fps: float | None
    latency: LatencyStats | None
    processed: int
    dropped: int  # frames of this stream the engine never took (it took a newer one)


class _Rates:
    """Completions and busy time over a sliding window, and since the start."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.events: deque[tuple[float, float, float]] = deque()  # (t_begin, t_end, busy seconds it added)
        self.first_done: float | None = None
        self.last_done: float | None = None
        self.count = 0
        self.busy_total = 0.0
        self._busy_until = float("-inf")

    def add(self, t_start: float | None, t_done: float) -> None:
        # Busy time is the union of [t_start, t_done] intervals: frames overlapping in a
        # pipelined engine or a micro-batch count once. Results arrive in completion order.
        start = t_done if t_start is None else t_start
        busy = max(t_done - max(start, self._busy_until), 0.0)
        self._busy_until = max(self._busy_until, t_done)
        self.busy_total += busy
        self.count += 1
        self.last_done = t_done
        if self.first_done is None:
            self.first_done = t_done
        self.events.append((start, t_done, busy))
        while self.events and t_done - self.events[0][1] > self.window_s:
            self.events.popleft()

    def fps(self, now: float) -> float | None:
        """`throughput_fps` over the window's results; 0 once results have stopped coming."""
        recent = [b for _, b, _ in self.events if now - b <= self.window_s]
        if len(recent) < 2:
            return 0.0 if self.count > 1 else None
        return throughput_fps(len(recent) - 1, recent[0], recent[-1])

    def fps_overall(self) -> float | None:
        if self.first_done is None or self.last_done is None or self.count < 2:
            return None
        return throughput_fps(self.count - 1, self.first_done, self.last_done)

    def capacity(self) -> float | None:
        """`capacity_fps` over the window (its busy time, accumulated as results came)."""
        return per_busy_second(len(self.events), sum(b for _, _, b in self.events))

    def capacity_overall(self) -> float | None:
        return per_busy_second(self.count, self.busy_total)

    def busy_pct(self, now: float) -> float | None:
        if not self.events:
            return None
        busy = sum(b for _, t, b in self.events if now - t <= self.window_s)
        return min(100.0, 100.0 * busy / self.window_s)


@dataclass
class EngineMetrics:
    """Thread-safe accumulator for one engine (and each stream it serves)."""

    name: str
    role: Role = Role.OPTIMIZED
    window: int = 2000
    fps_window_s: float = 2.0
    history_len: int = 120
    state: EngineState = EngineState.STARTING
    error: str = ""
    memory: GpuMemory = field(default_factory=GpuMemory)
    notice: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.version = change_stamp()  # what front ends compare before asking for a snapshot
        self.processed = 0
        self.skipped = 0
        self._latencies: deque[float] = deque(maxlen=self.window)
        self._stage_sums = {"handover": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self._rates = _Rates(self.fps_window_s)
        self._fps_history: deque[float] = deque(maxlen=self.history_len)
        self._last_history_t = 0.0
        self._class_counts: dict[int, int] = {}
        self._streams: dict[int, tuple[_Rates, deque[float], list[int]]] = {}

    def reset(self) -> None:
        """Forget everything measured so far (e.g. the warm-up), keeping state and memory."""
        with self._lock:
            self.__post_init__()

    def record(self, result: Result, skipped: int = 0) -> None:
        with self._lock:
            self.version = change_stamp()
            self.processed += 1
            self.skipped += skipped
            latency = result.latency_ms
            self._latencies.append(latency)
            for stage in self._stage_sums:
                self._stage_sums[stage] += getattr(result.stages, stage)
            t = result.t_boxes
            t_begin = result.t_handed if result.t_handed is not None else result.t_start
            self._rates.add(t_begin, t)
            if t - self._last_history_t >= 0.5:
                self._last_history_t = t
                self._fps_history.append(self._rates.fps(t) or 0.0)
            self._class_counts = result.detections.class_counts()
            rates, lat, dropped = self._stream(result.frame.stream)
            rates.add(t_begin, t)
            lat.append(latency)
            dropped[0] += skipped

    def _stream(self, stream: int) -> tuple[_Rates, deque[float], list[int]]:
        if stream not in self._streams:
            self._streams[stream] = (_Rates(self.fps_window_s), deque(maxlen=self.window), [0])
        return self._streams[stream]

    def set_state(self, state: EngineState, error: str = "") -> None:
        with self._lock:
            self.state, self.error = EngineState(state), error
            self.version = change_stamp()

    def set_memory(self, memory: GpuMemory) -> None:
        with self._lock:
            self.memory = memory
            self.version = change_stamp()

    def latencies(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(self._latencies, dtype=np.float64)

    def streams(self, now: float | None = None) -> dict[int, StreamFigures]:
        now = time.perf_counter() if now is None else now
        with self._lock:
            return {
                s: StreamFigures(rates.fps(now), LatencyStats.of(np.fromiter(lat, np.float64)), rates.count, dropped[0])
                for s, (rates, lat, dropped) in sorted(self._streams.items())
            }

    def snapshot(self, now: float | None = None) -> EngineSnapshot:
        now = time.perf_counter() if now is None else now
        with self._lock:
            lat = np.fromiter(self._latencies, dtype=np.float64)
            n = max(self.processed, 1)
            return EngineSnapshot(
                name=self.name,
                state=self.state,
                error=self.error,
                processed=self.processed,
                skipped=self.skipped,
                fps=self._rates.fps(now),
                fps_overall=self._rates.fps_overall(),
                latency=LatencyStats.of(lat),
                stages_ms={k: v / n for k, v in self._stage_sums.items()} if self.processed else {},
                fps_history=tuple(self._fps_history),
                latency_window_ms=tuple(lat[-500:]),
                class_counts=dict(self._class_counts),
                memory=self.memory,
                role=self.role,
                capacity_fps=self._rates.capacity(),
                busy_pct=self._rates.busy_pct(now),
                notice=self.notice,
            )

    def capacity_overall(self) -> float | None:
        with self._lock:
            return self._rates.capacity_overall()
