"""What every benchmark scenario shares: decoded frames preloaded into an engine runner's ring,
the results collected as arrays, measurement windows and their stability, MLPerf's early-stopping
percentile estimate, and a report's header.

Engines are driven by the same `EngineRunner` as the live view, each alone in its own process;
frames are decoded once, before anything is timed, and preloaded into the runner's shared-memory
ring, so handing a frame over costs a small message and no copy.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from rtmon import engines as registry
from rtmon.core import Frame, GpuMemory, Result
from rtmon.models import ModelRef
from rtmon.runner import EngineRunner, RunnerOptions
from rtmon.sources import SourceSpec, read_frames

STABLE_WITHIN = 0.10  # perf_analyzer's rule: three consecutive windows within 10%
STABLE_WINDOWS = 3
EARLY_STOPPING_CONFIDENCE = 0.99  # MLPerf loadgen's
EARLY_STOPPING_MIN_QUERIES = 64


def decode_pool(specs: list[SourceSpec], count: int) -> list[np.ndarray]:
    """`count` distinct decoded frames, taken in turn from each source (wrapping around a short
    file). Benchmarks cycle through this pool (MLPerf's "performance sample count")."""
    per_source = max(count // len(specs), 1)
    pool: list[np.ndarray] = []
    for spec in specs:
        pool.extend(read_frames(spec, per_source))
    return pool


class Collector:
    """Every result of a runner, as arrays; `wait_for(n)` blocks until n results came back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.latency_ms: list[float] = []
        self.t_start: list[float] = []
        self.t_done: list[float] = []
        self.stream: list[int] = []
        self.index: list[int] = []
        self.skipped: list[int] = []
        self.stages: list[tuple[float, float, float]] = []
        self.detections: list[int] = []
        self.results: dict[int, Result] = {}
        self.keep_results = False

    def __call__(self, result: Result, skipped: int) -> None:
        with self._cond:
            self.latency_ms.append(result.latency_ms)
            self.t_start.append(result.t_start if result.t_start is not None else result.t_done)
            self.t_done.append(result.t_done)
            self.stream.append(result.frame.stream)
            self.index.append(result.frame.index)
            self.skipped.append(skipped)
            s = result.stages
            self.stages.append((s.preprocess, s.inference, s.postprocess))
            self.detections.append(len(result.detections))
            if self.keep_results:
                self.results[result.frame.index] = result
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float, failed=lambda: False) -> bool:
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
            sl = slice(start, self.count)
            return Measured(
                np.asarray(self.latency_ms[sl]), np.asarray(self.t_start[sl]), np.asarray(self.t_done[sl]),
                np.asarray(self.stream[sl], dtype=int), np.asarray(self.skipped[sl], dtype=int),
                np.asarray(self.stages[sl]).reshape(-1, 3),
            )


@dataclass
class Measured:
    """Per-frame figures of one measured stretch."""

    latency_ms: np.ndarray
    t_start: np.ndarray
    t_done: np.ndarray
    stream: np.ndarray
    skipped: np.ndarray
    stages: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.latency_ms)

    @property
    def wall_s(self) -> float:
        return float(self.t_done.max() - self.t_start.min()) if self.frames else 0.0

    @property
    def fps(self) -> float | None:
        return self.frames / self.wall_s if self.wall_s > 0 else None

    def stage_means(self) -> dict[str, float]:
        if not self.frames:
            return {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        pre, inf, post = self.stages.mean(axis=0)
        return {"preprocess": float(pre), "inference": float(inf), "postprocess": float(post)}


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
    """The run cut into consecutive windows of `window_s` seconds (by completion time)."""
    if not measured.frames:
        return []
    t0 = measured.t_start.min()
    edges = np.arange(t0, measured.t_done.max() + window_s, window_s)
    out = []
    for a, b in itertools.pairwise(edges):
        inside = (measured.t_done >= a) & (measured.t_done < b)
        n = int(inside.sum())
        if n:
            out.append({"t_s": round(float(a - t0), 3), "frames": n, "fps": n / window_s,
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
    return Stability(spread <= STABLE_WITHIN, wins, 100.0 * spread)


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

    @classmethod
    def start(cls, name: str, model: ModelRef, settings, options: RunnerOptions, pool: list[np.ndarray]) -> EngineUnderTest:
        collector = Collector()
        runner = EngineRunner([name], model, settings, options, role=registry.role(name), on_result=collector)
        runner.start(0, preload=pool)
        return cls(runner, collector, pool)

    def hand_over(self, n: int, index: int, t_capture: float | None = None, stream: int = 0) -> bool:
        """Send pool frame `n % len(pool)` as frame `index`, stamped captured now (or at
        `t_capture`); waits for room first."""
        while not self.runner.wait_room(1.0):
            if not self.runner.accepting and self.runner.metrics.state.value != "loading":
                return False
        slot = n % len(self.pool)
        frame = Frame(index, self.pool[slot], time.perf_counter() if t_capture is None else t_capture, stream)
        return self.runner.send(frame, slot=slot)

    @property
    def failed(self) -> bool:
        return self.runner.metrics.state.value == "failed"

    @property
    def memory(self) -> GpuMemory:
        return self.runner.metrics.memory

    def stop(self) -> None:
        self.runner.stop()
