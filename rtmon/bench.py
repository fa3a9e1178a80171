"""`rtmon bench`: every engine on the same frames, each alone in its own process, then a report.

The report (bench.json, bench.csv, bench.md, latency.png, timeline.png) is assembled in a
temporary folder and moved into `--out` only when every engine has finished, so a failed or
interrupted run leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rtmon import __version__, gpu
from rtmon.core import GpuMemory
from rtmon.errors import UserError
from rtmon.metrics import EngineSnapshot, LatencyStats
from rtmon.models import ModelRef
from rtmon.snapshot import MonitorSnapshot, SourceStatus
from rtmon.sources import SourceSpec

BASELINE = "torch-fp32"
REPORT_FILES = ("bench.json", "bench.csv", "bench.md", "latency.png", "timeline.png")


@dataclass
class EngineRun:
    name: str
    raw: dict
    t_measure: float  # parent clock when the engine's timed loop began

    @property
    def fps(self) -> float:
        return self.raw["frames"] / self.raw["wall_s"]

    @property
    def latency(self) -> LatencyStats:
        return LatencyStats.of(np.asarray(self.raw["latencies_ms"]))

    @property
    def stages(self) -> dict[str, float]:
        mean = np.asarray(self.raw["stages_ms"]).mean(axis=0)
        return {"preprocess": float(mean[0]), "inference": float(mean[1]), "postprocess": float(mean[2])}


@dataclass
class Telemetry:
    """CPU and GPU samples taken by the parent while the workers run."""

    t: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    gpu_util_pct: list[float | None] = field(default_factory=list)
    gpu_mem_mib: list[float | None] = field(default_factory=list)
    engine: list[str] = field(default_factory=list)


class Sampler(threading.Thread):
    def __init__(self, hz: float, t0: float) -> None:
        super().__init__(name="rtmon-bench-sampler", daemon=True)
        self.period, self.t0 = 1.0 / hz, t0
        self.data = Telemetry()
        self.current = ""
        self._halt = threading.Event()

    def run(self) -> None:
        psutil.cpu_percent(None)
        while not self._halt.wait(self.period):
            s = gpu.sample()
            self.data.t.append(time.perf_counter() - self.t0)
            self.data.cpu_pct.append(psutil.cpu_percent(None))
            self.data.gpu_util_pct.append(s.utilization_pct if s else None)
            self.data.gpu_mem_mib.append(s.memory_used_mib if s else None)
            self.data.engine.append(self.current)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


class BenchStatus:
    """What an MQTT subscriber sees while a bench runs: each finished engine's results, and
    the running engine's progress (its FPS so far; latency percentiles once it has finished)."""

    def __init__(self, model: ModelRef, spec: SourceSpec, names: list[str]) -> None:
        self.model, self.spec = model, spec
        self.state = dict.fromkeys(names, "waiting")
        self.processed = dict.fromkeys(names, 0)
        self.t_measure: dict[str, float] = {}
        self.runs: dict[str, EngineRun] = {}
        self.t0 = time.perf_counter()

    def _engine(self, name: str, now: float) -> EngineSnapshot:
        run = self.runs.get(name)
        if run:
            return EngineSnapshot(name, "done", "", run.raw["frames"], 0, run.fps, run.fps, run.latency, run.stages,
                                  (), (), {}, GpuMemory(process_mib=run.raw["gpu_process_mib"]))
        started = self.t_measure.get(name)
        n = self.processed[name]
        fps = n / (now - started) if started and n and now > started else None
        return EngineSnapshot(name, self.state[name], "", n, 0, fps, fps, None, {}, (), (), {}, None)

    def snapshot(self) -> MonitorSnapshot:
        now = time.perf_counter()
        source = SourceStatus(self.spec.uri, self.spec.kind, None, None, None, None, "running", "", 0)
        return MonitorSnapshot(time.time(), now - self.t0, self.model.label, (source,),
                               tuple(self._engine(n, now) for n in self.state), {}, gpu.sample(), "")


def check_out_dir(out: Path) -> None:
    """Fail before any work if `out` cannot be created and written; leave nothing behind."""
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise UserError(f"out: cannot write to {out} ({exc.strerror or exc})") from None
    finally:
        for folder in created:  # deepest first; the report creates them again when it is written
            with contextlib.suppress(OSError):
                folder.rmdir()


def _run_worker(job: dict, progress: Progress, task, sampler: Sampler, status: BenchStatus) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory(prefix="rtmon-bench-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps({**job, "result": str(result_file)}))
        cmd = [sys.executable, "-m", "rtmon.bench_worker", str(job_file)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        error, t_measure = "", time.perf_counter()
        try:
            for line in proc.stdout:
                msg = json.loads(line) if line.startswith("{") else {}
                name = job["engine"]
                if msg.get("stage") == "measuring":
                    t_measure = status.t_measure[name] = time.perf_counter()
                    status.state[name] = "measuring"
                    progress.update(task, description=f"{name}: measuring")
                elif msg.get("stage") == "loading":
                    status.state[name] = "loading"
                    progress.update(task, description=f"{name}: loading + warm-up")
                elif "progress" in msg:
                    status.processed[name] = msg["progress"]
                    progress.update(task, completed=msg["progress"])
                elif "error" in msg:
                    error = msg["error"]
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            raise UserError(error or f"engine {job['engine']} exited with code {code}")
        return json.loads(result_file.read_text()), t_measure - sampler.t0


def run_bench(
    settings, model: ModelRef, spec: SourceSpec, engine_names: list[str], out: Path, console: Console,
    publisher_factory=None,
) -> dict:
    """Measure each engine in its own process; write the report into `out`; return bench.json."""
    check_out_dir(out)
    status = BenchStatus(model, spec, engine_names)
    publisher = publisher_factory(status.snapshot, model.class_names) if publisher_factory else None
    if publisher:
        publisher.start()
    frames, warmup = settings.bench.frames, settings.bench.warmup
    job_base = {
        "settings": settings.model_dump(),
        "model": {"path": str(model.path.resolve()), "label": model.label, "kind": model.kind,
                  "sha256": model.sha256, "class_names": model.class_names},
        "source": {"uri": spec.uri, "kind": spec.kind, "target": spec.target, "label": spec.label},
        "frames": frames,
        "warmup": warmup,
    }
    t0 = time.perf_counter()
    sampler = Sampler(settings.bench.sample_hz, t0)
    sampler.start()
    runs: list[EngineRun] = []
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            for name in engine_names:
                task = progress.add_task(f"{name}: decoding", total=frames)
                sampler.current = name
                raw, t_measure = _run_worker({**job_base, "engine": name}, progress, task, sampler, status)
                runs.append(EngineRun(name, raw, t_measure))
                status.runs[name] = runs[-1]
                progress.update(task, description=f"{name}: {runs[-1].fps:.1f} FPS", completed=frames)
                sampler.current = ""
    finally:
        sampler.stop()
        if publisher:
            publisher.stop()
    report = build_report(runs, model, spec, frames, warmup)
    write_report(report, runs, sampler.data, out)
    console.print(summary_table(report))
    return report


def build_report(runs: list[EngineRun], model: ModelRef, spec: SourceSpec, frames: int, warmup: int) -> dict:
    base = next((r for r in runs if r.name == BASELINE), None)
    info = gpu.info()
    engines = []
    for r in runs:
        lat = r.latency
        engines.append({
            "name": r.name,
            "backend": r.raw["info"]["backend"],
            "precision": r.raw["info"]["precision"],
            "device": r.raw["info"]["device"],
            "mode": r.raw.get("mode", "single"),
            "batch": r.raw.get("batch", 1),
            "fps": r.fps,
            "latency_ms": {"mean": lat.mean, "p50": lat.p50, "p95": lat.p95, "p99": lat.p99},
            "stages_ms": r.stages,
            "gpu_mem_mib": r.raw["gpu_process_mib"],
            "torch_peak_mib": r.raw["torch_peak_mib"],
            "load_s": r.raw["load_s"],
            "notes": r.raw["info"].get("notes", []),
            "speedup_vs_baseline": r.fps / base.fps if base else None,
        })
    return {
        "rtmon": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {
            "gpu": info.name if info else None,
            "driver": info.driver if info else None,
            "gpu_memory_mib": info.memory_total_mib if info else None,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": psutil.cpu_count(),
            "python": platform.python_version(),
        },
        "model": {"label": model.label, "kind": model.kind, "sha256": model.sha256, "trained": model.trained},
        "source": {"uri": spec.uri, "kind": spec.kind},
        "frames": frames,
        "warmup": warmup,
        "policy": "every frame, each engine alone in its own process; latency = frame handed over → boxes on host",
        "engines": engines,
    }


def _fmt(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def summary_table(report: dict) -> Table:
    title = f"rtmon bench — {report['model']['label']} on {report['device']['gpu'] or 'CPU only'}"
    table = Table(title=title)
    for col in ("engine", "FPS", "mean ms", "P95 ms", "P99 ms", "GPU mem", "speed-up"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for e in report["engines"]:
        lat = e["latency_ms"]
        table.add_row(e["name"], _fmt(e["fps"]), _fmt(lat["mean"], ".2f"), _fmt(lat["p95"], ".2f"),
                      _fmt(lat["p99"], ".2f"), gpu.fmt_mib(e["gpu_mem_mib"]), _fmt(e["speedup_vs_baseline"], ".2f", "×"))
    return table


def _best_optimized(report: dict) -> dict | None:
    others = [e for e in report["engines"] if e["name"] != BASELINE]
    return max(others, key=lambda e: e["fps"]) if others else None


def _mode(engine: dict) -> str:
    """How the engine was driven: one frame at a time, pipelined, or in micro-batches."""
    mode = engine.get("mode", "single")
    return f"batch {engine['batch']}" if mode == "batch" else {"stream": "pipelined"}.get(mode, "one at a time")


def markdown(report: dict) -> str:
    dev = report["device"]
    lines = [
        f"# rtmon bench — {report['created']}",
        "",
        f"- GPU: {dev['gpu'] or 'none (CPU only)'}" + (f", driver {dev['driver']}" if dev["driver"] else ""),
        f"- CPU: {dev['cpu']} × {dev['cpu_count']}, Python {dev['python']}",
        f"- model: {report['model']['label']} (sha256 {report['model']['sha256'][:12]})"
        + ("" if report["model"]["trained"] else " — **untrained: speed only, detections meaningless**"),
        f"- source: {report['source']['uri']} ({report['source']['kind']}), {report['frames']} frames after "
        f"{report['warmup']} warm-up frames",
        f"- method: {report['policy']}",
        "- mode: *one at a time* = the next frame is handed over when the previous one's boxes are on the host; "
        "*pipelined* = the engine holds up to two frames in flight (upload of frame N+1 overlaps frame N); "
        "*batch N* = N frames handed over together, latency to the batch's boxes",
        "",
        "| engine | backend | precision | mode | FPS | mean ms | P50 ms | P95 ms | P99 ms | pre ms | infer ms | post ms "
        "| GPU mem | speed-up |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["engines"]:
        lat, st = e["latency_ms"], e["stages_ms"]
        lines.append(
            f"| {e['name']} | {e['backend']} | {e['precision']} | {_mode(e)} | {e['fps']:.1f} | {lat['mean']:.2f} | "
            f"{lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | {st['preprocess']:.2f} | "
            f"{st['inference']:.2f} | {st['postprocess']:.2f} | {gpu.fmt_mib(e['gpu_mem_mib'])} | "
            f"{_fmt(e['speedup_vs_baseline'], '.2f', '×')} |"
        )
    base = next((e for e in report["engines"] if e["name"] == BASELINE), None)
    best = _best_optimized(report)
    if base and best:
        lines += ["", f"## Baseline vs optimized ({best['name']})", "",
                  f"| | baseline ({BASELINE}) | optimized ({best['name']}) | improvement |", "|---|---:|---:|---:|"]
        lines.append(f"| FPS | {base['fps']:.1f} | {best['fps']:.1f} | {best['fps'] / base['fps']:.2f}× |")
        for key, label in (("mean", "mean latency"), ("p95", "P95 latency"), ("p99", "P99 latency")):
            b, o = base["latency_ms"][key], best["latency_ms"][key]
            lines.append(f"| {label} | {b:.2f} ms | {o:.2f} ms | {b / o:.2f}× lower |")
        bm, om = base["gpu_mem_mib"], best["gpu_mem_mib"]
        change = "n/a" if bm is None or om is None else f"{(om - bm) / bm * 100:+.0f}%"
        lines.append(f"| GPU memory | {gpu.fmt_mib(bm)} | {gpu.fmt_mib(om)} | {change} |")
    lines += ["", "![latency distributions](latency.png)", "", "![run over time](timeline.png)", ""]
    return "\n".join(lines)


def write_csv(report: dict, path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["engine", "backend", "precision", "fps", "mean_ms", "p50_ms", "p95_ms", "p99_ms",
                    "preprocess_ms", "inference_ms", "postprocess_ms", "gpu_mem_mib", "speedup_vs_baseline"])
        for e in report["engines"]:
            lat, st = e["latency_ms"], e["stages_ms"]
            w.writerow([e["name"], e["backend"], e["precision"], e["fps"], lat["mean"], lat["p50"], lat["p95"],
                        lat["p99"], st["preprocess"], st["inference"], st["postprocess"], e["gpu_mem_mib"],
                        e["speedup_vs_baseline"]])


def _colors(n: int) -> list:
    """Distinct colours for n engines (tab10, or tab20 beyond ten)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_latency(runs: list[EngineRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=120)
    all_lat = np.concatenate([np.asarray(r.raw["latencies_ms"]) for r in runs])
    bins = np.geomspace(max(all_lat.min() * 0.9, 1e-3), all_lat.max() * 1.1, 80)
    for r, color in zip(runs, _colors(len(runs)), strict=True):
        lat = np.asarray(r.raw["latencies_ms"])
        counts, edges = np.histogram(lat, bins=bins)
        ax.step(edges[:-1], counts / len(lat), where="post", color=color,
                label=f"{r.name}  (P99 {np.percentile(lat, 99):.2f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency per frame (ms, log scale)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency distribution per engine")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_timeline(runs: list[EngineRun], tel: Telemetry, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(12, 9), dpi=110, sharex=True)
    for r, color in zip(runs, _colors(len(runs)), strict=True):
        done = r.t_measure + np.asarray(r.raw["done_s"])
        lat = np.asarray(r.raw["latencies_ms"])
        k = max(5, len(done) // 50)  # FPS over the last k frames: smooth, and exact over any window
        if len(done) > k:
            axes[0].plot(done[k:], k / (done[k:] - done[:-k]), color=color, label=r.name)
        axes[1].plot(done, lat, ".", ms=2, color=color)
    axes[0].set_ylabel("FPS")
    axes[1].set_ylabel("latency ms")
    axes[1].set_yscale("log")
    t = np.asarray(tel.t)
    util = np.asarray([np.nan if v is None else v for v in tel.gpu_util_pct], dtype=float)
    mem = np.asarray([np.nan if v is None else v for v in tel.gpu_mem_mib], dtype=float)
    if len(t) and not np.all(np.isnan(util)):
        axes[2].plot(t, util, color="tab:green")
        twin = axes[2].twinx()
        twin.plot(t, mem, color="tab:purple")
        twin.set_ylabel("memory used, MiB", color="tab:purple")
    else:
        axes[2].text(0.5, 0.5, "no GPU: n/a", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_ylabel("GPU utilization %", color="tab:green")
    axes[3].plot(t, tel.cpu_pct, color="tab:red")
    axes[3].set_ylabel("CPU % (all cores)")
    axes[3].set_xlabel("seconds since the bench started (engines run one after another)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=8)
    fig.suptitle("rtmon bench over time")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict, runs: list[EngineRun], tel: Telemetry, out: Path) -> None:
    """All files into a temporary folder first, then moved into `out` together."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".bench-") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "bench.json").write_text(json.dumps(report, indent=2))
        write_csv(report, tmp_dir / "bench.csv")
        (tmp_dir / "bench.md").write_text(markdown(report))
        plot_latency(runs, tmp_dir / "latency.png")
        plot_timeline(runs, tel, tmp_dir / "timeline.png")
        for name in REPORT_FILES:
            shutil.move(str(tmp_dir / name), str(out / name))


def run_concurrent(
    settings, model: ModelRef, spec: SourceSpec, engine_names: list[str], out: Path, console: Console,
    seconds: float, warmup_s: float = 3.0,
) -> dict:
    """All engines together in one process on one feed, as in the live view.

    The file loops and is decoded as fast as it can be (no pacing); each engine takes the
    newest frame whenever it is free, so the figures show what each engine achieves while the
    others share the machine. Latency here is capture → boxes on host, waiting included.
    """
    from rtmon.pipeline import Pipeline

    check_out_dir(out)
    looping = settings.model_copy(update={"source": settings.source.model_copy(update={"loop": True})})
    pipeline = Pipeline(spec, model, looping, engine_names, realtime=False)
    try:
        with console.status(f"loading {', '.join(engine_names)} …"):
            pipeline.load_engines_or_raise()
        pipeline.start_feed()
        time.sleep(warmup_s)
        for m in pipeline.metrics.values():
            m.reset()
        columns = (TextColumn("concurrent run"), BarColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        peak_mem = None
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("run", total=seconds, info="")
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                snap = pipeline.snapshot()
                if snap.gpu and snap.gpu.process_mem_mib is not None:
                    peak_mem = max(peak_mem or 0.0, snap.gpu.process_mem_mib)
                info = "  ".join(f"{e.name} {e.fps:.0f} FPS" for e in snap.engines if e.fps)
                progress.update(task, completed=elapsed, info=info)
                time.sleep(0.25)
        snap = pipeline.snapshot()
    finally:
        pipeline.stop()
    report = {
        "rtmon": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"gpu": snap.gpu.name if snap.gpu else None, "cpu_count": psutil.cpu_count()},
        "model": {"label": model.label, "sha256": model.sha256},
        "source": {"uri": spec.uri, "kind": spec.kind},
        "seconds": seconds,
        "policy": "all engines in one process on one feed; each takes the newest frame when free; latency = capture → boxes",
        "process_gpu_mem_mib": peak_mem,
        "engines": [
            {"name": e.name, "fps": e.fps_overall, "processed": e.processed, "skipped": e.skipped,
             "latency_ms": None if e.latency is None else {"mean": e.latency.mean, "p50": e.latency.p50,
                                                           "p95": e.latency.p95, "p99": e.latency.p99},
             "state": e.state}
            for e in snap.engines
        ],
    }
    lines = [f"# rtmon concurrent run — {report['created']}", "",
             f"- GPU: {report['device']['gpu'] or 'none (CPU only)'}; model {model.label}; source {spec.uri}; {seconds:.0f} s",
             f"- {report['policy']}", f"- GPU memory of the process (all engines): {gpu.fmt_mib(peak_mem)}", "",
             "| engine | FPS | processed | skipped | mean ms | P95 ms | P99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for e in report["engines"]:
        lat = e["latency_ms"] or {}
        lines.append(f"| {e['name']} | {_fmt(e['fps'])} | {e['processed']} | {e['skipped']} | {_fmt(lat.get('mean'), '.2f')} "
                     f"| {_fmt(lat.get('p95'), '.2f')} | {_fmt(lat.get('p99'), '.2f')} |")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("concurrent.json", json.dumps(report, indent=2)), ("concurrent.md", "\n".join(lines) + "\n")):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    console.print("\n".join(lines[6:]))
    return report
