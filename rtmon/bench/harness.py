"""What every benchmark scenario shares: decoded frames preloaded into an engine runner's ring,
feeds that hand them over, the results collected as arrays, measurement windows and their
stability, and MLPerf's early-stopping percentile estimate.

Engines are driven by the same `EngineRunner` as the live view, each alone in its own process;
frames are decoded once, before anything is timed, and preloaded into the runner's shared-memory
ring, so handing a frame over costs a request record and no copy. Latency runs from the hand-over
to the boxes in the main process (`rtmon.core.Result`); FPS and capacity are
`rtmon.metrics.throughput_fps` and `capacity_fps`, the definitions every report uses.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rtmon import engines as registry
from rtmon.core import EngineState, GpuMemory, Result
from rtmon.errors import UserError
from rtmon.metrics import capacity_fps, throughput_fps
from rtmon.models import ModelRef
from rtmon.runner import EngineRunner, PoolFeed, RunnerOptions
from rtmon.sources import SourceSpec, read_frames

STABLE_WITHIN = 0.10  # perf_analyzer's rule: three consecutive windows within 10%
STABLE_WINDOWS = 3
EARLY_STOPPING_CONFIDENCE = 0.99  # MLPerf loadgen's
EARLY_STOPPING_MIN_QUERIES = 64
STAGES = ("handover", "preprocess", "inference", "postprocess")


def decode_pool(specs: list[SourceSpec], count: int) -> list[np.ndarray]:
    """`count` distinct decoded frames, taken in turn from each source (wrapping around a short
    file). Benchmarks cycle through this pool (MLPerf's "performance sample count")."""
    per_source = max(count // len(specs), 1)
    pool: list[np.ndarray] = []
    for spec in specs:
        pool.extend(read_frames(spec, per_source))
    return pool


class Collector:
    """Every result of a runner, as rows of one growing array (recording one costs a row write;
    `since()` is a slice); `wait_for(n)` blocks until n results came back."""

    COLUMNS = 12

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self._rows = np.zeros((4096, self.COLUMNS))
        self.results: dict[int, Result] = {}
        self.keep_results = False

    def __call__(self, result: Result, skipped: int) -> None:
        s = result.stages
        row = (result.latency_ms, result.frame.t_capture, result.t_handed, result.t_start, result.t_done,
               result.t_boxes, result.frame.stream, skipped, s.handover, s.preprocess, s.inference, s.postprocess)
        with self._cond:
            if self.count == len(self._rows):
                self._rows = np.concatenate((self._rows, np.zeros_like(self._rows)))
            self._rows[self.count] = row
            if self.keep_results:
                self.results[result.frame.index] = result
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float, failed: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0 or failed():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def since(self, start: int) -> Measured:
        with self._cond:
            a = self._rows[start : self.count].copy()
        return Measured(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6].astype(int), a[:, 7].astype(int),
                        a[:, 8:12])


@dataclass
class Measured:
    """Per-frame figures of one measured stretch (instants in `time.perf_counter()` seconds)."""

    latency_ms: np.ndarray  # capture (in a benchmark: hand-over) → boxes in the main process
    t_capture: np.ndarray
    t_handed: np.ndarray
    t_start: np.ndarray  # the engine took it
    t_done: np.ndarray  # the engine had its boxes
    t_received: np.ndarray  # the main process had its boxes
    stream: np.ndarray
    skipped: np.ndarray
    stages: np.ndarray  # (n, 4) ms: handover, preprocess, inference, postprocess

    @property
    def frames(self) -> int:
        return len(self.latency_ms)

    @classmethod
    def joined(cls, parts: list[Measured]) -> Measured:
        """Segments measured apart (with other work in between) as one stretch: each segment's
        instants shifted to begin where the previous one ended, so wall time, FPS and windows
        count the segments' own time and none of the time between them."""
        parts = [p for p in parts if p.frames]
        if not parts:
            return cls(*(np.zeros(0) for _ in range(6)), np.zeros(0, int), np.zeros(0, int), np.zeros((0, len(STAGES))))
        shifted, end = [], None
        for part in parts:
            offset = 0.0 if end is None else end - float(part.t_handed.min())
            shifted.append([part.t_capture + offset, part.t_handed + offset, part.t_start + offset,
                            part.t_done + offset, part.t_received + offset])
            end = float(part.t_received.max()) + offset
        times = [np.concatenate(column) for column in zip(*shifted, strict=True)]
        return cls(np.concatenate([p.latency_ms for p in parts]), *times, np.concatenate([p.stream for p in parts]),
                   np.concatenate([p.skipped for p in parts]), np.concatenate([p.stages for p in parts]))

    @property
    def wall_s(self) -> float:
        """From the first hand-over to the last boxes."""
        return float(self.t_received.max() - self.t_handed.min()) if self.frames else 0.0

    @property
    def fps(self) -> float | None:
        if not self.frames:
            return None
        return throughput_fps(self.frames, float(self.t_handed.min()), float(self.t_received.max()))

    @property
    def capacity_fps(self) -> float | None:
        return capacity_fps(self.t_handed, self.t_received) if self.frames else None

    def stage_percentiles(self, q: float) -> dict[str, float | None]:
        """Each stage's q-th percentile over the frames (ms): which stage makes the tail."""
        if not self.frames:
            return dict.fromkeys(STAGES)
        values = np.percentile(self.stages, q, axis=0)
        return {name: float(v) for name, v in zip(STAGES, values, strict=True)}

    def stage_means(self) -> dict[str, float]:
        means = self.stages.mean(axis=0) if self.frames else np.zeros(len(STAGES))
        return {name: float(v) for name, v in zip(STAGES, means, strict=True)}

    def handover_legs(self) -> dict[str, float | None]:
        """The hand-over's two directions (mean ms per frame): `to_engine`, from the hand-over
        to the engine taking the frame (with frames in flight, including its wait for the
        engine), and `to_main`, from the engine's boxes to the main process holding them; with
        each one's P99 and how many frames it took over 1 ms (which direction makes a tail)."""
        if not self.frames:
            return {"to_engine": None, "to_main": None}
        legs = {"to_engine": (self.t_start - self.t_handed) * 1e3, "to_main": (self.t_received - self.t_done) * 1e3}
        out: dict[str, float | None] = {name: float(ms.mean()) for name, ms in legs.items()}
        for name, ms in legs.items():
            out[f"{name}_p99"] = float(np.percentile(ms, 99))
            out[f"{name}_over_1ms"] = int((ms > 1.0).sum())
        return out


@dataclass
class Stability:
    """perf_analyzer's rule over windows of the run: the last three windows' throughput and mean
    latency agree within 10%."""

    stable: bool
    windows: list[dict] = field(default_factory=list)
    spread_pct: float | None = None  # largest relative spread of the last three windows

    def as_dict(self) -> dict:
        return {"stable": self.stable, "spread_pct": self.spread_pct, "windows": self.windows,
                "rule": f"last {STABLE_WINDOWS} windows' FPS and mean latency within {STABLE_WITHIN:.0%}"}


def windows(measured: Measured, window_s: float) -> list[dict]:
    """The run cut into consecutive windows of `window_s` seconds (by the boxes' arrival)."""
    if not measured.frames:
        return []
    t0 = measured.t_handed.min()
    edges = np.arange(t0, measured.t_received.max() + window_s, window_s)
    out = []
    for a, b in itertools.pairwise(edges):
        inside = (measured.t_received >= a) & (measured.t_received < b)
        n = int(inside.sum())
        if n:
            out.append({"t_s": round(float(a - t0), 3), "frames": n, "fps": throughput_fps(n, float(a), float(b)),
                        "mean_ms": float(measured.latency_ms[inside].mean())})
    # The last window is usually partial: its FPS would read low.
    return out[:-1] if len(out) > 1 else out


def stability(measured: Measured, window_s: float) -> Stability:
    wins = windows(measured, window_s)
    if len(wins) < STABLE_WINDOWS:
        return Stability(False, wins, None)
    last = wins[-STABLE_WINDOWS:]
    spread = 0.0
    for key in ("fps", "mean_ms"):
        values = [w[key] for w in last]
        spread = max(spread, (max(values) - min(values)) / max(min(values), 1e-9))
    return Stability(bool(spread <= STABLE_WITHIN), wins, float(100.0 * spread))


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space (n up to millions)."""
    if k < 0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                          + (n - i) * log_q)
    return min(total, 1.0)


def early_stopping_estimate(latency_ms: np.ndarray, percentile: float = 0.90,
                            confidence: float = EARLY_STOPPING_CONFIDENCE) -> dict | None:
    """MLPerf loadgen's early-stopping estimate of a latency percentile (SingleStream).

    With n frames, the number of frames slower than the true percentile is Binomial(n, 1-p).
    The estimate discards the t slowest frames, t the largest count that such a binomial reaches
    or falls below with probability at most 1 - confidence, and reports the slowest frame left:
    with `confidence`, the true percentile is no higher. None under 64 frames (loadgen's minimum).
    """
    n = len(latency_ms)
    if n < EARLY_STOPPING_MIN_QUERIES:
        return None
    q = 1.0 - percentile
    mean = n * q
    t = max(int(mean - 6 * math.sqrt(mean * percentile)) - 1, -1)  # well below the answer
    while _binomial_cdf(t + 1, n, q) <= 1.0 - confidence:
        t += 1
    if t < 0:
        return {"percentile": percentile, "estimate_ms": None, "discarded": 0,
                "why": "too few frames for this confidence"}
    ordered = np.sort(latency_ms)
    return {"percentile": percentile, "confidence": confidence, "discarded": t,
            "estimate_ms": float(ordered[n - 1 - t])}


@dataclass
class EngineUnderTest:
    """One engine alone in its own process, with every frame of a pool preloaded in its ring."""

    runner: EngineRunner
    collector: Collector
    pool: list[np.ndarray]
    spawn: Callable[[], EngineRunner] | None = None  # a new runner of the same engine (`restart`)

    @classmethod
    def start(cls, candidates: list[str], model: ModelRef, settings, options: RunnerOptions,
              pool: list[np.ndarray]) -> EngineUnderTest:
        """`candidates`: the engine, or for `optimized` the engines to try in order (the runner
        falls back to the next one that loads, with a notice, as the live view does)."""
        collector = Collector()

        def spawn() -> EngineRunner:
            runner = EngineRunner(list(candidates), model, settings, options, role=registry.role(candidates[0]),
                                  on_result=collector)
            runner.start(0, preload=pool)
            return runner

        return cls(spawn(), collector, pool, spawn)

    def restart(self) -> None:
        """The same engine in a fresh process (its results go on into the same collector): the
        old process ends, and its memory is freed, before the new one starts."""
        self.runner.stop()
        self.runner = self.spawn()
        self.require_loaded()

    def require_loaded(self) -> None:
        if not self.runner.wait_loaded():
            raise UserError(f"engine: {self.runner.name}: {self.runner.metrics.error or 'did not load'}")

    def feed(self, first_index: int, count: int | None = None) -> PoolFeed:
        return PoolFeed(self.pool, first_index, count, preloaded=True)

    def play(self, feed, watch: Callable[[float], None] | None = None, every_s: float = 0.25) -> None:
        """Run `feed` through the engine; return once every frame it handed over is answered (a
        UserError when the engine fails meanwhile). `watch(elapsed_s)` is called every `every_s`
        from this thread meanwhile (progress, stopping rules), never from the hand-over's."""
        runner = self.runner
        t0 = time.perf_counter()
        runner.follow(feed, ends_run=False)
        while not runner.fed.wait(every_s):
            if runner.metrics.state not in (EngineState.RUNNING, EngineState.OFF):
                break
            if watch is not None:
                watch(time.perf_counter() - t0)
        if not runner.fed.is_set():
            raise UserError(f"engine: {runner.name}: {runner.metrics.error or 'stopped answering'}")

    @property
    def failed(self) -> bool:
        return self.runner.metrics.state == EngineState.FAILED

    @property
    def memory(self) -> GpuMemory:
        return self.runner.metrics.memory

    def stop(self) -> None:
        self.runner.stop()
