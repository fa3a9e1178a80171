#!/usr/bin/env python3
"""The optimization ladder per scenario, and the accuracy table, as markdown from rtmon's own files.

    python scripts/ladder.py docs/benchmarks/<gpu>-<date>/single-stream/bench.json [offline/bench.json] [eval.json ...]

Every number comes from the files; only the descriptions of the rungs are written here. Each
engine's "optimizations" column is what the report says it used in that scenario.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNGS = [
    ("torch-fp32", "baseline: ultralytics `predict`, PyTorch FP32, CPU letterbox and NMS"),
    ("ultralytics-ort", "peer: ultralytics' own ONNX export, FP16, on ONNX Runtime CUDA (what a user would do anyway)"),
    ("torch-fp16-cpu", "+ FP16 network (tensor cores); pre/post still on the CPU"),
    ("torch-graph-cpu", "+ CUDA graph: the network replayed as one launch; pre/post still on the CPU"),
    ("torch-graph-sync", "+ pre/post on the GPU: letterbox, network and candidates in one graph, one small copy back"),
    ("torch-graph", "+ pipelining where frames wait (two in flight), micro-batches in the offline scenario"),
    ("torch-graph-compiled", "+ compiled kernels: Inductor fuses the network's layers, inside the same graph"),
    ("ort-cuda", "alternative runtime: ONNX Runtime CUDA, IO binding + CUDA graph, same GPU pre/post"),
    ("trt", "alternative runtime: TensorRT FP16 plan"),
]
ALTERNATIVES = ("ultralytics-ort", "ort-cuda", "trt")
# One frame at a time there is nothing to pipeline: `torch-graph` is the pre/post-on-GPU rung.
SINGLE_STREAM = {"torch-graph": "+ pre/post on the GPU: letterbox, network and candidates in one graph "
                                "(one frame in flight in this scenario)"}


def _num(value, spec: str) -> str:
    return "" if value is None else f"{value:{spec}}"


def ladder(report: dict) -> str:
    by_name = {e["name"]: e for e in report["engines"]}
    scenario = report.get("scenario", "single-stream")
    lines = [f"**{scenario}** ({report['device']['gpu'] or 'CPU'}, {report['created'][:10]})", "",
             "| rung | engine | FPS | P99 ms | × baseline | × previous rung | optimizations used |",
             "|---|---|---:|---:|---:|---:|---|"]
    previous = None
    for name, what in RUNGS:
        if scenario == "single-stream" and "torch-graph-sync" not in by_name:
            what = SINGLE_STREAM.get(name, what)
        e = by_name.get(name)
        if e is None:
            continue
        lat = e.get("latency_ms") or {}
        step = ""
        if previous and name not in ALTERNATIVES and previous.get("fps") and e.get("fps"):
            step = f"{e['fps'] / previous['fps']:.2f}×"
        batch = f" (batch {e['batch']})" if scenario == "offline" else ""
        lines.append(f"| {what} | `{name}` | {_num(e.get('fps'), '.0f')}{batch} | {_num(lat.get('p99'), '.2f')} | "
                     f"{_num(e.get('speedup_vs_baseline'), '.2f')}× | {step} | {', '.join(e.get('optimizations', [])) or '—'} |")
        if name not in ALTERNATIVES:
            previous = e
    return "\n".join(lines)


def accuracy(evals: list[dict]) -> str:
    """One row per engine across `rtmon eval` reports (the baseline once)."""
    rows = ["| engine | mAP50 | mAP50-95 | Δ mAP50-95 vs baseline (points) | baseline boxes found again |",
            "|---|---:|---:|---:|---:|"]
    seen: set[str] = set()
    for report in evals:
        base = next(e for e in report["engines"] if e["agreement_vs_baseline"] is None)
        for e in report["engines"]:
            if e["name"] in seen:
                continue
            seen.add(e["name"])
            delta = "" if e is base else f"{(e['mAP50-95'] - base['mAP50-95']) * 100:+.2f}"
            agree = "" if e["agreement_vs_baseline"] is None else f"{e['agreement_vs_baseline'] * 100:.2f}%"
            rows.append(f"| `{e['name']}` | {e['mAP50']:.4f} | {e['mAP50-95']:.4f} | {delta} | {agree} |")
    return "\n".join(rows)


if __name__ == "__main__":
    reports = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    for report in reports:
        if "scenario" in report:
            print(ladder(report))
            print()
    evals = [r for r in reports if "agreement" in r]
    if evals:
        print(accuracy(evals))
