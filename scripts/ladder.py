#!/usr/bin/env python3
"""The optimization ladder, and the accuracy table, as markdown from rtmon's own output files.

    python scripts/ladder.py docs/benchmarks/<gpu>-<date>/bench.json [eval.json ...]

Every number comes from the file; only the descriptions of the rungs are written here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNGS = [
    ("torch-fp32", "baseline: ultralytics `predict`, PyTorch FP32, CPU letterbox and NMS, one frame at a time"),
    ("torch-fp16-cpu", "+ FP16 network (half the bytes, tensor cores); pre/post still on the CPU"),
    ("torch-graph-cpu", "+ CUDA graph: the whole network replayed as one launch; pre/post still on the CPU"),
    ("torch-graph-sync", "+ pre/post on the GPU: letterbox, network and candidate selection in one graph, one small copy back"),
    ("torch-graph", "+ pipelining: upload of frame N+1 overlaps frame N (two frames in flight)"),
    ("torch-graph-compiled", "+ compiled kernels: Inductor fuses the network's layers into fewer, faster kernels, inside the same graph"),
    ("ort-cuda", "alternative runtime: ONNX Runtime CUDA, IO binding + CUDA graph, same GPU pre/post"),
    ("trt", "alternative runtime: TensorRT FP16 plan"),
]


def ladder(report: dict) -> str:
    by_name = {e["name"]: e for e in report["engines"]}
    rows = ["| rung | engine | FPS | mean ms | P99 ms | × baseline | × previous rung |", "|---|---|---:|---:|---:|---:|---:|"]
    previous = None
    for name, what in RUNGS:
        e = by_name.get(name)
        if e is None:
            rows.append(f"| {what} | `{name}` | not run | | | | |")
            continue
        lat = e["latency_ms"]
        step = f"{e['fps'] / previous['fps']:.2f}×" if previous and not name.startswith(("ort", "trt")) else ""
        rows.append(f"| {what} | `{name}` | {e['fps']:.0f} | {lat['mean']:.2f} | {lat['p99']:.2f} | "
                    f"{e['speedup_vs_baseline']:.2f}× | {step} |")
        if not name.startswith(("ort", "trt")):
            previous = e
    return "\n".join(rows)


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
    print(ladder(json.loads(Path(sys.argv[1]).read_text())))
    if len(sys.argv) > 2:
        print()
        print(accuracy([json.loads(Path(p).read_text()) for p in sys.argv[2:]]))
