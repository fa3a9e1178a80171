"""The field's benchmark scenarios (after MLPerf Inference and Triton's perf_analyzer):

- **single-stream** (latency): frame N+1 is handed over when frame N's boxes are back in the
  main process. Latency = hand-over → boxes in the main process; VALID needs ≥ 1,024 frames over
  at least the minimum duration (MLPerf's rules, shortened); stable when the last three windows'
  FPS and mean latency agree within 10% (perf_analyzer's rule). Because the next frame is handed
  over the instant the last boxes arrive, FPS × mean latency = 1, which the report checks.
- **offline** (throughput): every frame is available up front; frames/s and batch latency
  per micro-batch size.
- **multi-stream** (capacity): N cameras, each delivering a frame every 1/fps seconds on a fixed
  schedule; the largest N the engine serves with P99 (from the scheduled arrival) within one
  frame period and at most 0.1% of frames dropped.

Each engine runs alone in its own process through `rtmon.runner`, on frames decoded before any
timing starts, handed over by a feed (`rtmon.bench.harness.PoolFeed`, or `CameraFeed` here).
Warm-up is excluded and its length reported.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtmon import gpu
from rtmon.bench.harness import EngineUnderTest, Measured, early_stopping_estimate, stability
from rtmon.core import Frame, Handed
from rtmon.errors import UserError
from rtmon.metrics import LatencyStats, throughput_fps
from rtmon.processes import minor_faults
from rtmon.runner import RunnerOptions

MIN_QUERIES = 1024  # MLPerf SingleStream's minimum query count
STRICT_MIN_DURATION_S = 60.0
OFFLINE_BATCH_DELAY_MS = 50.0  # frames are all there: a batch fills long before this
MAX_DROP_PCT = 0.1
FPS_LATENCY_WITHIN = 0.03  # single-stream: FPS × mean latency within 3% of 1
STORED_LATENCIES = 20_000  # per-frame latencies kept in bench.json, at most (a null engine does 300,000)

Progress = Callable[[str, float, float], None]  # (what, done, total)


def _engine_facts(eut: EngineUnderTest) -> dict:
    r = eut.runner
    return {
        "name": r.name, "role": r.role.value, "backend": r.info.backend, "precision": r.info.precision,
        "device": r.info.device, "notes": list(r.info.notes) + ([r.notice] if r.notice else []), "load_s": r.load_s,
        "lanes": r.lanes, "max_batch": r.engine_max_batch,
    }


def _optimizations(eut: EngineUnderTest, pipelined: bool, batch: int) -> list[str]:
    """What the engine used in this scenario, for the optimization ladder."""
    backend = eut.runner.info.backend.lower()
    used = []
    if "graph" in backend or "graph" in eut.runner.name:
        used.append("CUDA graph")
    if "inductor" in backend or "compile" in backend:
        used.append("Inductor kernels")
    if "gpu nms" in backend:
        used.append("GPU NMS")
    if eut.runner.info.precision == "fp16":
        used.append("FP16")
    if eut.runner.info.precision == "int8":
        used.append("INT8")
    if pipelined and eut.runner.lanes > 1:
        used.append(f"pipelining ({eut.runner.lanes} in flight)")
    if batch > 1:
        used.append(f"micro-batch {batch}")
    return used


def _closed_loop(eut: EngineUnderTest, first_index: int, count: int | None = None,
                 done: Callable[[int, float], bool] | None = None, progress: Progress | None = None,
                 total: float = 0) -> None:
    """Frames one at a time, each handed over the instant the previous one's boxes are back (the
    runner's depth is 1), until `count` frames or `done(frames answered, elapsed_s)`."""
    feed = eut.feed(first_index, count)
    start = eut.collector.count

    def watch(elapsed: float) -> None:
        n = eut.collector.count - start
        if done is not None and done(n, elapsed):
            feed.stop()
        if progress:
            progress(eut.runner.name, n, total or count or 0)

    eut.play(feed, watch)


def single_stream(eut: EngineUnderTest, frames: int, warmup: int, min_duration: float, max_duration: float,
                  window_s: float, timing_probe: int, progress: Progress | None = None, rounds: int = 1,
                  between: Callable[[int], None] | None = None, segment_warmup: int = 0,
                  undecided: Callable[[list[Measured], list[int]], bool] | None = None, processes: int = 1,
                  renew: Callable[[], None] | None = None) -> dict:
    """The single-stream scenario for one loaded engine; the engine's entry of bench.json.

    With `between` (the plain-script reference: its next segment, given how many it ran), the run
    is rounds — a reference segment, then an engine segment — in `processes` pairs of processes,
    each closed by one more reference segment; before each pair after the first, the engine
    restarts in a fresh process (warmed up again) and `renew()` gives the reference one too (a
    process's own speed varies with where its memory landed: `rtmon.bench.yardstick`). `rounds`
    engine segments at least, split evenly between the pairs, each with an equal share of the
    frames and of the minimum duration: a shared machine changes speed within seconds (H200,
    2026-12-02: the script's segments ranged over 44%), so segments are short and many. While the
    joined segments are not yet stable, or `undecided(segments, the pair of each)` says the check
    cannot tell yet, another pair follows, up to `max_duration` of the engine's time. Each segment
    begins with `segment_warmup` untimed frames, as the script's do: a side's first frames after
    idling through the other's segment run cold (H200, 2026-12-04: +2.4 ms, then +1.4 ms)."""
    eut.require_loaded()
    alone = between is None  # no reference: one segment, until stable or `max_duration`
    pairs, per_pair = (1, 1) if alone else (max(1, processes), math.ceil(max(1, rounds) / max(1, processes)))
    t_warm = time.perf_counter()
    if warmup:
        _closed_loop(eut, -warmup, warmup)
    warmup_s = time.perf_counter() - t_warm
    parts: list[Measured] = []
    tags, faults = [], []  # each part's pair of processes, and its minor page faults per frame
    answered = asked = 0
    want, least = math.ceil(frames / (per_pair * pairs)), min_duration / (per_pair * pairs)
    pair = 0
    while True:
        if pair:  # a fresh pair of processes: the engine's, warmed up as the first was, then the script's
            if progress:
                progress(f"{eut.runner.name}: a fresh process (pair {pair + 1})", answered, frames)
            eut.restart()
            if warmup:
                _closed_loop(eut, -warmup, warmup)
            if renew is not None:
                renew()
        for _ in range(per_pair):
            if between is not None:
                between(asked)
                asked += 1
            before = minor_faults(eut.runner.pid)
            if between is not None and segment_warmup:  # the engine idled through the script's segment
                _closed_loop(eut, -segment_warmup, segment_warmup)
            start = eut.collector.count

            def done(n: int, elapsed: float, start=start) -> bool:
                if n < want or elapsed < least:
                    return False
                if not alone:
                    return True  # one round; stability is judged between pairs
                return elapsed >= max_duration or stability(eut.collector.since(start), window_s).stable

            def counted(what: str, n: float, total: float, before=answered) -> None:
                if progress:
                    progress(what, before + n, frames)

            _closed_loop(eut, answered, None, done, counted, frames)
            parts.append(eut.collector.since(start))
            tags.append(pair)
            after = minor_faults(eut.runner.pid)
            calls = parts[-1].frames + (segment_warmup if between is not None else 0)
            faults.append((after - before) / calls if before is not None and after is not None and calls else None)
            answered += parts[-1].frames
        if between is not None:
            between(asked)  # the pair's closing reference segment
            asked += 1
        pair += 1
        if alone or (pair >= pairs and (sum(p.wall_s for p in parts) >= max_duration or (  # the pairs asked for, then
                stability(Measured.joined(parts), window_s).stable and not (undecided and undecided(parts, tags))))):
            break
    measured = Measured.joined(parts)
    warmed = {"frames": warmup, "s": warmup_s, "per_segment": segment_warmup if between is not None else 0}
    entry = {**_engine_facts(eut), **latency_entry(measured, window_s), "warmup": warmed,
             "optimizations": _optimizations(eut, False, 1), "mode": "single", "batch": 1}
    if len(parts) > 1:
        entry["segments"] = [{"frames": p.frames, "fps": p.fps, "p50_ms": float(np.percentile(p.latency_ms, 50)),
                              "process": tag, "faults_per_frame": f}
                             for p, tag, f in zip(parts, tags, faults, strict=True) if p.frames]
        entry["processes"] = pair
    known = [(f, part.frames) for f, part in zip(faults, parts, strict=True) if f is not None and part.frames]
    entry["faults_per_frame"] = sum(f * n for f, n in known) / sum(n for _, n in known) if known else None
    entry["validity"] = _validity(measured, min_duration)
    entry["valid"] = not entry["validity"]
    entry["fps_x_latency"] = fps_times_latency(entry)
    entry["gpu_mem"] = eut.memory.as_dict()
    entry["timing_cost"] = _timing_cost(eut, measured, timing_probe) if timing_probe else None
    return entry


def fps_times_latency(entry: dict) -> dict:
    """FPS × mean latency, which is 1 when the single-stream stopwatch loses no time between
    frames; `ok` when within 3%."""
    lat = entry.get("latency_ms") or {}
    if not entry.get("fps") or lat.get("mean") is None:
        return {"value": None, "ok": False}
    value = entry["fps"] * lat["mean"] / 1e3
    return {"value": float(value), "ok": bool(abs(value - 1.0) <= FPS_LATENCY_WITHIN)}


def latency_entry(measured: Measured, window_s: float) -> dict:
    lat = LatencyStats.of(measured.latency_ms)
    stab = stability(measured, window_s)
    return {
        "frames": measured.frames,
        "wall_s": measured.wall_s,
        "fps": measured.fps,
        "latency_ms": None if lat is None else lat.as_dict(),
        "early_stopping_p90": early_stopping_estimate(measured.latency_ms, 0.90),
        "stages_ms": measured.stage_means(),
        "handover_legs_ms": measured.handover_legs(),
        "stages_p99_ms": measured.stage_percentiles(99),
        "stability": stab.as_dict(),
        "stable": stab.stable,
        **stored_latencies(measured.latency_ms),
    }


def stored_latencies(latency_ms: np.ndarray) -> dict:
    """Per-frame latencies for bench.json (the CDF plot, a reader's own analysis): all of them up
    to STORED_LATENCIES, else every k-th frame, in order, with k said (`latencies_every`). The
    report's percentiles are always computed over every frame."""
    every = max(1, math.ceil(len(latency_ms) / STORED_LATENCIES))
    return {"latencies_ms": latency_ms[::every].round(4).tolist(), "latencies_every": every}


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
        _closed_loop(eut, 10_000_000, frames)
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
    eut.require_loaded()
    runner = eut.runner
    sweep = []
    index = 0
    for batch in batches:
        if batch > runner.engine_max_batch:
            sweep.append({"batch": batch, "fps": None, "latency_ms": None,
                          "note": f"the engine takes at most {runner.engine_max_batch} frame(s) at once"})
            continue
        runner.control(max_batch=batch)
        eut.play(eut.feed(index, warmup_batches * batch * max(runner.lanes, 1)))
        index += warmup_batches * batch * max(runner.lanes, 1)
        start = eut.collector.count
        count = max(frames, batch * 16)

        def watch(_elapsed: float, start=start, count=count, batch=batch) -> None:
            if progress:
                progress(f"{runner.name} batch {batch}", eut.collector.count - start, count)

        eut.play(eut.feed(index, count), watch)
        index += count
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
            "latency_note": "batch latency: from the micro-batch's engine start to its boxes in the main process"}


def _batch_latencies(measured: Measured) -> LatencyStats | None:
    """One latency per micro-batch: from the engine taking it to its boxes in the main process."""
    if not measured.frames:
        return None
    starts = np.unique(measured.t_start)
    ends = np.array([measured.t_received[measured.t_start == s].max() for s in starts])
    return LatencyStats.of((ends - starts) * 1e3)


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
    gpu_busy_pct: float | None = None  # NVML: share of the trial a kernel was running
    handover_ms: float | None = None  # mean per frame (waiting for the engine included)
    engine_ms: float | None = None  # mean per micro-batch in the engine's process

    def as_dict(self) -> dict:
        return {"streams": self.streams, "p99_ms": self.p99_ms, "drop_pct": self.drop_pct, "delivered": self.delivered,
                "dropped": self.dropped, "fps": self.fps, "passed": self.passed, "gpu_busy_pct": self.gpu_busy_pct,
                "handover_ms": self.handover_ms, "engine_ms": self.engine_ms}


class CameraFeed:
    """`streams` cameras, each delivering frame k at t0 + (k + s/streams) / fps (phases spread
    over one period: real cameras are not in phase), for `frames` frames each. The runner takes
    each camera's newest frame that is due; older due frames it never took are dropped."""

    def __init__(self, pool: list[np.ndarray], streams: int, camera_fps: float, frames: int, t0: float) -> None:
        self.pool, self.streams, self.frames, self.t0 = pool, streams, frames, t0
        self.period = 1.0 / camera_fps
        self.phase = np.arange(streams) / streams * self.period
        self.next_k = np.zeros(streams, np.int64)  # per camera: the oldest frame neither taken nor dropped
        self._stop = threading.Event()

    def _due(self, now: float) -> np.ndarray:
        """Per camera, the newest frame due by `now` (-1: none yet)."""
        k = np.floor((now - self.t0 - self.phase) / self.period).astype(np.int64)
        return np.minimum(k, self.frames - 1)

    def take(self, room: int, now: float) -> list[Handed] | None:
        due = self._due(now)
        ready = np.flatnonzero(due >= self.next_k)
        if not len(ready):
            return None if (self.next_k >= self.frames).all() else []
        arrival = self.t0 + self.phase[ready] + due[ready] * self.period
        ready = ready[np.argsort(arrival, kind="stable")][:room]
        out = []
        for s in ready.tolist():
            k = int(due[s])
            slot = (s * 7919 + k) % len(self.pool)
            out.append(Handed(Frame(k, self.pool[slot], self.t0 + self.phase[s] + k * self.period, s),
                              k - int(self.next_k[s]), slot))
            self.next_k[s] = k + 1
        return out

    def wait(self, timeout: float) -> None:
        """Until the next frame of any camera is due."""
        pending = self.next_k < self.frames
        if not pending.any():
            self._stop.wait(timeout)
            return
        now = time.perf_counter()
        upcoming = np.maximum(self.next_k, self._due(now) + 1)[pending]
        t_next = float((self.t0 + self.phase[pending] + upcoming * self.period).min())
        self._stop.wait(min(max(t_next - now, 0.0), timeout))

    def forget(self) -> None:
        """Never turned off."""


def capacity_trial(eut: EngineUnderTest, streams: int, camera_fps: float, seconds: float, warmup_s: float) -> Trial:
    """N cameras on the engine for `seconds` (after `warmup_s`): P99 from the scheduled arrival
    and the share of frames dropped (a camera's frame never taken before its next one came)."""
    start_count = eut.collector.count
    t0 = time.perf_counter() + 0.05
    feed = CameraFeed(eut.pool, streams, camera_fps, int((warmup_s + seconds) * camera_fps), t0)
    utilization: list[float] = []

    def watch(elapsed: float) -> None:
        if elapsed > warmup_s:
            sample = gpu.sample()
            if sample is not None and sample.utilization_pct is not None:
                utilization.append(sample.utilization_pct)

    eut.play(feed, watch, every_s=0.5)
    measured = eut.collector.since(start_count)
    keep = measured.t_capture >= t0 + warmup_s  # frames scheduled after the warm-up
    lat = measured.latency_ms[keep]
    delivered = int(keep.sum())
    dropped = int(measured.skipped[keep].sum())
    scheduled = delivered + dropped
    drop_pct = 100.0 * dropped / scheduled if scheduled else 100.0
    p99 = float(np.percentile(lat, 99)) if len(lat) else None
    fps = throughput_fps(delivered, 0.0, seconds)
    passed = p99 is not None and p99 <= 1000.0 / camera_fps and drop_pct <= MAX_DROP_PCT
    engine_s = np.unique(np.stack([measured.t_start[keep], measured.t_done[keep]], axis=1), axis=0) if delivered else None
    return Trial(streams, p99, drop_pct, delivered, dropped, fps, passed,
                 float(np.mean(utilization)) if utilization else None,
                 float(measured.stages[keep, 0].mean()) if delivered else None,
                 float((engine_s[:, 1] - engine_s[:, 0]).mean() * 1e3) if engine_s is not None else None)


def capacity_search(eut: EngineUnderTest, camera_fps: float, seconds: float, warmup_s: float, max_streams: int,
                    progress: Progress | None = None) -> dict:
    """The largest number of cameras that passes: double until a trial fails, then bisect."""
    eut.require_loaded()
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
            "optimizations": _optimizations(eut, True, eut.runner.engine_max_batch),
            "limit_reached": bad is None and good >= max_streams}


def options_for(settings, scenario: str, max_batch: int = 1, sizes: tuple[int, ...] | None = None) -> RunnerOptions:
    """How each scenario drives an engine."""
    if scenario == "single-stream":
        return RunnerOptions.of(settings, depth=1, pipelined=False, max_batch=1, max_delay_ms=0.0)
    if scenario == "offline":
        return RunnerOptions.of(settings, pipelined=True, max_batch=max_batch, sizes=sizes,
                                max_delay_ms=OFFLINE_BATCH_DELAY_MS, queued_batches=1)
    return RunnerOptions.of(settings, pipelined=True, max_batch=max_batch, queued_batches=1)
