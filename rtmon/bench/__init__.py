"""`rtmon bench`: every engine on the same decoded frames, each alone in its own process, in one of
the field's scenarios (see `rtmon.bench.scenarios`); or, with `--concurrent`, the engines alone
and then together on one live feed, as the monitor runs them.

Reports are assembled in a temporary folder and moved into `--out` only when every engine has
finished, so a failed or interrupted run leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtmon import engines as registry
from rtmon import gpu
from rtmon.bench import concurrent_report, scenarios
from rtmon.bench import reference as plain
from rtmon.bench import report as reports
from rtmon.bench import yardstick as yardsticks
from rtmon.bench.harness import Collector, EngineUnderTest, decode_pool
from rtmon.bench.progress import progress_bars
from rtmon.core import BenchPhase, GpuMemory, Role, SourceState
from rtmon.errors import UserError
from rtmon.files import write_folder
from rtmon.formatting import fmt, fmt_mib
from rtmon.metrics import EngineSnapshot, LatencyStats, throughput_fps
from rtmon.models import ModelRef
from rtmon.processes import pin_threads, split_cpus, unpin_threads
from rtmon.reporting import header
from rtmon.snapshot import MonitorSnapshot, SourceStatus
from rtmon.sources import SourceSpec

SCENARIOS = ("single-stream", "offline", "multi-stream", "soak")
REFERENCE_SCENARIOS = ("single-stream", "offline")  # where a plain predict loop is the same measurement
POLICIES = {
    "single-stream": "each engine alone in its own process; frame N+1 handed over the instant frame N's boxes are "
                     "back in the main process; latency = handed over → boxes in the main process",
    "offline": "each engine alone in its own process; all frames available up front, taken as fast as the engine "
               "takes them (its pipelining), in micro-batches of each size",
    "multi-stream": "each engine alone in its own process; N cameras on a fixed schedule, newest frame per camera, "
                    "micro-batched across cameras; latency from each frame's scheduled arrival",
}


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


class BenchStatus:
    """What an MQTT subscriber sees while a bench runs: each engine's state and figures so far."""

    def __init__(self, model: ModelRef, specs: list[SourceSpec], names: list[str]) -> None:
        self.model, self.specs = model, specs
        self.state = dict.fromkeys(names, BenchPhase.WAITING)
        self.figures: dict[str, tuple[int, float | None, LatencyStats | None, GpuMemory]] = {}
        self.t0 = time.perf_counter()

    def update(self, name: str, state: BenchPhase, frames: int = 0, fps: float | None = None,
               latency: LatencyStats | None = None, memory: GpuMemory | None = None) -> None:
        self.state[name] = state
        self.figures[name] = (frames, fps, latency, memory or GpuMemory())

    def snapshot(self) -> MonitorSnapshot:
        now = time.perf_counter()
        engines = []
        for name, state in self.state.items():
            frames, fps, latency, memory = self.figures.get(name, (0, None, None, GpuMemory()))
            engines.append(EngineSnapshot(name, state, "", frames, 0, fps, fps, latency, {}, (), (), {}, memory,
                                          registry.role(name)))
        spec = self.specs[0]
        source = SourceStatus(spec.uri, spec.kind, None, None, None, None, SourceState.RUNNING, "", 0)
        return MonitorSnapshot(time.time(), now - self.t0, self.model.label, (source,), tuple(engines), {},
                               gpu.sample(), "")


def run_bench(settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], out: Path, console: Console,
              scenario: str, publisher_factory=None, reference: bool = True) -> dict:
    """Measure each engine alone in `scenario`; write the report into `out`; return bench.json.
    `engines`: per engine the names to try in order (`rtmon.engines.resolve_engines`)."""
    names = [candidates[0] for candidates in engines]
    if scenario not in SCENARIOS:
        raise UserError(f"--scenario: unknown scenario '{scenario}' (known: {', '.join(SCENARIOS)})")
    check_out_dir(out)
    if scenario == "soak":
        from rtmon.bench.soak import run_soak

        return run_soak(settings, model, specs, engines, out, console)
    b = settings.bench
    batches = sorted(set(b.batches)) if scenario == "offline" else [1]
    max_batch = max(batches) if scenario == "offline" else settings.engine.max_batch
    run_settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"max_batch": max_batch})})
    status = BenchStatus(model, specs, names)
    publisher = publisher_factory(status.snapshot, model.class_names) if publisher_factory else None
    if publisher:
        publisher.start()
    entries: list[dict] = []
    refs: list[dict] = []
    with_reference = reference and scenario in REFERENCE_SCENARIOS
    # Single-stream: rtmon's own threads (the feed, the receivers' spin, the progress bars) on a
    # few CPUs of their own, each measured process (the engine's, the plain script's) on the rest.
    split = None
    if scenario == "single-stream" and b.cpu_split != "off":
        split = split_cpus() if b.cpu_split == "auto" else split_cpus(at_least=2, least_side=1)
    pinned = pin_threads(split[0]) if split else {}
    try:
        with console.status("decoding the frames every engine will see …"):
            pool = decode_pool(specs, min(b.pool, max(b.frames + b.warmup, 1)))
        with tempfile.TemporaryDirectory(prefix="rtmon-bench-") as tmp, progress_bars(console) as progress:
            plans = plain.references(model, settings) if with_reference else []
            frames_file = plain.save_frames(pool, Path(tmp)) if plans else None
            runs: dict[str, list[dict]] = {ref.for_engine: [] for ref in plans}
            duration = (b.min_duration_s, max(b.max_duration_s, b.min_duration_s))

            def reference(ref, when: str) -> None:
                task = progress.add_task(f"reference for {ref.for_engine} ({when})", total=None)
                progress.draw(now=True)
                with plain.PlainSession(ref, frames_file, settings, b.warmup, split and split[1]) as session:
                    runs[ref.for_engine].append(session.segment(b.frames, *duration))
                progress.update(task, completed=1, total=1)
                progress.draw(now=True)

            measured_refs = {c[0] for c in engines}
            for ref in plans:  # the yardsticks of engines not in this run: once, first
                if ref.for_engine not in measured_refs:
                    reference(ref, "alone")
            for name, candidates in zip(names, engines, strict=True):
                ref = next((r for r in plans if r.for_engine == candidates[0]), None)
                interleaved = ref is not None and scenario == "single-stream"
                if ref is not None and not interleaved:
                    reference(ref, "before")
                task = progress.add_task(f"{name}: loading", total=None)
                progress.draw(now=True)

                def report_progress(what: str, done: float, total: float, task=task, name=name) -> None:
                    progress.update(task, description=what, completed=done, total=total or None)
                    progress.draw()
                    status.update(name, BenchPhase.MEASURING, int(done))

                status.update(name, BenchPhase.LOADING)
                options = scenarios.options_for(run_settings, scenario, max_batch, tuple(batches))
                if split:
                    options = dataclasses.replace(options, cpus=split[1])
                eut = EngineUnderTest.start(candidates, model, run_settings, options, pool)
                try:
                    if interleaved:
                        eut.require_loaded()  # the engine loads first, then its reference: nothing overlaps
                        ref_runs = runs[ref.for_engine]
                        with plain.Alternation(ref, frames_file, settings, split and split[1], ref_runs,
                                               progress) as alternation:
                            undecided = (lambda parts, tags, ref_runs=ref_runs: yardsticks.undecided(parts, tags, ref_runs)) \
                                if b.until_decided else None
                            entry = _measure(eut, scenario, settings, batches, report_progress, alternation, undecided)
                    else:
                        entry = _measure(eut, scenario, settings, batches, report_progress)
                finally:
                    eut.stop()
                entries.append(entry)
                lat = entry.get("latency_ms")
                status.update(name, BenchPhase.DONE, entry.get("frames") or 0, entry.get("fps"),
                              None if not lat else LatencyStats(**lat), GpuMemory(**{
                                  k: v for k, v in (entry.get("gpu_mem") or {}).items() if k != "engine_mib"}))
                progress.update(task, description=f"{entry['name']}: {_summary(entry, scenario)}", completed=1, total=1)
                progress.draw(now=True)
                if ref is not None and not interleaved:
                    reference(ref, "after")
            refs = [plain.row(ref, runs[ref.for_engine]) for ref in plans]
    finally:
        unpin_threads(pinned)
        if publisher:
            publisher.stop()
    report = {**header(model, specs), "scenario": scenario, "policy": POLICIES[scenario],
              "frames": b.frames, "warmup": b.warmup, "engines": entries,
              "cpus": {"main": list(split[0]), "measured": list(split[1])} if split else None}
    if with_reference:
        report["reference"] = refs
        report["yardstick"] = yardsticks.yardstick(entries, refs, scenario)
        if scenario == "single-stream":
            report["yardstick"]["rounds_rule"] = yardsticks.rounds_rule(b)
    else:
        report["reference"] = []
        report["yardstick"] = {"pass": None, "baseline_vs_reference": None, "checks": [],
                               "rule": "not checked: " + ("--no-reference" if scenario in REFERENCE_SCENARIOS else
                                                          "the yardstick is checked in single-stream and offline")}
    if scenario == "multi-stream":
        report["camera_fps"] = b.camera_fps
        report["decoding"] = decoding_capacity(specs[0], b.camera_fps, max(e["max_streams"] for e in entries))
    for e in entries:
        mem = e.get("gpu_mem") or {}
        e["gpu_mem_mib"] = mem.get("process_mib")  # today's key: the process's NVML figure
        e["torch_peak_mib"] = mem.get("allocator_peak_mib")
    if scenario != "multi-stream":
        reports.add_speedups(report)
    warned = reports.warnings(report)
    write_folder(out, reports.bench_files(report))
    console.print(summary_table(report))
    for line in warned:
        console.print(f"[bold yellow]warning:[/] {line}")
    return report


def _measure(eut: EngineUnderTest, scenario: str, settings, batches: list[int], progress,
             alternation: plain.Alternation | None = None, undecided=None) -> dict:
    b = settings.bench
    if scenario == "single-stream":
        return scenarios.single_stream(eut, b.frames, b.warmup, b.min_duration_s, max(b.max_duration_s, b.min_duration_s),
                                       b.window_s, b.timing_probe, progress, b.reference_rounds,
                                       alternation.segment if alternation else None, b.segment_warmup, undecided,
                                       b.reference_processes, alternation.renew if alternation else None)
    if scenario == "offline":
        return scenarios.offline(eut, batches, b.frames, 2, progress)
    return scenarios.capacity_search(eut, b.camera_fps, b.trial_s, b.trial_warmup_s, b.max_streams, progress)


def _summary(entry: dict, scenario: str) -> str:
    if scenario == "multi-stream":
        return f"{entry['max_streams']} cameras"
    lat = entry.get("latency_ms") or {}
    p99 = f", P99 {lat['p99']:.2f} ms" if lat.get("p99") is not None else ""
    batch = f" at batch {entry['batch']}" if scenario == "offline" else ""
    return f"{entry['fps']:.1f} FPS{batch}{p99}"


def summary_table(report: dict) -> Table:
    scenario = report["scenario"]
    table = Table(title=f"rtmon bench {scenario} — {report['model']['label']} on {report['device']['gpu'] or 'CPU only'}")
    if scenario == "multi-stream":
        for col in ("engine", "role", "max cameras", f"at {report['camera_fps']:g} fps"):
            table.add_column(col)
        for e in report["engines"]:
            table.add_row(e["name"], e["role"], str(e["max_streams"]), "search limit" if e.get("limit_reached") else "")
        return table
    for col in ("engine", "role", "FPS", "P95 ms", "P99 ms", "GPU mem", "speed-up", "valid" if scenario == "single-stream" else "batch"):
        table.add_column(col, justify="left" if col in ("engine", "role") else "right")
    for e in report["engines"]:
        lat = e.get("latency_ms") or {}
        last = ("yes" if e.get("valid") else "no") if scenario == "single-stream" else str(e.get("batch"))
        table.add_row(e["name"], e["role"], fmt(e["fps"]), fmt(lat.get("p95"), ".2f"),
                      fmt(lat.get("p99"), ".2f"), fmt_mib(e.get("gpu_mem_mib")),
                      fmt(e.get("speedup_vs_baseline"), ".2f", "×"), last)
    return table


def decoding_capacity(spec: SourceSpec, camera_fps: float, cameras_needed: int, seconds: float = 3.0) -> dict:
    """How many camera streams this machine decodes: OpenCV on 1, 2, 4, … CPU threads (each its
    own decoder), and NVDEC where PyNvVideoCodec is installed. Compared with `cameras_needed`."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from rtmon.sources import open_capture

    def decode(_: int) -> int:
        cap, _first = open_capture(spec)
        n, t_end = 0, time.perf_counter() + seconds
        try:
            while time.perf_counter() < t_end:
                if cap.read() is None and not cap.rewind():
                    break
                n += 1
        finally:
            cap.release()
        return n

    rows = []
    threads = 1
    cores = os.cpu_count() or 1
    while threads <= cores:
        with ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(decode, range(threads)))
        fps = throughput_fps(total, 0.0, seconds)
        rows.append({"decoder": "OpenCV (CPU)", "threads": threads, "fps": fps, "cameras": fps / camera_fps if fps else None})
        threads *= 2
    from rtmon.nvdec import nvdec_unavailable_reason

    why = nvdec_unavailable_reason()
    if why is None:
        from rtmon.nvdec import open_nvdec

        t0, n = time.perf_counter(), 0
        for n, _frame in open_nvdec(spec.target):  # noqa: B007 - counting
            if time.perf_counter() - t0 > seconds:
                break
        fps = throughput_fps(n + 1, t0, time.perf_counter())
        rows.append({"decoder": "NVDEC (PyNvVideoCodec)", "threads": 1, "fps": fps, "cameras": fps / camera_fps if fps else None})
    else:
        rows.append({"decoder": "NVDEC", "threads": None, "fps": None, "cameras": None, "note": why})
    best = max((r["cameras"] for r in rows if r.get("cameras")), default=0)
    verdict = (f"Decoding limits first: this machine decodes about {best:.0f} such streams, the engine serves "
               f"{cameras_needed}." if best < cameras_needed else
               f"Inference limits first: this machine decodes about {best:.0f} such streams, more than the "
               f"{cameras_needed} the engine serves.")
    return {"rows": rows, "verdict": verdict, "seconds": seconds}


# ---- concurrent: the engines alone, then together, on one live feed ---------------------------------------


def run_concurrent(settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], out: Path,
                   console: Console, seconds: float, warmup_s: float = 3.0, paces: tuple[str, ...] = ("realtime", "max")) -> dict:
    """For each pace: each engine alone (the others loaded but off), then all together, on the
    same looping feed as the live view; per engine, alone vs together."""
    from rtmon.pipeline import Pipeline

    check_out_dir(out)
    looping = settings.model_copy(update={"source": settings.source.model_copy(update={"loop": True})})
    result = {**header(model, specs), "seconds": seconds, "warmup_s": warmup_s, "mps": gpu.mps_active(),
              "policy": "engines each in its own process on one feed, taking the newest frame when free; each "
                        "alone (the others loaded, off) and then all together; latency = capture → boxes",
              "paces": {}}
    for pace in paces:
        collectors: defaultdict[str, Collector] = defaultdict(Collector)
        pipeline = Pipeline(specs, model, looping, engines, pace=pace,
                            on_result=lambda name, res, skipped, c=collectors: c[name](res, skipped))
        try:
            with console.status(f"{pace}: loading {', '.join(c[0] for c in engines)} …"):
                pipeline.load_engines_or_raise()
            pipeline.start_feed()
            names = [r.name for r in pipeline.runners]
            phases = [(f"{n} alone", [n]) for n in names] + [("together", names)]
            figures: dict[str, dict[str, dict]] = {n: {} for n in names}
            with progress_bars(console) as progress:
                for label, on in phases:
                    task = progress.add_task(f"{pace}: {label}", total=seconds)
                    for r in pipeline.runners:
                        r.set_enabled(r.name in on)
                    time.sleep(warmup_s)
                    marks = {n: collectors[n].count for n in on}
                    busy = {n: pipeline.runner(n).metrics for n in on}
                    for m in busy.values():
                        m.reset()
                    t0 = time.monotonic()
                    while (elapsed := time.monotonic() - t0) < seconds:
                        progress.update(task, completed=elapsed)
                        progress.draw()
                        time.sleep(0.2)
                    progress.update(task, completed=seconds)
                    for n in on:
                        runner = pipeline.runner(n)
                        figures[n]["together" if label == "together" else "alone"] = _phase_figures(
                            collectors[n].since(marks[n]), runner.metrics, runner.metrics.snapshot())
            result["paces"][pace] = _pace_entry(pace, pipeline, figures)
        finally:
            pipeline.stop()
    result["checks"] = concurrent_report.concurrent_checks(result)
    write_folder(out, concurrent_report.concurrent_files(result))
    console.print(_concurrent_table(result))
    return result


def _phase_figures(measured, metrics, snap: EngineSnapshot) -> dict:
    """One engine's figures over one phase: delivered FPS, capacity (frames per busy second),
    busy share, latency percentiles from capture, frames skipped, its process's GPU memory."""
    lat = LatencyStats.of(measured.latency_ms)
    span = measured.wall_s
    capacity = measured.capacity_fps
    busy_s = measured.frames / capacity if capacity else None
    return {
        "frames": measured.frames,
        "fps": measured.fps,
        "capacity_fps": capacity,
        "busy_pct": 100.0 * min(1.0, busy_s / span) if busy_s and span else None,
        "p50_ms": lat.p50 if lat else None,
        "p95_ms": lat.p95 if lat else None,
        "p99_ms": lat.p99 if lat else None,
        "skipped": int(measured.skipped.sum()),
        "gpu_mem_mib": snap.memory.process_mib,
        "gpu_mem": snap.memory.as_dict(),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _pace_entry(pace: str, pipeline, figures: dict[str, dict[str, dict]]) -> dict:
    what = {"realtime": "The feed plays at its own rate, as a camera delivers it: an engine that keeps up delivers "
                        "that rate, so capacity (frames per busy second) shows the difference.",
            "max": "The feed is decoded as fast as the fastest engine takes frames; each engine takes the newest, "
                   "so delivered FPS differ by the true ratio."}[pace]
    engines = []
    for runner in pipeline.runners:
        f = figures[runner.name]
        a, t = f.get("alone"), f.get("together")
        keys = ("fps", "capacity_fps", "p95_ms", "p99_ms")
        engines.append({"name": runner.name, "role": runner.role.value, "device": runner.info.device,
                        "alone": a, "together": t,
                        "ratios": {k: _ratio(t and t[k], a and a[k]) for k in keys}})
    entry = {"what": what, "engines": engines}
    base = next((e for e in engines if e["role"] == Role.BASELINE.value), None)
    opt = next((e for e in engines if e["role"] == Role.OPTIMIZED.value), None)
    if base and opt:
        entry["capacity_ratio"] = {
            phase: _ratio(opt[phase] and opt[phase]["capacity_fps"], base[phase] and base[phase]["capacity_fps"])
            for phase in ("alone", "together")}
    return entry


def _concurrent_table(report: dict) -> Table:
    table = Table(title="rtmon concurrent: alone vs together")
    for col in ("pace", "engine", "FPS alone", "FPS together", "capacity alone", "capacity together", "P95 alone",
                "P95 together"):
        table.add_column(col, justify="left" if col in ("pace", "engine") else "right")
    for pace, data in report["paces"].items():
        for e in data["engines"]:
            a, t = e["alone"] or {}, e["together"] or {}
            table.add_row(pace, e["name"], fmt(a.get("fps")), fmt(t.get("fps")),
                          fmt(a.get("capacity_fps"), ".0f"), fmt(t.get("capacity_fps"), ".0f"),
                          fmt(a.get("p95_ms"), ".2f"), fmt(t.get("p95_ms"), ".2f"))
    return table


__all__ = ["SCENARIOS", "check_out_dir", "run_bench", "run_concurrent"]
