"""Benchmark reports: bench.json / bench.md / bench.csv and plots, per scenario (the concurrent
run's report is `rtmon.bench.concurrent_report`). Every figure comes from the measurement;
nothing here computes a number that was not measured, it only divides two measured ones.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtmon.bench import plots
from rtmon.bench.yardstick_markdown import reference_markdown
from rtmon.core import Role
from rtmon.formatting import fmt, fmt_mib
from rtmon.reporting import header_markdown


def _baseline(report: dict) -> dict | None:
    """The baseline's entry: the one whose role is baseline."""
    return next((e for e in report["engines"] if e.get("role") == Role.BASELINE.value), None)


def _lat(e: dict, key: str) -> float | None:
    lat = e.get("latency_ms") or {}
    return lat.get(key)


def reference_for(report: dict, engine: str) -> dict | None:
    """The plain-script row that is `engine`'s yardstick, if the report has one."""
    return next((r for r in report.get("reference") or [] if r["for"] == engine), None)


def add_speedups(report: dict) -> None:
    """Per engine, its FPS against the baseline's and against the plain ultralytics script's
    (the baseline's reference): every speed-up is given against both."""
    base = _baseline(report)
    plain = reference_for(report, base["name"]) if base else None
    for e in report["engines"]:
        fps = e.get("fps")
        e["speedup_vs_baseline"] = fps / base["fps"] if base and base.get("fps") and fps else None
        e["speedup_vs_reference"] = fps / plain["fps"] if plain and plain.get("fps") and fps else None


def warnings(report: dict) -> list[str]:
    """What makes a report's figures suspect, one line each (console, bench.md, bench.json)."""
    out = []
    yard = report.get("yardstick") or {}
    for check in yard.get("checks", []):
        pairs = check.get("paired") or {}
        if not check["pass"]:
            judged = pairs or check  # the ratios the check was judged on
            basis = "round by round, median" if pairs else "whole run"
            out.append(f"yardstick: {check['engine']} is not ultralytics as users run it: FPS "
                       f"{judged['fps_ratio']:.3f}× and P50 {fmt(judged.get('p50_ratio'), '.3f')}× the plain "
                       f"script's ({basis}; allowed: within 3%)")
        open_ = [f"{what} {pairs[f'{key}_ci95'][0]:.3f} to {pairs[f'{key}_ci95'][1]:.3f}"
                 for what, key in (("FPS", "fps"), ("P50", "p50")) if pairs and pairs["decides"][key] is None]
        if open_:
            out.append(f"yardstick: for {check['engine']} the 95% interval of the round-by-round median ratio "
                       f"({'; '.join(open_)}) straddles a 3% bound, so its {'PASS' if check['pass'] else 'FAIL'} "
                       "is not decisive: the machine's noise, or the spread between processes, was too wide for the run's length")
    for ref in report.get("reference") or []:
        if ref.get("drift_pct") is not None and ref["drift_pct"] > 3.0:
            out.append(f"reference for {ref['for']}: the plain script ran {ref['drift_pct']:.1f}% faster in one of its "
                       "segments than in another: the machine's speed changed during the run (the segments alternate with "
                       "the engine's, so both saw the change)")
    if yard.get("checks") and yard.get("baseline_vs_reference") is None:
        out.append("yardstick: the baseline was not measured, so the speed-ups have no yardstick")
    if report.get("scenario") == "single-stream":
        for e in report["engines"]:
            fl = e.get("fps_x_latency") or {}
            if fl.get("value") is not None and not fl.get("ok"):
                out.append(f"{e['name']}: FPS × mean latency = {fl['value']:.3f}, not within 3% of 1: time between "
                           "frames is lost outside the latency")
    report["warnings"] = out
    return out


def best_optimized(report: dict) -> dict | None:
    others = [e for e in report["engines"] if e.get("role") == Role.OPTIMIZED.value and e.get("fps")]
    return max(others, key=lambda e: e["fps"]) if others else None


def comparison_table(report: dict) -> list[str]:
    """The brief's table: the plain script, the baseline, the peer (when measured) and the best
    optimized engine; the optimized engine's improvement against the baseline, the plain
    ultralytics script and the peer."""
    base = _baseline(report)
    best = best_optimized(report)
    peer = next((e for e in report["engines"] if e.get("role") == Role.PEER.value), None)
    if not base or not best:
        return []
    plain = reference_for(report, base["name"])
    cols = [*([("plain ultralytics script", plain)] if plain else []), ("baseline", base),
            *([("peer", peer)] if peer else []), ("optimized", best)]
    against = [("baseline", base), *([("plain script", plain)] if plain else []), *([("peer", peer)] if peer else [])]
    head = " | ".join(f"{role}" + (f" (`{e['name']}`)" if "name" in e and role != "plain ultralytics script" else "")
                      for role, e in cols)
    lines = [f"| | {head} | " + " | ".join(f"optimized vs {who}" for who, _ in against) + " |",
             "|---|" + "---:|" * (len(cols) + len(against))]

    def ratio(a: float | None, b: float | None, word: str) -> str:
        """a / b as "N× faster" (word "") or "N× lower"; below 1 it says the opposite, as a
        reader would: "1.35× slower", "1.35× higher"."""
        if not a or not b:
            return "n/a"
        r = a / b
        if r >= 1:
            return f"{r:.2f}× {word or 'faster'}"
        return f"{1 / r:.2f}× {'higher' if word else 'slower'}"

    lines.append("| FPS | " + " | ".join(fmt(e.get("fps")) for _, e in cols) + " | "
                 + " | ".join(ratio(best["fps"], e.get("fps"), "") for _, e in against) + " |")
    for key, label in (("p50", "P50 latency"), ("p95", "P95 latency"), ("p99", "P99 latency")):
        lines.append(f"| {label} | " + " | ".join(fmt(_lat(e, key), ".2f", " ms") for _, e in cols) + " | "
                     + " | ".join(ratio(_lat(e, key), _lat(best, key), "lower") for _, e in against) + " |")
    om = best.get("gpu_mem_mib")

    def change(other: dict) -> str:
        m = other.get("gpu_mem_mib")
        return "n/a" if m is None or om is None else f"{(om - m) / m * 100:+.0f}%"

    lines.append("| GPU memory (NVML, process) | " + " | ".join(fmt_mib(e.get("gpu_mem_mib")) for _, e in cols) + " | "
                 + " | ".join("n/a" if who == "plain script" else change(e) for who, e in against) + " |")
    return lines


def memory_table(report: dict) -> list[str]:
    lines = ["| engine | process (NVML) | CUDA context (NVML, before loading) | engine's own | PyTorch allocator peak "
             "| allocator reserved |", "|---|---:|---:|---:|---:|---:|"]
    for e in report["engines"]:
        m = e.get("gpu_mem") or {}
        lines.append(f"| {e['name']} | {fmt_mib(m.get('process_mib'))} | {fmt_mib(m.get('context_mib'))} | "
                     f"{fmt_mib(m.get('engine_mib'))} | {fmt_mib(m.get('allocator_peak_mib'))} | "
                     f"{fmt_mib(m.get('allocator_reserved_mib'))} |")
    return lines


def single_stream_markdown(report: dict) -> list[str]:
    lines = ["## Single-stream", "",
             "Frame N+1 is handed over the instant frame N's boxes are back in the main process (MLPerf "
             "SingleStream). Latency = frame handed over (before it is copied into the engine's ring) → its boxes in "
             "the main process, so FPS × mean latency is 1 when no time is lost between frames (checked: within 3%). "
             "VALID: ≥ 1,024 frames over at least the minimum duration; stable: the last three windows' FPS and "
             "mean latency within 10% (perf_analyzer's rule).", "",
             "| engine | role | FPS | mean | std | P50 | P90 | P95 | P99 | max | early-stop P90 | FPS × mean | frames "
             "| valid | stable | optimizations | timing cost |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for e in report["engines"]:
        lat = e.get("latency_ms") or {}
        es = (e.get("early_stopping_p90") or {}).get("estimate_ms")
        valid = "VALID" if e.get("valid") else "not valid: " + "; ".join(e.get("validity", []))
        stab = e.get("stability") or {}
        stable = "stable" if e.get("stable") else f"unstable (spread {fmt(stab.get('spread_pct'), '.0f', '%')})"
        cost = e.get("timing_cost") or {}
        cost_text = fmt(cost.get("cost_ms"), ".3f", " ms") if "cost_ms" in cost else "n/a"
        fl = e.get("fps_x_latency") or {}
        fl_text = "n/a" if fl.get("value") is None else f"{fl['value']:.3f}" + ("" if fl.get("ok") else " ✗")
        lines.append(
            f"| {e['name']} | {e['role']} | {fmt(e['fps'])} | {fmt(lat.get('mean'), '.3f')} | {fmt(lat.get('std'), '.3f')} "
            f"| {fmt(lat.get('p50'), '.3f')} | {fmt(lat.get('p90'), '.3f')} | {fmt(lat.get('p95'), '.3f')} "
            f"| {fmt(lat.get('p99'), '.3f')} | {fmt(lat.get('max'), '.2f')} | {fmt(es, '.3f')} | {fl_text} | {e['frames']} "
            f"| {valid} | {stable} | {', '.join(e.get('optimizations', [])) or '—'} | {cost_text} |")
    lines += ["", "Latencies in ms. Warm-up excluded: " + ", ".join(
        f"{e['name']} {e['warmup']['frames']} frames ({e['warmup']['s']:.1f} s)" + _segment_warmup(e)
        for e in report["engines"]) + ".",
        "", *stages_table(report), "", "![latency CDF](latency_cdf.png)", ""]
    return lines


def stages_table(report: dict) -> list[str]:
    """Where each engine's frame time goes, in ms per frame: the hand-over both ways (the runner)
    and the engine's own stages."""
    lines = ["Where a frame's time goes (mean ms per frame; the hand-over is the frame's way into the engine's "
             "process and its boxes' way back, and, with frames in flight, the time it waited for the engine):", "",
             "| engine | hand-over | to the engine | back | preprocess | inference | postprocess |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in report["engines"]:
        st, legs = e.get("stages_ms") or {}, e.get("handover_legs_ms") or {}
        lines.append(f"| {e['name']} | {fmt(st.get('handover'), '.3f')} | {fmt(legs.get('to_engine'), '.3f')} | "
                     f"{fmt(legs.get('to_main'), '.3f')} | {fmt(st.get('preprocess'), '.3f')} | "
                     f"{fmt(st.get('inference'), '.3f')} | {fmt(st.get('postprocess'), '.3f')} |")
    tails = [e for e in report["engines"] if e.get("stages_p99_ms")]
    if tails:
        lines += ["", "Each stage's own P99 (ms; which stage makes the tail — the P99s of the parts do not add up to "
                  "the frame's; the hand-over's directions with the frames each took over 1 ms):", "",
                  "| engine | hand-over | to the engine | back | preprocess | inference | postprocess | frame |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for e in tails:
            st, lat, legs = e["stages_p99_ms"], e.get("latency_ms") or {}, e.get("handover_legs_ms") or {}
            directions = [_leg_tail(legs, k) for k in ("to_engine", "to_main")]
            lines.append(f"| {e['name']} | {fmt(st.get('handover'), '.3f')} | " + " | ".join(directions) + " | "
                         + " | ".join(fmt(st.get(k), ".3f") for k in ("preprocess", "inference", "postprocess"))
                         + f" | {fmt(lat.get('p99'), '.3f')} |")
    return lines


def _segment_warmup(entry: dict) -> str:
    n = (entry.get("warmup") or {}).get("per_segment")
    return f" and {n} at the start of each of its segments (as its plain script's)" if n else ""


def _leg_tail(legs: dict, leg: str) -> str:
    """One direction's P99, and its frames over 1 ms when any (reports before 2026-12-05: n/a)."""
    p99, over = legs.get(f"{leg}_p99"), legs.get(f"{leg}_over_1ms")
    if p99 is None:
        return "n/a"
    return f"{p99:.3f}" + (f" ({over} over 1 ms)" if over else "")


def offline_markdown(report: dict) -> list[str]:
    batches = sorted({row["batch"] for e in report["engines"] for row in e.get("sweep", [])})
    lines = ["## Offline", "",
             "Every frame is available up front; the engine takes them as fast as it can, with its pipelining, in "
             "micro-batches of each size. Frames/s = frames / (last boxes − first frame taken); batch latency = the "
             "engine's busy time per micro-batch.", "",
             "| engine | " + " | ".join(f"batch {b}" for b in batches) + " | best | optimizations |",
             "|---|" + "---:|" * len(batches) + "---|---|"]
    for e in report["engines"]:
        by_batch = {row["batch"]: row for row in e.get("sweep", [])}
        cells = []
        for b in batches:
            row = by_batch.get(b)
            if row is None or row.get("fps") is None:
                cells.append("—")
            else:
                cells.append(f"{row['fps']:.0f} FPS, {fmt((row.get('latency_ms') or {}).get('p99'), '.1f')} ms P99")
        lines.append(f"| {e['name']} | " + " | ".join(cells) + f" | batch {e['batch']}: {fmt(e['fps'], '.0f')} FPS | "
                     f"{', '.join(e.get('optimizations', [])) or '—'} |")
    lines += ["", "![frames per second vs batch size](offline.png)", ""]
    return lines


def multi_stream_markdown(report: dict) -> list[str]:
    fps = report["camera_fps"]
    lines = ["## Multi-stream capacity", "",
             f"N cameras each deliver a frame every {1000 / fps:.1f} ms on a fixed schedule (phases spread over one "
             f"period); each camera's newest frame waits for the engine, which batches frames of different cameras "
             f"(up to `engine.max_batch`). Latency counts from the frame's scheduled arrival, so time spent queued "
             f"counts. A camera count passes when P99 ≤ {1000 / fps:.1f} ms and ≤ 0.1% of frames are dropped "
             f"(a camera's frame not taken before its next one arrived). Inference capacity on pre-decoded frames.", "",
             "| engine | role | max cameras | trials (cameras: P99 ms, dropped %) |", "|---|---|---:|---|"]
    for e in report["engines"]:
        trials = ", ".join(f"{t['streams']}: {fmt(t['p99_ms'], '.1f')}, {t['drop_pct']:.2f}%{'' if t['passed'] else ' ✗'}"
                           for t in e["curve"])
        more = " (search limit)" if e.get("limit_reached") else ""
        lines.append(f"| {e['name']} | {e['role']} | **{e['max_streams']}**{more} | {trials} |")
    dec = report.get("decoding")
    if dec:
        lines += ["", "### Decoding capacity", "",
                  "| decoder | threads | frames/s | cameras at this rate |", "|---|---:|---:|---:|"]
        for row in dec["rows"]:
            lines.append(f"| {row['decoder']} | {row.get('threads', '')} | {fmt(row.get('fps'), '.0f')} | "
                         f"{fmt(row.get('cameras'), '.0f')} |")
        lines += ["", dec["verdict"]]
    lines += ["", "![capacity curve](capacity.png)", ""]
    return lines


def _cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5] → "0-2, 5"."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def markdown(report: dict) -> str:
    scenario = report["scenario"]
    lines = header_markdown(report, f"rtmon bench ({scenario})")
    lines += [f"- method: {report['policy']}"]
    if report.get("cpus"):
        cpus = report["cpus"]
        lines += [f"- CPUs: rtmon's own threads on {_cpu_list(cpus['main'])}, each measured process (engine, plain "
                  f"script) on {_cpu_list(cpus['measured'])} (bench.cpu_split)"]
    lines += [""]
    for warning in report.get("warnings") or []:
        lines += [f"> **Warning** — {warning}", ""]
    table = comparison_table(report) if scenario != "multi-stream" else []
    if table:
        lines += [f"## Baseline vs optimized ({scenario})", "", *table, ""]
    lines += reference_markdown(report)
    body = {"single-stream": single_stream_markdown, "offline": offline_markdown,
            "multi-stream": multi_stream_markdown}[scenario](report)
    lines += body
    lines += ["## GPU memory per engine", "",
              "Each engine runs in its own process; every counter is that process's own.", "", *memory_table(report), ""]
    notes = [(e["name"], n) for e in report["engines"] for n in e.get("notes", [])]
    if notes:
        lines += ["## Engine notes", "", *[f"- `{name}`: {note}" for name, note in notes], ""]
    return "\n".join(lines)


def write_csv(report: dict, path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scenario", "engine", "role", "backend", "precision", "batch", "fps", "mean_ms", "p50_ms", "p90_ms",
                    "p95_ms", "p99_ms", "handover_ms", "gpu_mem_mib", "context_mib", "engine_mib", "speedup_vs_baseline",
                    "speedup_vs_reference"])
        for e in report["engines"]:
            lat = e.get("latency_ms") or {}
            m = e.get("gpu_mem") or {}
            w.writerow([report["scenario"], e["name"], e.get("role"), e.get("backend"), e.get("precision"), e.get("batch"),
                        e.get("fps"), lat.get("mean"), lat.get("p50"), lat.get("p90"), lat.get("p95"), lat.get("p99"),
                        (e.get("stages_ms") or {}).get("handover"), m.get("process_mib"), m.get("context_mib"),
                        m.get("engine_mib"), e.get("speedup_vs_baseline"), e.get("speedup_vs_reference")])


def _plain(value):
    """NumPy scalars and arrays as the JSON numbers and lists they are."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def bench_files(report: dict) -> dict[str, Callable[[Path], None]]:
    """The report's files and how to write each."""
    def json_file(path: Path) -> None:
        path.write_text(json.dumps(report, indent=1, default=_plain))

    files: dict[str, Callable[[Path], None]] = {
        "bench.json": json_file,
        "bench.md": lambda path: path.write_text(markdown(report)),
        "bench.csv": lambda path: write_csv(report, path),
    }
    plot = {"single-stream": ("latency_cdf.png", plots.latency_cdf), "offline": ("offline.png", plots.offline),
            "multi-stream": ("capacity.png", plots.capacity)}[report["scenario"]]
    files[plot[0]] = lambda path: plot[1](report, path)
    return files
