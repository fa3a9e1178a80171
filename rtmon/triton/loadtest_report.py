"""The load test's report: triton.md (the tables) and triton.png (throughput and P99 against the
number of streams), from the figures `rtmon.triton.loadtest` measured (triton.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtmon.formatting import fmt
from rtmon.reporting import header_markdown


def markdown(report: dict) -> str:
    method, local, versions = report["method"], report["in_process"], report["versions"]
    lines = [
        *header_markdown(report, "rtmon serve under load"),
        f"- PyTriton {versions['pytriton']}, tritonclient {versions['tritonclient']}",
        f"- engine: {local['engine']} ({local['backend']}, {local['precision']}, {local['device']})",
        f"- server: {method['server']}, max batch {method['max_batch']}, queue delay {method['queue_delay_us']} µs",
        f"- streams: {method['streams']}; {method['warmup_s']} s warm-up, then {method['seconds']} s measured per row; "
        f"{method['frames']}",
        f"- figures: {method['figures']}",
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
        ratio = fmt(row["fps"] / base if base else None, ".2f", "×")
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
    return fmt(value, ".2f")


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
    fig.suptitle(f"rtmon serve — {report['in_process']['engine']} on {report['device']['gpu'] or 'CPU'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


