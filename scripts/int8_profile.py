#!/usr/bin/env python3
"""Where the inference time of `ort-cpu` (FP32) and `ort-cpu-int8` goes, op type by op type:
ONNX Runtime's own profiler on both networks, with one intra-op thread and then two.

    python scripts/int8_profile.py --out docs/benchmarks/cpu-2026-12-01-int8/profile

Both networks are the ones the engines run (the FP32 export, the INT8 model of the `[int8]`
settings), on the first validation frame of `scripts/int8_choice.py`. Their sessions live in one
process and take turns, `BLOCK` frames at a time, so that the other jobs of a shared machine weigh
on both alike; the first frame of each turn is not counted, since the other session's threads may
still be spinning then. Every figure is a median over the counted frames: an op type's time is the
sum of its nodes' kernel times in one frame (ONNX Runtime's `*_kernel_time` events), a network's
time the wall-clock time of `session.run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime

from rtmon.config import load_settings
from rtmon.engines.prepost import preprocess_cpu
from rtmon.files import write_folder
from rtmon.models import export_onnx, resolve_model
from rtmon.quantize import VALIDATION_SEED_BASE, quantized_onnx, scene_frames

THREADS = (1, 2)
TURNS = 12
BLOCK = 6  # frames a session runs in one turn; the first is not counted
SHOWN = 14  # op types listed one by one; the rest are summed in one row


def _session(path: Path, threads: int, prefix: str):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_times(profile: Path, counted: list[bool]) -> list[dict[str, float]]:
    """Per counted run, milliseconds per op type."""
    events = json.loads(profile.read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    per_run: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    starts = np.array([start for start, _ in runs])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
            if i >= 0 and e["ts"] <= runs[i][1]:
                per_run[i][e["args"]["op_name"]] += e["dur"] / 1000
    return [run for run, keep in zip(per_run, counted, strict=True) if keep]


def profile(models: dict[str, Path], image: np.ndarray, imgsz: int, threads: int, tmp: Path) -> dict:
    sessions = {name: _session(path, threads, str(tmp / f"{name}-{threads}")) for name, path in models.items()}
    feeds = {}
    for name, session in sessions.items():
        graph_input = session.get_inputs()[0]
        dtype = np.dtype(np.uint8 if graph_input.type == "tensor(uint8)" else np.float32)
        feeds[name] = {graph_input.name: preprocess_cpu(image, imgsz, dtype)[0]}
    wall: dict[str, list[float]] = {name: [] for name in sessions}
    counted: dict[str, list[bool]] = {name: [] for name in sessions}
    for turn in range(TURNS + 1):  # turn 0 warms up
        for name, session in sessions.items():
            for frame in range(BLOCK):
                started = time.perf_counter()
                session.run(None, feeds[name])
                wall[name].append((time.perf_counter() - started) * 1000)
                counted[name].append(turn > 0 and frame > 0)
    result = {}
    for name, session in sessions.items():
        runs = _op_times(Path(session.end_profiling()), counted[name])
        ops = sorted({op for run in runs for op in run})
        kept = [ms for ms, keep in zip(wall[name], counted[name], strict=True) if keep]
        result[name] = {"wall_ms": float(np.median(kept)),
                        "kernels_ms": float(np.median([sum(run.values()) for run in runs])),
                        "ops_ms": {op: float(np.median([run.get(op, 0.0) for run in runs])) for op in ops}}
    return result


def markdown(report: dict) -> str:
    names = list(report["models"])
    columns = [(name, t) for t in THREADS for name in names]
    ops = sorted({op for t in THREADS for name in names for op in report["threads"][str(t)][name]["ops_ms"]},
                 key=lambda op: -max(report["threads"][str(t)][name]["ops_ms"].get(op, 0.0)
                                     for t in THREADS for name in names))
    head = " | ".join(f"`{name}` {t} thread{'s' if t > 1 else ''}" for name, t in columns)
    lines = [f"# Where the inference time goes ({report['created'][:10]})", "",
             f"Written by `scripts/int8_profile.py` on {report['cpu']} ({report['cores']} cores), onnxruntime "
             f"{report['onnxruntime']}. ONNX Runtime's profiler on the networks of `ort-cpu` "
             f"({report['models'][names[0]]}) and `ort-cpu-int8` ({report['models'][names[1]]}), both sessions in one "
             f"process, taking turns of {BLOCK} frames on one validation frame ({TURNS * (BLOCK - 1)} counted frames "
             "each: not a turn's first, when the other session's threads may still spin); medians per frame, in ms. "
             "Op types are those of the graph ONNX Runtime runs after its optimizations (FP32's convolutions are "
             "fused NCHWc `Conv`s; INT8's `QLinearConv`s run on NHWC bytes).", "",
             f"| op type | {head} |", "|---" + "|---:" * len(columns) + "|"]

    def cell(name: str, t: int, op: str) -> str:
        value = report["threads"][str(t)][name]["ops_ms"].get(op)
        return "" if value is None else f"{value:.2f}"

    for op in ops[:SHOWN]:
        lines.append(f"| {op} | " + " | ".join(cell(name, t, op) for name, t in columns) + " |")
    rest = [" | ".join(f"{sum(report['threads'][str(t)][name]['ops_ms'].get(op, 0.0) for op in ops[SHOWN:]):.2f}"
                       for name, t in columns)]
    lines.append(f"| {len(ops) - SHOWN} other op types | {rest[0]} |")
    lines.append("| **all kernels** | " + " | ".join(f"**{report['threads'][str(t)][name]['kernels_ms']:.2f}**"
                                                    for name, t in columns) + " |")
    lines.append("| `session.run`, wall clock | " + " | ".join(f"{report['threads'][str(t)][name]['wall_ms']:.2f}"
                                                             for name, t in columns) + " |")
    for t in THREADS:
        fp32, int8 = (report["threads"][str(t)][name]["wall_ms"] for name in names)
        lines.append("")
        lines.append(f"With {t} thread{'s' if t > 1 else ''}: INT8 runs the network {fp32 / int8:.2f}× as fast as FP32 "
                     "(wall clock of `session.run`, same loop).")
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    engines_dir = Path(settings.paths.engines_dir)
    imgsz = settings.model.imgsz
    model = resolve_model("demo", engines_dir)
    models = {"ort-cpu": export_onnx(model, engines_dir, imgsz, "fp32"),
              "ort-cpu-int8": quantized_onnx(model, engines_dir, imgsz, settings.int8, "cpu").path}
    image, _ = next(iter(scene_frames(VALIDATION_SEED_BASE, 1)))
    with tempfile.TemporaryDirectory(prefix="rtmon-int8-profile-") as tmp:
        threads = {str(t): profile(models, image, imgsz, t, Path(tmp)) for t in THREADS}
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": _cpu(),
              "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
              "models": {name: path.name for name, path in models.items()}, "frames": TURNS * (BLOCK - 1),
              "threads": threads}
    write_folder(args.out, {
        "profile.json": lambda p: p.write_text(json.dumps(report, indent=2) + "\n"),
        "profile.md": lambda p: p.write_text(markdown(report)),
    })
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
