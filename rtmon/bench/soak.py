"""`rtmon bench --scenario soak`: a long live run that shows whether anything creeps.

Two phases of `bench.soak_minutes` each, on the live path (`rtmon.pipeline`, each engine in its
own process through the runner, the sources at their own rate and looping):

1. **record**: every engine given (baseline and optimized by default) on the first source, the
   split screen written to an H.264 file, as `rtmon record` does (the file is dropped at the end:
   the run is about what the process does, not the video);
2. **streams**: `bench.soak_streams` copies of the source on the last engine, micro-batched
   across streams (`engine.max_batch` = the stream count).

Every `bench.soak_sample_s` it reads, for the main process and each engine process, resident
memory (psutil), GPU memory (NVML, the engine's own process) and the frames delivered and
dropped so far. The report compares each phase's first minute with its last: resident and GPU
memory, and dropped frames per minute, must agree within 2% (or, for drops, both be under one
frame a minute).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console

from rtmon.files import write_folder
from rtmon.formatting import fmt
from rtmon.models import ModelRef
from rtmon.reporting import header, header_markdown
from rtmon.sources import SourceSpec

FLAT_WITHIN = 0.02  # first vs last minute
QUIET_DROPS_PER_MIN = 1.0  # fewer than this in both minutes: flat too


def run_soak(settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], out: Path,
             console: Console) -> dict:
    b = settings.bench
    live = settings.model_copy(update={"source": settings.source.model_copy(update={"loop": True, "pace": "realtime"})})
    streams = live.model_copy(update={"engine": live.engine.model_copy(update={"max_batch": b.soak_streams})})
    phases = []
    with tempfile.TemporaryDirectory(prefix="rtmon-soak-") as tmp:
        phases.append(_phase("record", [specs[0]], model, live, engines, b, console, Path(tmp) / "split.mp4"))
        phases.append(_phase("streams", [specs[0]] * b.soak_streams, model, streams, [engines[-1]], b, console, None))
    report = {**header(model, specs), "scenario": "soak", "minutes_per_phase": b.soak_minutes,
              "sample_s": b.soak_sample_s, "rule": f"first vs last minute within {FLAT_WITHIN:.0%} (drops: or both "
              f"under {QUIET_DROPS_PER_MIN:g} a minute)", "phases": phases}
    report["pass"] = all(c["flat"] for p in phases for c in p["checks"])
    write_folder(out, {"soak.json": lambda path: path.write_text(json.dumps(report, indent=1)),
                       "soak.md": lambda path: path.write_text(markdown(report)),
                       "soak.png": lambda path: plot(report, path)})
    moved = "; ".join(f"{c['what']} {fmt(c['first'], '.1f')} → {fmt(c['last'], '.1f')}"
                      for p in phases for c in p["checks"] if not c["flat"])
    console.print(f"soak: {'PASS' if report['pass'] else 'FAIL'}" + (f": {moved}" if moved else ""))
    return report


def _phase(name: str, specs: list[SourceSpec], model: ModelRef, settings, engines: list[list[str]], b, console: Console,
           video: Path | None) -> dict:
    from rtmon.pipeline import Pipeline

    pipeline = Pipeline(specs, model, settings, engines)
    samples: list[dict] = []
    try:
        t_load = time.monotonic()
        with console.status(f"soak {name}: loading {', '.join(c[0] for c in engines)} …"):
            pipeline.load_engines_or_raise()
        if not console.is_terminal:  # a log (a cut run keeps what it said)
            console.print(f"soak {name}: loaded in {time.monotonic() - t_load:.1f} s")
        pipeline.start_feed()
        if video is not None:
            pipeline.start_recording(video)
        t0 = time.monotonic()
        end = t0 + b.soak_minutes * 60
        said = 0
        with console.status(f"soak {name}: {b.soak_minutes:g} min") as status:
            while (now := time.monotonic()) < end:
                samples.append(_reading(pipeline, now - t0))
                status.update(f"soak {name}: {(now - t0) / 60:.1f} of {b.soak_minutes:g} min")
                if not console.is_terminal and (now - t0) // 60 > said:
                    said = int((now - t0) // 60)
                    console.print(f"soak {name}: minute {said} of {b.soak_minutes:g}: " + _line(samples[-1]),
                                  highlight=False)
                time.sleep(min(b.soak_sample_s, max(end - time.monotonic(), 0.0)))
            samples.append(_reading(pipeline, time.monotonic() - t0))
    finally:
        if video is not None:
            pipeline.stop_recording()
        pipeline.stop()
    return {"phase": name, "engines": [r.name for r in pipeline.runners], "sources": len(specs), "samples": samples,
            "checks": checks(samples)}


def _line(reading: dict) -> str:
    """One reading, for a log: main RSS, then per engine RSS, GPU memory, frames and drops."""
    parts = [f"main {fmt(reading['main_rss_mib'], '.0f')} MiB"]
    for name, e in reading["engines"].items():
        parts.append(f"{name} {fmt(e['rss_mib'], '.0f')} MiB, GPU {fmt(e['gpu_mib'], '.0f')} MiB, "
                     f"{e['processed']} frames, {e['dropped']} dropped")
    return "; ".join(parts)


def _reading(pipeline, t: float) -> dict:
    main = psutil.Process()
    row = {"t_s": round(t, 2), "main_rss_mib": main.memory_info().rss / 2**20, "engines": {}}
    for runner in pipeline.runners:
        m = runner.metrics
        rss = None
        if runner.pid is not None:
            try:
                rss = psutil.Process(runner.pid).memory_info().rss / 2**20
            except psutil.Error:
                rss = None
        row["engines"][runner.name] = {"rss_mib": rss, "gpu_mib": m.memory.process_mib, "processed": m.processed,
                                       "dropped": m.skipped, "state": str(m.state)}
    return row


def _at(samples: list[dict], t_s: float) -> dict:
    """The reading nearest `t_s`."""
    return min(samples, key=lambda r: abs(r["t_s"] - t_s))


def checks(samples: list[dict]) -> list[dict]:
    """First minute against last minute: memory at the end of each, drops per minute over each."""
    if len(samples) < 2:
        return []
    span = samples[-1]["t_s"]
    minute = min(60.0, span / 2)
    first_end, last_start = _at(samples, minute), _at(samples, span - minute)
    first_start, last_end = samples[0], samples[-1]
    out = [_flat("main process resident memory (MiB)", first_end["main_rss_mib"], last_end["main_rss_mib"])]
    for name in last_end["engines"]:
        e0, e1 = first_end["engines"][name], last_end["engines"][name]
        out.append(_flat(f"{name} resident memory (MiB)", e0["rss_mib"], e1["rss_mib"]))
        if e1["gpu_mib"] is not None:
            out.append(_flat(f"{name} GPU memory (MiB, NVML)", e0["gpu_mib"], e1["gpu_mib"]))
        per_min = 60.0 / max(minute, 1e-9)
        drops_first = (e0["dropped"] - first_start["engines"][name]["dropped"]) * per_min
        drops_last = (e1["dropped"] - last_start["engines"][name]["dropped"]) * per_min
        check = _flat(f"{name} frames dropped per minute", drops_first, drops_last)
        check["flat"] = check["flat"] or max(drops_first, drops_last) < QUIET_DROPS_PER_MIN
        out.append(check)
    return out


def _flat(what: str, first: float | None, last: float | None) -> dict:
    ok = first is not None and last is not None and abs(last - first) <= FLAT_WITHIN * max(abs(first), 1e-9)
    return {"what": what, "first": first, "last": last, "flat": bool(ok)}


def markdown(report: dict) -> str:
    lines = [*header_markdown(report, "rtmon soak"),
             f"- method: two phases of {report['minutes_per_phase']:g} minutes on the live path, a reading every "
             f"{report['sample_s']:g} s; {report['rule']}", "",
             f"**{'PASS' if report['pass'] else 'FAIL'}**", ""]
    for phase in report["phases"]:
        lines += [f"## {phase['phase']}: {', '.join(phase['engines'])} on {phase['sources']} source(s)", "",
                  "| what | first minute | last minute | flat |", "|---|---:|---:|---|"]
        for c in phase["checks"]:
            lines.append(f"| {c['what']} | {fmt(c['first'], '.1f')} | {fmt(c['last'], '.1f')} | "
                         f"{'yes' if c['flat'] else '**no**'} |")
        lines.append("")
    lines += ["![memory and drops over time](soak.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(report["phases"]), figsize=(6 * len(report["phases"]), 8), squeeze=False, sharex="col")
    for col, phase in enumerate(report["phases"]):
        t = [s["t_s"] / 60 for s in phase["samples"]]
        rss, gpu, drops = axes[0][col], axes[1][col], axes[2][col]
        rss.plot(t, [s["main_rss_mib"] for s in phase["samples"]], label="main process")
        for name in phase["engines"]:
            rows = [s["engines"][name] for s in phase["samples"]]
            rss.plot(t, [r["rss_mib"] for r in rows], label=name)
            gpu.plot(t, [r["gpu_mib"] if r["gpu_mib"] is not None else float("nan") for r in rows], label=name)
            drops.plot(t, [r["dropped"] for r in rows], label=name)
        rss.set_title(f"{phase['phase']}: resident memory (MiB)")
        gpu.set_title("GPU memory per engine process (MiB, NVML)")
        if not any(s["engines"][name]["gpu_mib"] is not None for s in phase["samples"] for name in phase["engines"]):
            gpu.text(0.5, 0.5, "no GPU reading: not measured", ha="center", va="center", transform=gpu.transAxes)
            gpu.set_yticks([])
        drops.set_title("frames dropped so far")
        drops.set_xlabel("minutes")
        for ax in (rss, gpu, drops):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
