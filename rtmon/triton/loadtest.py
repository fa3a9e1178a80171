"""How far does one served engine go? `rtmon serve` under N concurrent camera streams.

    rtmon loadtest --out DIR [--engine optimized] [--streams 1,2,4,8,16,32]

In one run, on one machine, every engine driven by the engine runner (`rtmon.runner`), each in
its own process:

1. **in process**: the engine without a server, one stream, as `rtmon bench` drives it (frames
   preloaded in the runner's ring, each handed over as soon as the engine has room), and its
   network alone (`rtmon.runner.NetworkRunner`, host arrays in and out) at each batch size the
   streams can form: the ceilings the server is measured against.
2. **served**: `rtmon serve` with the same engine (a real tritonserver through PyTriton) on
   loopback ports, and N streams, each a `triton` engine (rtmon's letterbox and NMS, gRPC) in its
   own engine process, with the frames in system shared memory and over the socket. Each stream
   is a closed loop, as perf_analyzer's concurrency: its next frame is handed over when the
   previous frame's boxes are back.
3. **perf_analyzer** (when it runs here) against the same server at each N: requests of zeros,
   no client pre/post-processing; the server's side of the story.

FPS is `rtmon.metrics.throughput_fps` over the measured window (the frames whose boxes came back
in it, per second); latency is hand-over → boxes in the main process, over those frames.

Writes triton.json (every figure), triton.md (the tables) and triton.png (throughput and P99
against N) into --out, together or not at all. `--url` measures a server that is already running
instead of starting one (then the in-process figures are still this machine's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from rtmon import engines as registry
from rtmon.bench.harness import Collector, EngineUnderTest, Measured
from rtmon.bench.scenarios import options_for
from rtmon.config import Settings
from rtmon.core import EngineState
from rtmon.engines.prepost import preprocess_cpu
from rtmon.engines.triton import Endpoint
from rtmon.errors import UserError
from rtmon.files import write_folder
from rtmon.formatting import fmt
from rtmon.metrics import LatencyStats, throughput_fps
from rtmon.models import ModelRef, resolve_model
from rtmon.reporting import header
from rtmon.runner import EngineRunner, NetworkRunner, PoolFeed, RunnerOptions
from rtmon.scene import SAMPLE_SEED, render_scene
from rtmon.triton import perf_analyzer
from rtmon.triton.loadtest_report import markdown, plot

FRAMES = 32  # distinct frames of the sample scene, cycled by every stream
START_LEAD_S = 0.5  # a round starts this long after it is announced, so every stream starts together
READY_TIMEOUT_S = 900  # engine load (an Inductor compile per batch size) and tritonserver start


def window_figures(measured: Measured, t_begin: float, t_end: float) -> dict:
    """The frames whose boxes came back in (t_begin, t_end]: how many, FPS, latency, stages."""
    kept = (measured.t_received > t_begin) & (measured.t_received <= t_end)
    lat = LatencyStats.of(measured.latency_ms[kept])
    stages = measured.stages[kept].mean(axis=0).tolist() if kept.any() else [None] * 4
    return {"frames": int(kept.sum()), "fps": throughput_fps(int(kept.sum()), t_begin, t_end) or 0.0,
            "latency_ms": {"mean": lat.mean if lat else None, "p50": lat.p50 if lat else None,
                           "p99": lat.p99 if lat else None},
            "stages": stages}


# --- the server ---------------------------------------------------------------------------------


class ServeProcess:
    """`python -m rtmon serve` in a child process on free loopback ports, its output collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.grpc, self.http, self.metrics = free_ports(3)
        command = [sys.executable, "-m", "rtmon", "serve", "--address", "127.0.0.1", "--grpc-port", str(self.grpc),
                   "--http-port", str(self.http), "--metrics-port", str(self.metrics), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line)
            if line.startswith("ready"):
                self._ready.set()

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                errors = [line for line in self.stderr if line.startswith("error:")] or self.stderr[-1:] or ["no output"]
                raise UserError(f"loadtest: rtmon serve did not become ready: {errors[-1].strip()}")

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# --- the served streams -------------------------------------------------------------------------


class Streams:
    """`count` camera streams against one server: each a `triton` engine in its own engine
    process, its ring preloaded with the frames; a round runs the first n of them together."""

    def __init__(self, count: int, model: ModelRef, settings: Settings, url: str, shm: str, images: list[np.ndarray]) -> None:
        triton = settings.triton.model_copy(update={"url": url, "shm": shm})
        stream_settings = settings.model_copy(update={"triton": triton})
        self.images = images
        self.collectors = [Collector() for _ in range(count)]
        options = options_for(stream_settings, "single-stream")
        self.runners = [EngineRunner(["triton"], model, stream_settings, options, on_result=c, label=f"stream {i}")
                        for i, c in enumerate(self.collectors)]
        for runner in self.runners:
            runner.start(0, preload=images)
        for runner in self.runners:
            if not runner.wait_loaded(READY_TIMEOUT_S):
                raise UserError(f"loadtest: a stream's triton engine did not start: {runner.metrics.error}")
        self.backend = self.runners[0].info.backend

    def round(self, streams: int, warmup_s: float, seconds: float) -> dict:
        """The first `streams` streams run for warmup + seconds; the figures of the last `seconds`."""
        t_start = time.perf_counter() + START_LEAD_S
        t_measure, t_end = t_start + warmup_s, t_start + warmup_s + seconds
        marks = [c.count for c in self.collectors[:streams]]
        feeds = [PoolFeed(self.images, 7 * i, preloaded=True) for i in range(streams)]  # streams start apart
        time.sleep(max(t_start - time.perf_counter(), 0.0))
        for runner, feed in zip(self.runners, feeds, strict=False):
            runner.follow(feed, ends_run=False)
        time.sleep(max(t_end - time.perf_counter(), 0.0))
        for feed in feeds:
            feed.stop()
        for runner in self.runners[:streams]:
            if not runner.fed.wait(runner.options.timeout_s + 5) or runner.metrics.state == EngineState.FAILED:
                raise UserError(f"loadtest: a stream failed: {runner.metrics.error or 'no answer'}")
        rows = [window_figures(c.since(m), t_measure, t_end) for c, m in zip(self.collectors, marks, strict=False)]
        every = [c.since(m) for c, m in zip(self.collectors, marks, strict=False)]
        joined = Measured(*(np.concatenate([getattr(m, f.name) for m in every])
                            for f in dataclasses.fields(Measured)))
        figures = window_figures(joined, t_measure, t_end)
        _handover, pre, call, post = figures.pop("stages")
        # where a client's frame goes: rtmon's letterbox, the call to the server, NMS
        return {"streams": streams, "frames": sum(r["frames"] for r in rows), "fps": figures["fps"],
                "latency_ms": figures["latency_ms"],
                "stages_ms": {"preprocess": pre, "round_trip": call, "postprocess": post}}

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()


# --- in process ---------------------------------------------------------------------------------


def measure_in_process(name: str, model: ModelRef, settings: Settings, images: list[np.ndarray], batches: list[int],
                       warmup_s: float, seconds: float) -> dict:
    """The engine without a server, one stream, driven as `rtmon bench` drives it (its own
    process, the frames preloaded in the runner's ring, each handed over as soon as the engine
    has room: one at a time, or as many as its lanes keep in flight), then its network alone
    per batch."""
    # The offline scenario's options at batch 1, but no frame queued beyond those the engine runs:
    # a frame's latency is hand-over → boxes, as the served rows', with no wait in the pipe.
    options = dataclasses.replace(options_for(settings, "offline", 1), queued_batches=0)
    eut = EngineUnderTest.start([name], model, settings, options, images)
    try:
        eut.require_loaded()
        runner = eut.runner
        start = eut.collector.count
        feed = eut.feed(0)
        t0 = time.perf_counter()
        t_measure, t_end = t0 + warmup_s, t0 + warmup_s + seconds
        eut.play(feed, lambda elapsed: feed.stop() if elapsed >= warmup_s + seconds else None, every_s=0.05)
        figures = window_figures(eut.collector.since(start), t_measure, t_end)
        figures.pop("stages")
        e2e = {"mode": "pipelined" if runner.lanes > 1 else "one at a time", "in_flight": runner.depth,
               "driver": "rtmon.runner (as rtmon bench)", **figures}
        facts = {"backend": runner.info.backend, "precision": runner.info.precision, "device": runner.info.device}
    finally:
        eut.stop()
    alone = []
    if registry.SPECS[name].servable:
        network = NetworkRunner(name, model, settings, settings.serve.max_batch, RunnerOptions.of(settings))
        try:
            network.wait_loaded()
            blobs = np.concatenate([preprocess_cpu(images[i % len(images)], settings.model.imgsz, network.input_dtype)[0]
                                    for i in range(max(batches))])
            for batch in batches:
                alone.append(_time_network(network.run, blobs[:batch], seconds=min(seconds, 2.0)))
        finally:
            network.stop()
    return {"engine": name, **facts, "stream": e2e, "network_alone": alone}


def _time_network(run, batch: np.ndarray, seconds: float) -> dict:
    run(batch)
    calls, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(calls) < 3:
        t = time.perf_counter()
        run(batch)
        calls.append((time.perf_counter() - t) * 1e3)
    return {"batch": len(batch), "fps": throughput_fps(len(batch) * len(calls), 0.0, sum(calls) / 1e3),
            "call_ms": float(np.mean(calls))}


# --- the run ------------------------------------------------------------------------------------


def run_loadtest(settings: Settings, name: str, streams: list[int], transports: list[str], out: Path, warmup_s: float,
                 seconds: float, url: str | None, use_perf_analyzer: bool, sets: list[str], echo=print) -> dict:
    """The whole measurement (see the module docstring); `sets` are passed on to `rtmon serve`."""
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UserError(f"loadtest: cannot write to {out}")
    model = resolve_model(settings.model.name, Path(settings.paths.engines_dir))
    work = Path(tempfile.mkdtemp(prefix="rtmon-loadtest-"))
    try:
        images = [image for image, _ in render_scene(SAMPLE_SEED, FRAMES * 3, stride=3)]
        batches = sorted({min(n, settings.serve.max_batch) for n in streams})
        echo(f"in process: {name}, one stream, then its network alone at batch {batches} …")
        local = measure_in_process(name, model, settings, images, batches, warmup_s, seconds)
        server = None
        if url is None:
            echo(f"starting rtmon serve --engine {name} …")
            server = ServeProcess(["--engine", name, "--model", settings.model.name, *(a for s in sets for a in ("--set", s))])
            server.wait_ready()
            url = server.url
        try:
            served, pa = _measure_served(settings, model, url, streams, transports, images, work, warmup_s, seconds,
                                         use_perf_analyzer, echo)
        finally:
            exit_code = server.stop() if server else None
        report = {
            **header(model, [], f"{FRAMES} frames of the sample scene, 1280x720"),
            "versions": {"pytriton": _version("nvidia-pytriton"), "tritonclient": _version("tritonclient")},
            "method": {
                "streams": "closed loop: each stream hands its next frame over when the previous one's boxes are back",
                "warmup_s": warmup_s, "seconds": seconds, "frames": f"{FRAMES} frames of the sample scene, 1280x720",
                "server": "rtmon serve (PyTriton) on loopback ports" if server else url,
                "max_batch": settings.serve.max_batch, "queue_delay_us": settings.serve.queue_delay_us,
                "figures": "FPS = frames whose boxes came back in the measured window / the window; latency = hand-over "
                           "→ boxes in the main process",
            },
            "in_process": local,
            "served": served,
            "perf_analyzer": pa,
            "server_exit_code": exit_code,
        }
        write_folder(out, {"triton.json": lambda path: path.write_text(json.dumps(report, indent=1)),
                           "triton.md": lambda path: path.write_text(markdown(report)),
                           "triton.png": lambda path: plot(report, path)})
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_served(settings, model, url, streams, transports, images, work, warmup_s, seconds, use_perf_analyzer, echo):
    served = {"url": url, "backends": {}, "rounds": []}
    for shm in transports:
        echo(f"starting {max(streams)} streams (shm {shm}) …")
        clients = Streams(max(streams), model, settings, url, shm, images)
        served["backends"][shm] = clients.backend
        try:
            for n in streams:
                row = {**clients.round(n, warmup_s, seconds), "shm": shm}
                served["rounds"].append(row)
                echo(f"  {n:3d} streams, shm {shm:3s}: {row['fps']:8.1f} FPS, P99 {fmt(row['latency_ms']['p99'], '.2f', ' ms')}")
        finally:
            clients.close()
    served["rounds"].sort(key=lambda r: (r["streams"], transports.index(r["shm"])))
    pa = {"ran": False, "why": "off (--no-perf-analyzer)", "rows": []}
    if use_perf_analyzer:
        binary, why = perf_analyzer.find()
        pa = {"ran": binary is not None, "why": why, "rows": []}
        if binary is not None:
            address, shm = Endpoint.parse(url).address, "on" in transports
            for n in streams:
                row = perf_analyzer.run(binary, address, settings.triton.model, n, work / f"pa-{n}.csv", shm)
                pa["rows"].append(row)
                echo(f"  perf_analyzer concurrency {n:3d}: {row.get('fps', 0):8.1f} inf/s, "
                     f"P99 {fmt(row.get('p99_ms'), '.2f', ' ms')}" + (f" ({row['error']})" if "error" in row else ""))
            pa["shared_memory"] = "system" if shm else "none"
    return served, pa


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def parse_counts(streams: str, shm: str, seconds: float, warmup: float) -> tuple[list[int], list[str]]:
    """The load test's options, checked: a one-line UserError for any that is off."""
    try:
        counts = sorted({int(n) for n in streams.split(",") if n.strip()})
    except ValueError:
        raise UserError(f"--streams {streams}: expected numbers like 1,2,4") from None
    transports = [t.strip() for t in shm.split(",") if t.strip()]
    if not counts or counts[0] < 1 or not transports or set(transports) - {"on", "off"}:
        raise UserError("--streams needs numbers ≥ 1 and --shm one or both of on, off")
    if seconds <= 0 or warmup < 0:
        raise UserError("--seconds must be > 0 and --warmup ≥ 0")
    return counts, transports
