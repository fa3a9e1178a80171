#!/usr/bin/env python3
"""The optimization ladder per scenario, the accuracy table, and the INT8 rung, as markdown from
rtmon's own files.

    python scripts/ladder.py docs/benchmarks/<gpu>-<date>/single-stream/bench.json [offline/bench.json] [eval.json ...]
    python scripts/ladder.py --int8 docs/benchmarks/cpu-<date>-int8/bench/bench.json docs/benchmarks/cpu-<date>-int8/eval/eval.json

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
    ("torch-graph-sync", "+ pre/post on the GPU: letterbox, network and NMS (fixed shapes) in one graph, one small copy back"),
    ("torch-graph", "+ pipelining where frames wait (two in flight), micro-batches in the offline scenario"),
    ("torch-graph-compiled", "+ compiled kernels: Inductor fuses the network's layers, inside the same graph"),
    ("ort-cuda", "alternative runtime: ONNX Runtime CUDA, IO binding + CUDA graph, same GPU pre/post"),
    ("trt", "alternative runtime: TensorRT FP16 plan"),
]
ALTERNATIVES = ("ultralytics-ort", "ort-cuda", "trt")
# One frame at a time there is nothing to pipeline: `torch-graph` is the pre/post-on-GPU rung.
SINGLE_STREAM = {"torch-graph": "+ pre/post on the GPU: letterbox, network and NMS (fixed shapes) in one graph "
                                "(one frame in flight in this scenario)"}


def _num(value, spec: str) -> str:
    return "" if value is None else f"{value:{spec}}"


def _times(value) -> str:
    return "" if value is None else f"{value:.2f}×"


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
                     f"{_times(e.get('speedup_vs_baseline'))} | {step} | {', '.join(e.get('optimizations', [])) or '—'} |")
        if name not in ALTERNATIVES:
            previous = e
    return "\n".join(lines)


def int8_rung(bench: dict, evaluation: dict, fp32: str = "ort-cpu", int8: str = "ort-cpu-int8") -> str:
    """FP32 and INT8 of one runtime side by side: speed from one `rtmon bench` run, accuracy from
    one `rtmon eval` run on the same source, and what INT8 costs."""
    speed = {e["name"]: e for e in bench["engines"]}
    accurate = {e["name"]: e for e in evaluation["engines"]}
    base = next(e for e in evaluation["engines"] if e["agreement_vs_baseline"] is None)
    lines = [f"**INT8 on the CPU** (bench {bench['scenario']} {bench['created'][:10]}, {bench['device']['cpu_count']} "
             f"cores; eval {evaluation['frames']} frames of `{evaluation['source']['uri']}` {evaluation['created'][:10]})", "",
             "| engine | precision | FPS | × FP32 | P95 ms | P99 ms | inference ms (mean) | mAP50 | mAP50-95 | "
             f"Δ mAP50-95 vs `{fp32}` (points) | `{base['name']}` boxes found again, IoU ≥ 0.5 | IoU ≥ 0.9 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in (base["name"], fp32, int8):
        s, a = speed.get(name), accurate.get(name)
        if a is None:
            continue
        lat, stages = (s or {}).get("latency_ms") or {}, (s or {}).get("stages_ms") or {}
        ratio = f"{s['fps'] / speed[fp32]['fps']:.2f}×" if s and fp32 in speed else ""
        delta = "" if name in (fp32, base["name"]) else f"{(a['mAP50-95'] - accurate[fp32]['mAP50-95']) * 100:+.2f}"
        loose, strict = a.get("agreement_vs_baseline_iou50"), a["agreement_vs_baseline"]
        lines.append(f"| `{name}` | {(s or {}).get('precision', '')} | {_num((s or {}).get('fps'), '.1f')} | {ratio} | "
                     f"{_num(lat.get('p95'), '.2f')} | {_num(lat.get('p99'), '.2f')} | {_num(stages.get('inference'), '.2f')} | "
                     f"{a['mAP50']:.4f} | {a['mAP50-95']:.4f} | {delta} | {_percent(loose)} | {_percent(strict)} |")
    if fp32 in speed and int8 in speed and fp32 in accurate and int8 in accurate:
        ratio = speed[int8]["fps"] / speed[fp32]["fps"]
        cost = (accurate[fp32]["mAP50-95"] - accurate[int8]["mAP50-95"]) * 100
        lines += ["", f"What INT8 costs: {cost:.2f} mAP50-95 points against FP32 on the same frames, for "
                      f"{ratio:.2f}× the frames per second of FP32 in the same run."]
    return "\n".join(lines)


def _percent(share) -> str:
    return "" if share is None else f"{share * 100:.2f}%"


def yardstick_rounds(reports: list[tuple[str, dict]]) -> str:
    """Each report's yardstick checks judged by today's rule (`rtmon.bench.yardstick.yardstick`:
    the medians of the round-by-round ratios, with their 95% intervals and what each interval
    decides), beside what the report said when it was made: the same measured segments, read again."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rtmon.bench.yardstick import yardstick

    lines = ["| report | engine | processes | rounds | FPS ratio, whole run | P50 ratio, whole run | FPS ratio, median of rounds "
             "(95% interval) | P50 ratio, median of rounds (95% interval) | by rounds | as the report said |",
             "|---|---|---:|---:|---:|---:|---|---|---|---|"]
    for name, report in reports:
        said = {c["engine"]: c["pass"] for c in (report.get("yardstick") or {}).get("checks", [])}
        for c in yardstick(report["engines"], report.get("reference") or [], report["scenario"])["checks"]:
            pairs = c["paired"] or {}
            medians = [_median_of_rounds(pairs, key) for key in ("fps", "p50")]
            verdict = ("PASS" if c["pass"] else "FAIL") if pairs else "n/a (not alternated)"
            lines.append(f"| {name} | `{c['engine']}` | {pairs.get('processes', 1) if pairs else 'n/a'} | "
                         f"{pairs.get('rounds', 0)} | {c['fps_ratio']:.3f} | "
                         f"{_num(c['p50_ratio'], '.3f')} | {medians[0]} | {medians[1]} | {verdict} | "
                         f"{'PASS' if said.get(c['engine']) else 'FAIL'} |")
    return "\n".join(lines)


def _median_of_rounds(pairs: dict, key: str) -> str:
    """`0.994 (0.969–1.026: undecided)`: a round-by-round median, its 95% interval, what it decides."""
    if not pairs:
        return "n/a"
    lo, hi = pairs[f"{key}_ci95"]
    says = {"within": "within 3%", "outside": "beyond 3%"}.get(pairs["decides"][key], "undecided")
    return f"{pairs[f'{key}_ratio']:.3f} ({lo:.3f}–{hi:.3f}: {says})"


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
    if sys.argv[1:2] == ["--int8"]:
        bench_report, eval_report = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        print(int8_rung(bench_report, eval_report))
        sys.exit(0)
    reports = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    for report in reports:
        if "scenario" in report:
            print(ladder(report))
            print()
    evals = [r for r in reports if "agreement" in r]
    if evals:
        print(accuracy(evals))
