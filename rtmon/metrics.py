"""Per-engine live metrics: FPS (rolling and overall), latency percentiles and histogram,
per-stage times, frames processed and skipped.

Engine threads call `EngineMetrics.record()`; everything downstream (TUI, MQTT, overlays,
bench) reads an immutable `EngineSnapshot`. Memory is bounded: a window of the most recent
latencies, never the whole run, unless `keep_all` is asked for (bench).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from rtmon.core import Result

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values_ms: np.ndarray) -> LatencyStats | None:
        if len(values_ms) == 0:
            return None
        p50, p95, p99 = np.percentile(values_ms, PERCENTILES)
        return cls(float(np.mean(values_ms)), float(p50), float(p95), float(p99))


@dataclass(frozen=True)
class EngineSnapshot:
    """One engine's numbers at one instant. `None` means not known yet (shown as 'n/a')."""

    name: str
    state: str
    error: str
    processed: int
    skipped: int
    fps: float | None
    fps_overall: float | None
    latency: LatencyStats | None
    stages_ms: dict[str, float]
    fps_history: tuple[float, ...]
    latency_window_ms: tuple[float, ...]
    class_counts: dict[int, int]
    gpu_mem_mib: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("latency_window_ms")
        out.pop("fps_history")
        return out


@dataclass
class EngineMetrics:
    """Thread-safe accumulator for one engine."""

    name: str
    window: int = 2000
    fps_window_s: float = 2.0
    history_len: int = 120
    keep_all: bool = False
    state: str = "starting"
    error: str = ""
    gpu_mem_mib: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.processed = 0
        self.skipped = 0
        self._latencies: deque[float] = deque(maxlen=None if self.keep_all else self.window)
        self._stage_sums = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self._done_times: deque[float] = deque()
        self._first_done: float | None = None
        self._last_done: float | None = None
        self._fps_history: deque[float] = deque(maxlen=self.history_len)
        self._last_history_t = 0.0
        self._class_counts: dict[int, int] = {}

    def reset(self) -> None:
        """Forget everything measured so far (e.g. the warm-up), keeping the state."""
        with self._lock:
            self.__post_init__()

    def record(self, result: Result, skipped: int = 0) -> None:
        with self._lock:
            self.processed += 1
            self.skipped += skipped
            self._latencies.append(result.latency_ms)
            for stage in self._stage_sums:
                self._stage_sums[stage] += getattr(result.stages, stage)
            t = result.t_done
            if self._first_done is None:
                self._first_done = t
            self._last_done = t
            self._done_times.append(t)
            while self._done_times and t - self._done_times[0] > self.fps_window_s:
                self._done_times.popleft()
            if t - self._last_history_t >= 0.5:
                self._last_history_t = t
                self._fps_history.append(self._rolling_fps(t) or 0.0)
            self._class_counts = result.detections.class_counts()

    def add_skipped(self, n: int) -> None:
        with self._lock:
            self.skipped += n

    def set_state(self, state: str, error: str = "") -> None:
        with self._lock:
            self.state, self.error = state, error

    def latencies(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(self._latencies, dtype=np.float64)

    def _rolling_fps(self, now: float) -> float | None:
        """Completions per second over the last `fps_window_s`; 0 once an engine has stalled."""
        times = [t for t in self._done_times if now - t <= self.fps_window_s]
        if len(times) < 2:
            return 0.0 if self.processed > 1 else None
        return (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else None

    def snapshot(self, now: float | None = None) -> EngineSnapshot:
        now = time.perf_counter() if now is None else now
        with self._lock:
            lat = np.fromiter(self._latencies, dtype=np.float64)
            overall = None
            if self._first_done is not None and self._last_done is not None and self.processed > 1:
                span = self._last_done - self._first_done
                overall = (self.processed - 1) / span if span > 0 else None
            n = max(self.processed, 1)
            return EngineSnapshot(
                name=self.name,
                state=self.state,
                error=self.error,
                processed=self.processed,
                skipped=self.skipped,
                fps=self._rolling_fps(now),
                fps_overall=overall,
                latency=LatencyStats.of(lat),
                stages_ms={k: v / n for k, v in self._stage_sums.items()} if self.processed else {},
                fps_history=tuple(self._fps_history),
                latency_window_ms=tuple(lat[-500:]),
                class_counts=dict(self._class_counts),
                gpu_mem_mib=self.gpu_mem_mib,
            )
