"""Benchmark reports: bench.json / bench.md / bench.csv and plots, per scenario, and the concurrent
report (concurrent.json / .md). Every figure comes from the measurement; nothing here computes a
number that was not measured, it only divides two measured ones.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtmon.core import Role
from rtmon.gpu import fmt_mib
from rtmon.reporting import header_markdown

BASELINE = "torch-fp32"


def _fmt(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def _lat(e: dict, key: str) -> float | None:
    lat = e.get("latency_ms") or {}
    return lat.get(key)


def add_speedups(report: dict) -> None:
    """speedup_vs_baseline (FPS ratio) and, for the best optimized engine, the headline."""
    base = next((e for e in report["engines"] if e["name"] == BASELINE), None)
    for e in report["engines"]:
        e["speedup_vs_baseline"] = e["fps"] / base["fps"] if base and base.get("fps") and e.get("fps") else None


def best_optimized(report: dict) -> dict | None:
    others = [e for e in report["engines"] if e.get("role") == Role.OPTIMIZED.value and e.get("fps")]
    return max(others, key=lambda e: e["fps"]) if others else None


def comparison_table(report: dict) -> list[str]:
    """The brief's table: baseline vs the best optimized engine (and the peer, when measured)."""
    base = next((e for e in report["engines"] if e["name"] == BASELINE), None)
    best = best_optimized(report)
    peer = next((e for e in report["engines"] if e.get("role") == Role.PEER.value), None)
    if not base or not best:
        return []
    cols = [("baseline", base), *([("peer", peer)] if peer else []), ("optimized", best)]
    head = " | ".join(f"{role} (`{e['name']}`)" for role, e in cols)
    lines = [f"| | {head} | improvement vs baseline |" + (" improvement vs peer |" if peer else ""),
             "|---|" + "---:|" * (len(cols) + 1 + bool(peer))]

    def row(label: str, values: list[str], vs_base: str, vs_peer: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(values) + f" | {vs_base} |" + (f" {vs_peer} |" if peer else ""))

    def ratio(a: float | None, b: float | None, word: str) -> str:
        return "n/a" if not a or not b else f"{a / b:.2f}× {word}".strip()

    row("FPS", [_fmt(e["fps"]) for _, e in cols], ratio(best["fps"], base["fps"], ""),
        ratio(best["fps"], peer["fps"], "") if peer else "")
    for key, label in (("p95", "P95 latency"), ("p99", "P99 latency")):
        values = [_fmt(_lat(e, key), ".2f", " ms") for _, e in cols]
        row(label, values, ratio(_lat(base, key), _lat(best, key), "lower"),
            ratio(_lat(peer, key), _lat(best, key), "lower") if peer else "")
    mem = [e.get("gpu_mem_mib") for _, e in cols]
    bm, om = base.get("gpu_mem_mib"), best.get("gpu_mem_mib")
    change = "n/a" if bm is None or om is None else f"{(om - bm) / bm * 100:+.0f}%"
    pm = peer.get("gpu_mem_mib") if peer else None
    peer_change = "n/a" if pm is None or om is None else f"{(om - pm) / pm * 100:+.0f}%"
    row("GPU memory (NVML, process)", [fmt_mib(m) for m in mem], change, peer_change if peer else "")
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
             "Frame N+1 is handed over when frame N's boxes are on the host (MLPerf SingleStream). Latency = "
             "frame handed over → boxes on the host. VALID: ≥ 1,024 frames over at least the minimum duration; "
             "stable: the last three windows' FPS and mean latency within 10% (perf_analyzer's rule).", "",
             "| engine | role | FPS | mean | std | P50 | P90 | P95 | P99 | max | early-stop P90 | frames | valid | stable "
             "| optimizations | timing cost |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for e in report["engines"]:
        lat = e.get("latency_ms") or {}
        es = (e.get("early_stopping_p90") or {}).get("estimate_ms")
        valid = "VALID" if e.get("valid") else "not valid: " + "; ".join(e.get("validity", []))
        stab = e.get("stability") or {}
        stable = "stable" if e.get("stable") else f"unstable (spread {_fmt(stab.get('spread_pct'), '.0f', '%')})"
        cost = e.get("timing_cost") or {}
        cost_text = _fmt(cost.get("cost_ms"), ".3f", " ms") if "cost_ms" in cost else "n/a"
        lines.append(
            f"| {e['name']} | {e['role']} | {_fmt(e['fps'])} | {_fmt(lat.get('mean'), '.2f')} | {_fmt(lat.get('std'), '.2f')} "
            f"| {_fmt(lat.get('p50'), '.2f')} | {_fmt(lat.get('p90'), '.2f')} | {_fmt(lat.get('p95'), '.2f')} "
            f"| {_fmt(lat.get('p99'), '.2f')} | {_fmt(lat.get('max'), '.2f')} | {_fmt(es, '.2f')} | {e['frames']} "
            f"| {valid} | {stable} | {', '.join(e.get('optimizations', [])) or '—'} | {cost_text} |")
    lines += ["", "Latencies in ms. Warm-up excluded: " + ", ".join(
        f"{e['name']} {e['warmup']['frames']} frames ({e['warmup']['s']:.1f} s)" for e in report["engines"]) + ".",
        "", "![latency CDF](latency_cdf.png)", ""]
    return lines


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
                cells.append(f"{row['fps']:.0f} FPS, {_fmt((row.get('latency_ms') or {}).get('p99'), '.1f')} ms P99")
        lines.append(f"| {e['name']} | " + " | ".join(cells) + f" | batch {e['batch']}: {_fmt(e['fps'], '.0f')} FPS | "
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
        trials = ", ".join(f"{t['streams']}: {_fmt(t['p99_ms'], '.1f')}, {t['drop_pct']:.2f}%{'' if t['passed'] else ' ✗'}"
                           for t in e["curve"])
        more = " (search limit)" if e.get("limit_reached") else ""
        lines.append(f"| {e['name']} | {e['role']} | **{e['max_streams']}**{more} | {trials} |")
    dec = report.get("decoding")
    if dec:
        lines += ["", "### Decoding capacity", "",
                  "| decoder | threads | frames/s | cameras at this rate |", "|---|---:|---:|---:|"]
        for row in dec["rows"]:
            lines.append(f"| {row['decoder']} | {row.get('threads', '')} | {_fmt(row.get('fps'), '.0f')} | "
                         f"{_fmt(row.get('cameras'), '.0f')} |")
        lines += ["", dec["verdict"]]
    lines += ["", "![capacity curve](capacity.png)", ""]
    return lines


def markdown(report: dict) -> str:
    scenario = report["scenario"]
    lines = header_markdown(report, f"rtmon bench ({scenario})")
    lines += [f"- method: {report['policy']}", ""]
    table = comparison_table(report) if scenario != "multi-stream" else []
    if table:
        lines += [f"## Baseline vs optimized ({scenario})", "", *table, ""]
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
                    "p95_ms", "p99_ms", "gpu_mem_mib", "context_mib", "engine_mib", "speedup_vs_baseline"])
        for e in report["engines"]:
            lat = e.get("latency_ms") or {}
            m = e.get("gpu_mem") or {}
            w.writerow([report["scenario"], e["name"], e.get("role"), e.get("backend"), e.get("precision"), e.get("batch"),
                        e.get("fps"), lat.get("mean"), lat.get("p50"), lat.get("p90"), lat.get("p95"), lat.get("p99"),
                        m.get("process_mib"), m.get("context_mib"), m.get("engine_mib"), e.get("speedup_vs_baseline")])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_latency_cdf(report: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    for e, color in zip(report["engines"], _colors(len(report["engines"])), strict=True):
        lat = np.sort(np.asarray(e.get("latencies_ms") or []))
        if not len(lat):
            continue
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), color=color,
                label=f"{e['name']} ({e['role']}): P99 {np.percentile(lat, 99):.2f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency per frame, handed over → boxes on the host (ms, log scale)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Single-stream latency CDF")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_offline(report: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for e, color in zip(report["engines"], _colors(len(report["engines"])), strict=True):
        rows = [r for r in e.get("sweep", []) if r.get("fps")]
        if rows:
            ax.plot([r["batch"] for r in rows], [r["fps"] for r in rows], "o-", color=color, label=e["name"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("micro-batch size")
    ax.set_ylabel("frames per second (decoded host frames → boxes)")
    ax.set_title("Offline throughput vs batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_capacity(report: dict, path: Path) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6.5), dpi=120, sharex=True)
    for e, color in zip(report["engines"], _colors(len(report["engines"])), strict=True):
        curve = e["curve"]
        xs = [t["streams"] for t in curve]
        a1.plot(xs, [t["p99_ms"] if t["p99_ms"] is not None else np.nan for t in curve], "o-", color=color, label=e["name"])
        a2.plot(xs, [t["drop_pct"] for t in curve], "o-", color=color, label=e["name"])
    period = 1000 / report["camera_fps"]
    a1.axhline(period, color="grey", ls="--", label=f"one frame period ({period:.1f} ms)")
    a2.axhline(0.1, color="grey", ls="--", label="0.1% dropped")
    a1.set_yscale("log")
    a1.set_ylabel("P99 latency from arrival (ms)")
    a2.set_ylabel("frames dropped (%)")
    a2.set_xlabel("cameras")
    a2.set_xscale("log", base=2)
    for ax in (a1, a2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Capacity at {report['camera_fps']:g} fps per camera")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bench_files(report: dict) -> dict[str, Callable[[Path], None]]:
    """The report's files and how to write each."""
    def json_file(path: Path) -> None:
        path.write_text(json.dumps(report, indent=1))

    files: dict[str, Callable[[Path], None]] = {
        "bench.json": json_file,
        "bench.md": lambda path: path.write_text(markdown(report)),
        "bench.csv": lambda path: write_csv(report, path),
    }
    plot = {"single-stream": ("latency_cdf.png", plot_latency_cdf), "offline": ("offline.png", plot_offline),
            "multi-stream": ("capacity.png", plot_capacity)}[report["scenario"]]
    files[plot[0]] = lambda path: plot[1](report, path)
    return files


# ---- concurrent ------------------------------------------------------------------------------------


CHECKS = {
    "realtime": "each engine's P95 together within 15% (or 0.5 ms) of alone, and its capacity within 15%",
    "max": "optimized/baseline capacity ratio together within 20% of the same ratio alone",
}


def concurrent_checks(report: dict) -> dict[str, dict]:
    """The issue's acceptance rules, evaluated on the measured figures."""
    out = {}
    rt = report["paces"].get("realtime")
    if rt:
        failures = []
        for e in rt["engines"]:
            a, t = e["alone"], e["together"]
            if a["p95_ms"] is None or t["p95_ms"] is None or a["capacity_fps"] is None or t["capacity_fps"] is None:
                failures.append(f"{e['name']}: not measured")
                continue
            if abs(t["p95_ms"] - a["p95_ms"]) > max(0.15 * a["p95_ms"], 0.5):
                failures.append(f"{e['name']} P95 {a['p95_ms']:.2f} → {t['p95_ms']:.2f} ms")
            if abs(t["capacity_fps"] - a["capacity_fps"]) > 0.15 * a["capacity_fps"]:
                failures.append(f"{e['name']} capacity {a['capacity_fps']:.0f} → {t['capacity_fps']:.0f} FPS")
        out["realtime"] = {"rule": CHECKS["realtime"], "passed": not failures, "failures": failures}
    mx = report["paces"].get("max")
    if mx and mx.get("capacity_ratio"):
        r = mx["capacity_ratio"]
        ok = r["alone"] is not None and r["together"] is not None and abs(r["together"] - r["alone"]) <= 0.2 * r["alone"]
        out["max"] = {"rule": CHECKS["max"], "passed": ok,
                      "failures": [] if ok else [f"ratio {_fmt(r['alone'], '.2f')} alone vs {_fmt(r['together'], '.2f')} together"]}
    return out


def concurrent_markdown(report: dict) -> str:
    lines = header_markdown(report, "rtmon concurrent run")
    mps = ("on: kernels of the engine processes run at the same time" if report.get("mps") else
           "off: the engine processes' CUDA contexts take turns on the GPU (time-slicing)")
    lines += [f"- method: {report['policy']}", f"- NVIDIA MPS: {mps}", ""]
    for pace, data in report["paces"].items():
        lines += [f"## Pace: {pace}", "", data["what"], "",
                  "| engine | role | | delivered FPS | capacity FPS | busy | P50 ms | P95 ms | P99 ms | skipped | GPU mem |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for e in data["engines"]:
            for phase in ("alone", "together"):
                f = e[phase]
                lines.append(f"| {e['name']} | {e['role']} | {phase} | {_fmt(f['fps'])} | {_fmt(f['capacity_fps'], '.0f')} "
                             f"| {_fmt(f['busy_pct'], '.0f', '%')} | {_fmt(f['p50_ms'], '.2f')} | {_fmt(f['p95_ms'], '.2f')} "
                             f"| {_fmt(f['p99_ms'], '.2f')} | {f['skipped']} | {fmt_mib(f['gpu_mem_mib'])} |")
            r = e["ratios"]
            lines.append(f"| | | together ÷ alone | {_fmt(r['fps'], '.2f', '×')} | {_fmt(r['capacity_fps'], '.2f', '×')} | "
                         f"| | {_fmt(r['p95_ms'], '.2f', '×')} | {_fmt(r['p99_ms'], '.2f', '×')} | | |")
        cr = data.get("capacity_ratio")
        if cr:
            lines += ["", f"Optimized ÷ baseline capacity: alone {_fmt(cr['alone'], '.2f', '×')}, together "
                          f"{_fmt(cr['together'], '.2f', '×')}."]
        lines.append("")
    lines += ["## Checks", ""]
    for pace, check in report["checks"].items():
        verdict = "PASS" if check["passed"] else "FAIL: " + "; ".join(check["failures"])
        lines.append(f"- {pace}: {check['rule']} — **{verdict}**")
    return "\n".join(lines) + "\n"


def concurrent_files(report: dict) -> dict[str, Callable[[Path], None]]:
    return {
        "concurrent.json": lambda path: path.write_text(json.dumps(report, indent=1)),
        "concurrent.md": lambda path: path.write_text(concurrent_markdown(report)),
    }
