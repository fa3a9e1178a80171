"""How far does one served engine go? `rtmon serve` under N concurrent camera streams.

    python -m rtmon.triton.loadtest --out DIR [--engine optimized] [--streams 1,2,4,8,16,32]

In one run, on one machine:

1. **in-process**: the engine without a server, one stream, driven as `rtmon bench` drives it
   (its own process through `rtmon.runner`, frames preloaded in shared memory, each handed over
   as soon as the engine has room), and its network alone (`Engine.network`, in this process) at
   each batch size the streams can form: the ceilings the server is measured against.
2. **served**: `rtmon serve` with the same engine (a real tritonserver through PyTriton) on
   loopback ports, and N client processes (`triton` engines: rtmon's letterbox and NMS, gRPC)
   for each N, with the frames in system shared memory and over the socket. Each stream is a
   closed loop, as perf_analyzer's concurrency: it sends its next frame when the previous
   frame's boxes are back. Throughput = frames whose boxes came back in the measured window /
   the window; latency = hand-over → boxes, over those frames.
3. **perf_analyzer** (when it runs here) against the same server at each N: requests of zeros,
   no client pre/post-processing; the server's side of the story.

Writes triton.json (every figure), triton.md (the tables) and triton.png (throughput and P99
against N) into --out. `--url` measures a server that is already running instead of starting
one (then the in-process figures are still this machine's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from rtmon import __version__, gpu
from rtmon import engines as registry
from rtmon.bench.harness import EngineUnderTest
from rtmon.bench.scenarios import options_for
from rtmon.config import Settings, load_settings, parse_set_options
from rtmon.core import Frame
from rtmon.engines.triton import Endpoint
from rtmon.errors import UserError
from rtmon.files import write_text_atomically
from rtmon.models import ModelRef, resolve_model
from rtmon.scene import SAMPLE_SEED, render_scene
from rtmon.triton import perf_analyzer

FRAMES = 32  # distinct frames of the sample scene, cycled by every stream
START_LEAD_S = 0.5  # a round starts this long after it is announced, so every stream starts together
READY_TIMEOUT_S = 900  # engine load (an Inductor compile per batch size) and tritonserver start


def percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"mean": None, "p50": None, "p99": None}
    values = np.asarray(latencies_ms)
    return {"mean": float(values.mean()), "p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


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


# --- the clients --------------------------------------------------------------------------------


def _client(conn, job: dict) -> None:
    """One camera stream, in its own process: a `triton` engine per transport, then rounds of
    (transport, start, end) from the parent, each answered with the boxes' arrival times and
    latencies."""
    import cv2
    import torch

    torch.set_num_threads(1)  # one stream, one core's worth: 32 streams must not fight over threads
    cv2.setNumThreads(1)
    settings = Settings.model_validate(job["settings"])
    model = ModelRef(Path(job["model"]["path"]), job["model"]["label"], job["model"]["kind"], job["model"]["sha256"],
                     {int(k): v for k, v in job["model"]["class_names"].items()})
    images = np.load(job["frames"], mmap_mode="r")
    engines = {}
    try:
        for shm in job["transports"]:
            engine = registry.create("triton", model, settings.model_copy(update={"triton": settings.triton.model_copy(update={"shm": shm})}))
            engines[shm] = engine
            engine.load()
        conn.send(("ready", {shm: e.info.backend for shm, e in engines.items()}))
        index = job["index"] * 7  # streams start at different frames
        while (round_ := conn.recv()) is not None:
            shm, t_start, t_end = round_
            engine, done, latencies, stages = engines[shm], [], [], []
            time.sleep(max(t_start - time.perf_counter(), 0))
            while (now := time.perf_counter()) < t_end:
                result = engine.infer(Frame(index, np.asarray(images[index % len(images)]), now))
                done.append(result.t_done)
                latencies.append(result.latency_ms)
                stages.append((result.stages.preprocess, result.stages.inference, result.stages.postprocess))
                index += 1
            conn.send(("done", done, latencies, stages))
    except Exception as exc:
        conn.send(("error", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
    finally:
        for engine in engines.values():
            engine.close()


class Clients:
    """`count` client processes, started once; a round runs on the first n of them."""

    def __init__(self, count: int, job: dict) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns, self._procs = [], []
        for index in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=_client, args=(child, {**job, "index": index}), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        backends = [self._receive(conn, "ready", 300)[0] for conn in self._conns]
        self.backends: dict[str, str] = backends[0]  # transport → what the engine says it runs over

    @staticmethod
    def _receive(conn, expected: str, timeout_s: float) -> tuple:
        try:
            if not conn.poll(timeout_s):
                raise UserError(f"loadtest: a client did not answer within {timeout_s:.0f} s")
            kind, *payload = conn.recv()
        except EOFError:
            raise UserError("loadtest: a client process died (its output above says why)") from None
        if kind == "error":
            raise UserError(f"loadtest: a client failed: {payload[0]}")
        assert kind == expected, kind
        return tuple(payload)

    def round(self, streams: int, shm: str, warmup_s: float, seconds: float) -> dict:
        """Every one of the first `streams` clients runs for warmup + seconds; the figures of the
        last `seconds`."""
        t_start = time.perf_counter() + START_LEAD_S
        t_measure, t_end = t_start + warmup_s, t_start + warmup_s + seconds
        for conn in self._conns[:streams]:
            conn.send((shm, t_start, t_end))
        done, latencies, stages = [], [], []
        for conn in self._conns[:streams]:
            times, lat, stage = self._receive(conn, "done", START_LEAD_S + warmup_s + seconds + 120)
            kept = [i for i, t in enumerate(times) if t_measure <= t <= t_end]
            done += [times[i] for i in kept]
            latencies += [lat[i] for i in kept]
            stages += [stage[i] for i in kept]
        # where a frame's time goes, client side: rtmon's letterbox, the call to the server, NMS
        means = np.mean(stages, axis=0).tolist() if stages else []
        return {"streams": streams, "shm": shm, "frames": len(done), "fps": len(done) / seconds,
                "latency_ms": percentiles(latencies),
                "stages_ms": dict(zip(("preprocess", "round_trip", "postprocess"), means, strict=False))}

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):  # a client that failed has closed its end
                conn.send(None)
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# --- in process ---------------------------------------------------------------------------------


def measure_in_process(name: str, model: ModelRef, settings: Settings, images: np.ndarray, batches: list[int],
                       warmup_s: float, seconds: float) -> dict:
    """The engine without a server, one stream, driven as `rtmon bench` drives it (its own
    process through `rtmon.runner`, the frames preloaded in the runner's ring, each handed over
    as soon as the engine has room: one at a time, or as many as its lanes keep in flight), then
    its network alone per batch."""
    # The offline scenario's options at batch 1, but no frame queued beyond those the engine runs:
    # a frame's latency is hand-over → boxes, as the served rows', with no wait in the pipe.
    options = dataclasses.replace(options_for(settings, "offline", 1), queued_batches=0)
    eut = EngineUnderTest.start(name, model, settings, options, list(images))
    try:
        if not eut.runner.wait_loaded():
            raise UserError(f"engine: {name}: {eut.runner.metrics.error or 'did not load'}")
        runner = eut.runner
        t_measure = time.perf_counter() + warmup_s
        deadline = t_measure + seconds
        start, n = eut.collector.count, 0
        while time.perf_counter() < deadline:
            if not eut.hand_over(n, n):
                raise UserError(f"engine: {name}: {runner.metrics.error or 'stopped answering'}")
            n += 1
        if not eut.collector.wait_for(start + n, options.timeout_s * 4, lambda: eut.failed):
            raise UserError(f"engine: {name}: {runner.metrics.error or 'stopped answering'}")
        measured = eut.collector.since(start)
        kept = measured.t_done >= t_measure
        e2e = {"mode": "pipelined" if runner.lanes > 1 else "one at a time", "in_flight": runner.depth,
               "driver": "rtmon.runner (as rtmon bench)", "frames": int(kept.sum()), "fps": int(kept.sum()) / seconds,
               "latency_ms": percentiles(measured.latency_ms[kept].tolist())}
        facts = {"backend": runner.info.backend, "precision": runner.info.precision, "device": runner.info.device}
    finally:
        eut.stop()
    # The network alone: the engine's own compiled network in this process, host arrays in and out
    # (the runner's process is gone, so the two do not share the device).
    alone = []
    engine = registry.create(name, model, settings)
    if hasattr(engine, "network"):
        engine.load()
        try:
            network = engine.network(settings.serve.max_batch)
            if network is not None:
                from rtmon.engines.prepost import preprocess_cpu

                blobs = np.concatenate([preprocess_cpu(images[i % len(images)], settings.model.imgsz, network.input_dtype)[0]
                                        for i in range(max(batches))])
                for batch in batches:
                    alone.append(_time_network(network.run, blobs[:batch], seconds=min(seconds, 2.0)))
        finally:
            engine.close()
    return {"engine": name, **facts, "stream": e2e, "network_alone": alone}


def _time_network(run, batch: np.ndarray, seconds: float) -> dict:
    run(batch)
    calls, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(calls) < 3:
        t = time.perf_counter()
        run(batch)
        calls.append((time.perf_counter() - t) * 1e3)
    return {"batch": len(batch), "fps": len(batch) * len(calls) / (sum(calls) / 1e3), "call_ms": float(np.mean(calls))}


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
        images = np.stack([image for image, _ in render_scene(SAMPLE_SEED, FRAMES * 3, stride=3)])
        np.save(work / "frames.npy", images)
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
            served, pa = _measure_served(settings, model, url, streams, transports, work, warmup_s, seconds, use_perf_analyzer, echo)
        finally:
            exit_code = server.stop() if server else None
        report = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rtmon": __version__,
            "machine": _machine(),
            "model": {"label": model.label, "sha256": model.sha256[:12]},
            "method": {
                "streams": "closed loop: each stream sends its next frame when the previous one's boxes are back",
                "warmup_s": warmup_s, "seconds": seconds, "frames": f"{FRAMES} frames of the sample scene, 1280x720",
                "server": "rtmon serve (PyTriton) on loopback ports" if server else url,
                "max_batch": settings.serve.max_batch, "queue_delay_us": settings.serve.queue_delay_us,
            },
            "in_process": local,
            "served": served,
            "perf_analyzer": pa,
            "server_exit_code": exit_code,
        }
        write_text_atomically(out / "triton.json", json.dumps(report, indent=1))
        write_text_atomically(out / "triton.md", markdown(report))
        plot(report, out / "triton.png")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_served(settings, model, url, streams, transports, work, warmup_s, seconds, use_perf_analyzer, echo):
    job = {"settings": settings.model_copy(update={"triton": settings.triton.model_copy(update={"url": url})}).model_dump(),
           "model": {"path": str(model.path), "label": model.label, "kind": model.kind, "sha256": model.sha256,
                     "class_names": model.class_names},
           "frames": str(work / "frames.npy"), "transports": transports}
    echo(f"starting {max(streams)} client processes …")
    clients = Clients(max(streams), job)
    served = {"url": url, "backends": clients.backends, "rounds": []}
    try:
        for n in streams:
            for shm in transports:
                row = clients.round(n, shm, warmup_s, seconds)
                served["rounds"].append(row)
                echo(f"  {n:3d} streams, shm {shm:3s}: {row['fps']:8.1f} FPS, P99 {_ms(row['latency_ms']['p99'])}")
    finally:
        clients.close()
    pa = {"ran": False, "why": "off (--no-perf-analyzer)", "rows": []}
    if use_perf_analyzer:
        binary, why = perf_analyzer.find()
        pa = {"ran": binary is not None, "why": why, "rows": []}
        if binary is not None:
            address, shm = Endpoint.parse(url).address, "on" in transports
            for n in streams:
                row = perf_analyzer.run(binary, address, settings.triton.model, n, work / f"pa-{n}.csv", shm)
                pa["rows"].append(row)
                echo(f"  perf_analyzer concurrency {n:3d}: {row.get('fps', 0):8.1f} inf/s, P99 {_ms(row.get('p99_ms'))}"
                     + (f" ({row['error']})" if "error" in row else ""))
            pa["shared_memory"] = "system" if shm else "none"
    return served, pa


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _machine() -> dict:
    info = gpu.info()
    return {"gpu": info.name if info else None, "driver": info.driver if info else None,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),  # other work on the machine, for context
            "python": platform.python_version(), "pytriton": _version("nvidia-pytriton"),
            "tritonclient": _version("tritonclient")}


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


# --- the report ---------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    machine, method, local = report["machine"], report["method"], report["in_process"]
    where = machine["gpu"] or f"CPU only ({machine['cpu']} × {machine['cpus']})"
    lines = [
        f"# rtmon serve under load — {report['created']}",
        "",
        f"- machine: {where}, Python {machine['python']}, PyTriton {machine['pytriton']}, tritonclient {machine['tritonclient']}"
        + (f"; load average {machine['load_average_1m_at_start']} when the run began"
           if machine.get("load_average_1m_at_start") is not None else ""),
        f"- model: {report['model']['label']} (sha256 {report['model']['sha256']})",
        f"- engine: {local['engine']} ({local['backend']}, {local['precision']}, {local['device']})",
        f"- server: {method['server']}, max batch {method['max_batch']}, queue delay {method['queue_delay_us']} µs",
        f"- streams: {method['streams']}; {method['warmup_s']} s warm-up, then {method['seconds']} s measured per row; "
        f"{method['frames']}",
        "",
        "## In process (no server)",
        "",
        "| what | FPS | mean ms | P50 ms | P99 ms |",
        "|---|---:|---:|---:|---:|",
        _row(f"{local['engine']}, one stream, {local['stream']['mode']}", local["stream"]["fps"], local["stream"]["latency_ms"]),
    ]
    for alone in local["network_alone"]:
        lines.append(f"| network alone, batch {alone['batch']} (host arrays in and out) | {alone['fps']:.1f} | "
                     f"{alone['call_ms']:.2f} per call | | |")
    lines += ["", "## Served: N streams against rtmon serve", "",
              "Each stream's frame: the client's letterbox (preprocess), the call to the server (round trip), "
              "the client's NMS (postprocess); means.", "",
              "| streams | transport | FPS | × 1 stream in process | mean ms | P50 ms | P99 ms | preprocess ms | round trip ms | postprocess ms |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = local["stream"]["fps"] or None
    for row in report["served"]["rounds"]:
        lat = row["latency_ms"]
        transport = "shared memory" if row["shm"] == "on" else "socket"
        ratio = f"{row['fps'] / base:.2f}×" if base else "n/a"
        stages = row.get("stages_ms", {})
        lines.append(f"| {row['streams']} | {transport} | {row['fps']:.1f} | {ratio} | {_cell(lat['mean'])} | "
                     f"{_cell(lat['p50'])} | {_cell(lat['p99'])} | {_cell(stages.get('preprocess'))} | "
                     f"{_cell(stages.get('round_trip'))} | {_cell(stages.get('postprocess'))} |")
    pa = report["perf_analyzer"]
    lines += ["", "## perf_analyzer against the same server", ""]
    if not pa["ran"]:
        lines.append(f"Not run: {pa['why']}.")
    else:
        lines += [f"Requests of zeros, gRPC, shared memory: {pa.get('shared_memory')}; no client pre/post-processing.", "",
                  "| concurrency | inferences/s | P50 ms | P99 ms | server queue ms | server compute ms |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in pa["rows"]:
            if "error" in row:
                lines.append(f"| {row['concurrency']} | error: {row['error']} | | | | |")
            else:
                lines.append(f"| {row['concurrency']} | {row['fps']:.1f} | {_cell(row.get('p50_ms'))} | {_cell(row.get('p99_ms'))} | "
                             f"{_cell(row.get('server_queue_ms'))} | {_cell(row.get('server_compute_ms'))} |")
    lines += ["", "![throughput and P99 against streams](triton.png)", ""]
    return "\n".join(lines)


def _row(what: str, fps: float, lat: dict) -> str:
    return f"| {what} | {fps:.1f} | {_cell(lat['mean'])} | {_cell(lat['p50'])} | {_cell(lat['p99'])} |"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for shm, label in (("on", "served, shared memory"), ("off", "served, socket")):
        rows = [r for r in report["served"]["rounds"] if r["shm"] == shm]
        if rows:
            n = [r["streams"] for r in rows]
            left.plot(n, [r["fps"] for r in rows], "o-", label=label)
            right.plot(n, [r["latency_ms"]["p99"] or np.nan for r in rows], "o-", label=label)
    pa = [r for r in report["perf_analyzer"]["rows"] if "error" not in r]
    if pa:
        left.plot([r["concurrency"] for r in pa], [r["fps"] for r in pa], "s--", label="perf_analyzer (zeros, no pre/post)")
        right.plot([r["concurrency"] for r in pa], [r.get("p99_ms", np.nan) for r in pa], "s--", label="perf_analyzer")
    stream = report["in_process"]["stream"]
    left.axhline(stream["fps"], color="grey", linestyle=":", label="in process, one stream")
    if stream["latency_ms"]["p99"] is not None:
        right.axhline(stream["latency_ms"]["p99"], color="grey", linestyle=":", label="in process, one stream")
    streams = sorted({r["streams"] for r in report["served"]["rounds"]})
    for ax, title in ((left, "throughput (frames/s)"), (right, "P99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(streams, [str(n) for n in streams])
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rtmon serve — {report['in_process']['engine']} on {report['machine']['gpu'] or 'CPU'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- command line -------------------------------------------------------------------------------


def main(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for triton.json, triton.md, triton.png")],
    engine: Annotated[str, typer.Option("--engine", "-e", help="the engine to serve and to run in process")] = "optimized",
    model: Annotated[str, typer.Option("--model", "-m", help="auto | demo | .pt path | ...")] = "demo",
    streams: Annotated[str, typer.Option("--streams", help="comma-separated numbers of concurrent streams")] = "1,2,4,8,16,32",
    shm: Annotated[str, typer.Option("--shm", help="transports to measure: on (shared memory), off (socket), or on,off")] = "on,off",
    seconds: Annotated[float, typer.Option("--seconds", help="measured seconds per row")] = 4.0,
    warmup: Annotated[float, typer.Option("--warmup", help="unmeasured seconds before each row")] = 1.0,
    url: Annotated[str | None, typer.Option("--url", help="measure this running server instead of starting rtmon serve")] = None,
    use_perf_analyzer: Annotated[bool, typer.Option("--perf-analyzer/--no-perf-analyzer", help="also run perf_analyzer when it runs here")] = True,
    sets: Annotated[list[str] | None, typer.Option("--set", help="any rtmon setting: section.key=value (e.g. serve.max_batch=32)")] = None,
) -> None:
    """Load-test `rtmon serve`: N concurrent client streams against a real Triton server, next to the same engine in process."""
    overrides = parse_set_options(sets or [])
    overrides["model.name"] = model
    settings = load_settings(None, overrides)
    try:
        counts = sorted({int(n) for n in streams.split(",") if n.strip()})
    except ValueError:
        raise UserError(f"--streams {streams}: expected numbers like 1,2,4") from None
    transports = [t.strip() for t in shm.split(",") if t.strip()]
    if not counts or counts[0] < 1 or not transports or set(transports) - {"on", "off"}:
        raise UserError("--streams needs numbers ≥ 1 and --shm one or both of on, off")
    if seconds <= 0 or warmup < 0:
        raise UserError("--seconds must be > 0 and --warmup ≥ 0")
    name = registry.resolve_names([engine])[0]
    run_loadtest(settings, name, counts, transports, out, warmup, seconds, url, use_perf_analyzer, sets or [])
    print(f"report: {out}/ (triton.md, triton.json, triton.png)")


if __name__ == "__main__":
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(main)
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
