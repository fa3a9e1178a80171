"""The benchmark reports' plots (matplotlib, drawn off screen): the single-stream latency CDF,
offline throughput against batch size, and multi-stream P99 and drops against camera count."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def latency_cdf(report: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    for e, color in zip(report["engines"], _colors(len(report["engines"])), strict=True):
        lat = np.sort(np.asarray(e.get("latencies_ms") or []))
        if not len(lat):
            continue
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), color=color,
                label=f"{e['name']} ({e['role']}): P99 {np.percentile(lat, 99):.2f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency per frame, handed over → boxes in the main process (ms, log scale)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Single-stream latency CDF")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def offline(report: dict, path: Path) -> None:
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


def capacity(report: dict, path: Path) -> None:
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
