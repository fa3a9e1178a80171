"""The concurrent run's report (concurrent.json / .md): each engine alone and together on one
feed, and the acceptance rules evaluated on the measured figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rtmon.formatting import fmt, fmt_mib
from rtmon.reporting import header_markdown

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
                      "failures": [] if ok else [f"ratio {fmt(r['alone'], '.2f')} alone vs {fmt(r['together'], '.2f')} together"]}
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
                lines.append(f"| {e['name']} | {e['role']} | {phase} | {fmt(f['fps'])} | {fmt(f['capacity_fps'], '.0f')} "
                             f"| {fmt(f['busy_pct'], '.0f', '%')} | {fmt(f['p50_ms'], '.2f')} | {fmt(f['p95_ms'], '.2f')} "
                             f"| {fmt(f['p99_ms'], '.2f')} | {f['skipped']} | {fmt_mib(f['gpu_mem_mib'])} |")
            r = e["ratios"]
            lines.append(f"| | | together ÷ alone | {fmt(r['fps'], '.2f', '×')} | {fmt(r['capacity_fps'], '.2f', '×')} | "
                         f"| | {fmt(r['p95_ms'], '.2f', '×')} | {fmt(r['p99_ms'], '.2f', '×')} | | |")
        cr = data.get("capacity_ratio")
        if cr:
            lines += ["", f"Optimized ÷ baseline capacity: alone {fmt(cr['alone'], '.2f', '×')}, together "
                          f"{fmt(cr['together'], '.2f', '×')}."]
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
