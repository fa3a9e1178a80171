#!/usr/bin/env python3
"""How should the main process wait for an engine's answer? Measure the ways, on this machine.

    python scripts/handover_probe.py [--seconds 6] [--out probe.json]

The hand-over (main → engine process → main) is rtmon's own cost on every frame. Its way back
depends on how the main process waits: asleep in the semaphore (a kernel wake-up when the answer
comes: 0.1-0.3 ms on a virtual machine), or awake around the instant the answer is due. This
script drives rtmon's own runner (`rtmon.runner.EngineRunner`, closed loop, as `rtmon bench
--scenario single-stream` does) with an engine that holds its CPU busy for a baseline-like time
per frame (6 ms + a gamma-distributed rest, mean 8 ms, P95 about 11 ms, the same sequence every
run, streaming through 64 MiB meanwhile as a network does), one that sleeps those times instead,
and one that answers at once, once per way of waiting:

- `asleep`: no receive spin (`engine.receive_spin_us = 0`);
- `sleep0`: rtmon's window, `time.sleep(0)` between tries (the GIL goes to other threads for
  the timer slack, 50 µs by default);
- `sleep0-slack1`: the same with the receiving thread's timer slack at 1 ns (`PR_SET_TIMERSLACK`);
- `sched_yield`: `os.sched_yield()` between tries (drops the GIL for a microsecond);
- `busy`: nothing between tries (the GIL is dropped only when another thread asks for it);
- `spin-all`: `sched_yield` between tries, and awake for the whole wait, not only its window.

It also times the main process's turnaround: from a frame's hand-over instant (in a closed loop,
the instant the last answer arrived) to its request record being written, the main process's
share of the way to the engine. Beside each it runs a neighbour thread in the main process that waits 2 ms at a time, as the feed
or the UI would, and reports how late its wake-ups were (the GIL the waiting costs others), and
the main process's CPU share (what the waiting costs the machine).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import SyncEngine

ENGINES = ("busy-8ms", "sleep-8ms", "instant")
WAYS = ("asleep", "sleep0", "sleep0-slack1", "sched_yield", "busy", "spin-all")


class BusyEngine(SyncEngine):
    """Holds its CPU for a fixed sequence of baseline-like times (or none), answers one box."""

    def __init__(self, name: str, model, settings) -> None:
        self.info = EngineInfo(name, "probe", "n/a", "cpu", 640)
        self.class_names = {0: "thing"}
        rng = np.random.default_rng(7)
        self.delays = (6e-3 + rng.gamma(2.0, 1e-3, 4096)) if name.endswith("-8ms") else np.zeros(1)
        self.asleep = name.startswith("sleep")
        self.memory = np.zeros((64, 1 << 18), np.float32)  # 64 MiB, streamed through as a network's tensors are

    def load(self) -> None:
        """Nothing to load."""

    def infer(self, frame: Frame) -> Result:
        end, i = time.perf_counter() + self.delays[frame.index % len(self.delays)], 0
        if self.asleep:
            time.sleep(max(end - time.perf_counter(), 0.0))
        while time.perf_counter() < end:  # the CPU busy and the shared cache churned, as predict does
            self.memory[i % len(self.memory)] += 1.0
            i += 1
        det = Detections(np.array([[1.0, 2, 3, 4]]), np.array([0.9]), np.array([0]))
        return Result(self.info.name, frame, det, StageTimes(), time.perf_counter())



def make(name: str, model, settings) -> BusyEngine:
    return BusyEngine(name, model, settings)


_TURNAROUND: list[float] = []  # main process: a frame's hand-over instant → its request record written


def _watch_turnaround() -> None:
    from rtmon.runner import mailbox

    put_frame = mailbox.Mailbox.__dict__.get("_put_frame_original") or mailbox.Mailbox.put_frame
    mailbox.Mailbox._put_frame_original = put_frame

    def _put_frame(self, ticket, slot, shape, index, stream, t_capture, t_handed):
        _TURNAROUND.append((time.perf_counter() - t_handed) * 1e3)
        return put_frame(self, ticket, slot, shape, index, stream, t_capture, t_handed)

    mailbox.Mailbox.put_frame = _put_frame


def _set_way(way: str) -> None:
    from rtmon.runner import mailbox, supervisor

    libc = ctypes.CDLL(None)
    yields = {"sleep0": lambda: time.sleep(0), "sleep0-slack1": lambda: time.sleep(0), "sched_yield": os.sched_yield,
              "busy": lambda: None, "asleep": lambda: time.sleep(0), "spin-all": os.sched_yield}
    mailbox.let_others_run = yields[way]
    window = supervisor.EngineRunner.__dict__.get("_receive_spin_original") or supervisor.EngineRunner._receive_spin
    supervisor.EngineRunner._receive_spin_original = window
    supervisor.EngineRunner._receive_spin = (lambda self, spin: (_CHECK_S, time.perf_counter())) if way == "spin-all" else window
    receive = supervisor.EngineRunner.__dict__.get("_receive_original") or supervisor.EngineRunner._receive
    supervisor.EngineRunner._receive_original = receive
    slack = 1 if way == "sleep0-slack1" else 50_000

    def _receive(self):
        libc.prctl(29, slack, 0, 0, 0)  # PR_SET_TIMERSLACK, this thread only
        return receive(self)

    supervisor.EngineRunner._receive = _receive


_CHECK_S = 0.05


def _neighbour(stop: threading.Event, late: list[float], every_s: float = 0.002) -> None:
    tick = threading.Event()
    while not stop.is_set():
        t = time.perf_counter()
        tick.wait(every_s)
        late.append((time.perf_counter() - t - every_s) * 1e3)


def run_one(engine: str, way: str, seconds: float) -> dict:
    from rtmon.config import load_settings
    from rtmon.models import ModelRef
    from rtmon.runner import EngineRunner, PoolFeed, RunnerOptions

    _set_way(way)
    _watch_turnaround()
    settings = load_settings(None, {})
    receive_spin = 0.0 if way == "asleep" else settings.engine.receive_spin_us
    options = RunnerOptions.of(settings, factory=make, pipelined=False, depth=1, receive_spin_us=receive_spin)
    results: list[Result] = []
    model = ModelRef(Path("probe.pt"), "probe", "user", "0" * 64, {0: "thing"})
    runner = EngineRunner([engine], model, settings, options, on_result=lambda r, skipped: results.append(r))
    pool = [np.zeros((720, 1280, 3), np.uint8) for _ in range(4)]
    runner.start(0, preload=pool)
    stop, late = threading.Event(), []
    try:
        if not runner.wait_loaded(60):
            raise SystemExit(f"error: probe engine did not load: {runner.metrics.error}")
        feed = PoolFeed(pool, 0, None, preloaded=True)
        neighbour = threading.Thread(target=_neighbour, args=(stop, late), daemon=True)
        neighbour.start()
        runner.follow(feed, ends_run=False)
        time.sleep(1.0)  # warm-up: the window needs recent latencies
        first, cpu0, wall0 = len(results), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        late.clear()
        _TURNAROUND.clear()
        time.sleep(seconds)
        cpu1, wall1, last = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), len(results)
        feed.stop()
        runner.fed.wait(10)
    finally:
        stop.set()
        runner.stop()
    timed = results[first:last]
    to_engine = np.array([(r.t_start - r.t_handed) * 1e3 for r in timed])
    to_main = np.array([(r.t_received - r.t_done) * 1e3 for r in timed])
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)

    def summary(ms: np.ndarray) -> dict:
        return {"mean": float(ms.mean()), "p50": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
                "p99": float(np.percentile(ms, 99))}

    return {"engine": engine, "way": way, "frames": len(timed), "fps": len(timed) / (wall1 - wall0),
            "to_engine_ms": summary(to_engine), "to_main_ms": summary(to_main),
            "handover_ms_mean": float((to_engine + to_main).mean()),
            "main_turnaround_ms": summary(np.array(_TURNAROUND[1:])),
            "main_cpu_share": cpu / (wall1 - wall0),
            "neighbour_late_ms": summary(np.array(late)) if late else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per way and engine (default 6)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)}")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if bad := [w for w in ways if w not in WAYS]:
        parser.exit(2, f"error: unknown way: {', '.join(bad)} (choose from {', '.join(WAYS)})\n")
    engines = [e for e in args.engines.split(",") if e]
    if bad := [e for e in engines if e not in ENGINES]:
        parser.exit(2, f"error: unknown engine: {', '.join(bad)} (choose from {', '.join(ENGINES)})\n")
    rows = []
    for engine in engines:
        for way in ways:
            row = run_one(engine, way, args.seconds)
            rows.append(row)
            n = row["neighbour_late_ms"] or {}
            print(f"{engine:9s} {way:14s} fps {row['fps']:8.1f}  to engine {row['to_engine_ms']['mean']:.3f}/"
                  f"{row['to_engine_ms']['p50']:.3f}  back {row['to_main_ms']['mean']:.3f}/{row['to_main_ms']['p50']:.3f}/"
                  f"p90 {row['to_main_ms']['p90']:.3f}  turnaround {row['main_turnaround_ms']['mean']:.3f}  main cpu {row['main_cpu_share']:.2f}  neighbour late "
                  f"{n.get('mean', float('nan')):.3f}/p99 {n.get('p99', float('nan')):.3f} ms", flush=True)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
