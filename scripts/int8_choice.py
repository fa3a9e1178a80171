#!/usr/bin/env python3
"""Measure the INT8 calibration choices on validation scenes and write the table that chose
rtmon's defaults (`[int8]` in rtmon/config.py).

    python scripts/int8_choice.py --out docs/benchmarks/cpu-2026-12-01-int8

The validation frames are rendered from seeds `rtmon.quantize.VALIDATION_SEED_BASE` on: neither
the sample clip that `rtmon eval` reports on, nor the calibration scenes, nor the demo
detector's training scenes. Every variant runs through rtmon's own `ort-cpu-int8` engine and is
scored by rtmon's own eval code (`rtmon.evaluate.coco_map`, `agreement_rate`) against the
frames' ground truth and against `ort-cpu` (FP32) on the same frames.

1. Calibration method × layers kept in FP32, with `--frames-calibration` calibration frames.
2. Speed: every variant's network against the FP32 export's, all sessions in one process taking
   turns of `SPEED_BLOCK` frames for `SPEED_ROUNDS` rounds (a turn's first frame not counted: the
   previous session's threads may still be spinning), with one ONNX Runtime thread and then two:
   a variant's speed-up is FP32's median inference time over its own in the same loop, a ratio
   that holds on a machine shared with other jobs (absolute times there do not).
3. The choice: the layer set whose variants are fastest (the median of their one-thread
   speed-ups: which ops run integer depends on the layers, not on the method) among those with a
   variant within `MAX_DROP` mAP50-95 points of FP32 whose agreement with FP32 at IoU ≥ 0.5 is at
   least `MIN_AGREEMENT`; of its variants that qualify, the most accurate. One thread because the
   two-thread ratios move with the other jobs on the machine; both are in the table.
4. Calibration set sizes for that choice: the smallest within `SIZE_TOLERANCE` points of the best size.

The sequential median inference per frame is written beside each row for information only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime

from rtmon import engines
from rtmon.config import load_settings
from rtmon.core import Frame
from rtmon.engines.prepost import preprocess_cpu
from rtmon.evaluate import AGREEMENT_IOU, EVAL_CONF, LOOSE_AGREEMENT_IOU, agreement_rate, coco_map
from rtmon.files import write_folder
from rtmon.models import export_onnx, resolve_model
from rtmon.quantize import VALIDATION_SEED_BASE, quantized_onnx, scene_frames, scene_seeds
from rtmon.scene import CLASS_NAMES

METHODS = ("minmax", "entropy", "percentile")
LAYER_SETS = ([], ["output"], ["decode"], ["head"], ["stem", "decode"], ["silu", "decode"], ["stem", "silu", "decode"])
SIZES = (8, 16, 32, 64, 128)
MAX_DROP = 0.5  # mAP50-95 points: half the 1.0, as room for a clip the choice never saw
MIN_AGREEMENT = 0.97  # at IoU 0.5, the bar
SIZE_TOLERANCE = 0.1  # mAP50-95 points
OPERATING_CONF = 0.25
SPEED_ROUNDS = 8
SPEED_BLOCK = 5
SPEED_THREADS = (1, 2)


def detect(name: str, model, overrides: dict, frames) -> tuple[list, float, tuple[str, ...]]:
    """(per-frame detections at EVAL_CONF, median inference ms, the engine's notes)."""
    settings = load_settings(overrides={"model.conf": EVAL_CONF, **overrides})
    engine = engines.create(name, model, settings)
    engine.load()
    found, inference = [], []
    try:
        for index, (image, _) in enumerate(frames):
            result = engine.infer(Frame(index, image, 0.0))
            found.append(result.detections)
            inference.append(result.stages.inference)
    finally:
        engine.close()
    return found, float(np.median(inference)), engine.info.notes


def scored(detections, truth, reference) -> dict:
    ap50, ap = coco_map(truth, detections, CLASS_NAMES)
    row = {"mAP50": ap50, "mAP50-95": ap}
    if reference is not None:
        ours = [d.above(OPERATING_CONF) for d in detections]
        theirs = [d.above(OPERATING_CONF) for d in reference]
        row["agreement_iou50"] = agreement_rate(theirs, ours, LOOSE_AGREEMENT_IOU)
        row["agreement_iou90"] = agreement_rate(theirs, ours, AGREEMENT_IOU)
    return row


def variant(model, frames, truth, reference, fp32_map: float, method: str, layers: list[str], size: int,
            engines_dir: str) -> tuple[dict, Path]:
    """The variant's scores and the path of its model."""
    overrides = {"paths.engines_dir": engines_dir, "int8.method": method, "int8.fp32_layers": layers,
                 "int8.calibration_frames": size}
    settings = load_settings(overrides=overrides)
    started = time.perf_counter()
    quantized = quantized_onnx(model, Path(engines_dir), settings.model.imgsz, settings.int8, "cpu")
    quantize_s = time.perf_counter() - started
    detections, inference_ms, _ = detect("ort-cpu-int8", model, overrides, frames)  # the model just made
    row = {"method": method, "fp32_layers": layers, "calibration_frames": size,
           "fp32_nodes": len(quantized.key.fp32_nodes), **scored(detections, truth, reference),
           "inference_ms_median": inference_ms, "quantize_s": quantize_s, "notes": list(quantized.notes)}
    row["drop_points"] = (fp32_map - row["mAP50-95"]) * 100
    print(f"{method:10s} {','.join(layers) or 'none':12s} {size:4d}  mAP50-95 {row['mAP50-95']:.4f} "
          f"({-row['drop_points']:+.2f})  agree@0.5 {row['agreement_iou50']:.4f}  {inference_ms:.1f} ms", flush=True)
    return row, quantized.path


def speedups(fp32: Path, models: list[Path], image: np.ndarray, imgsz: int, threads: int) -> list[float]:
    """FP32's median inference time over each model's, the sessions taking turns of SPEED_BLOCK
    frames of `image` for SPEED_ROUNDS rounds (the order rotating each round; a turn's first frame
    not counted), with `threads` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for path in [fp32, *models]]
    feeds = []
    for session in sessions:
        graph_input = session.get_inputs()[0]
        dtype = np.uint8 if graph_input.type == "tensor(uint8)" else np.float32
        feeds.append({graph_input.name: preprocess_cpu(image, imgsz, np.dtype(dtype))[0]})
    times: list[list[float]] = [[] for _ in sessions]
    for session, feed in zip(sessions, feeds, strict=True):
        session.run(None, feed)  # warm-up
    for round_ in range(SPEED_ROUNDS):
        for i in np.roll(np.arange(len(sessions)), round_):
            for frame in range(SPEED_BLOCK):
                started = time.perf_counter()
                sessions[i].run(None, feeds[i])
                if frame:
                    times[i].append(time.perf_counter() - started)
    medians = [float(np.median(t)) for t in times]
    return [medians[0] / m for m in medians[1:]]


def acceptable(row: dict) -> bool:
    return row["drop_points"] <= MAX_DROP and row["agreement_iou50"] >= MIN_AGREEMENT


def layer_set_speed(rows: list[dict], layers: list[str]) -> float:
    return float(np.median([r["speedup_1_thread"] for r in rows if r["fp32_layers"] == layers]))


def choose_variant(rows: list[dict]) -> dict:
    good = [r for r in rows if acceptable(r)]
    if not good:
        return max(rows, key=lambda r: r["mAP50-95"])
    fastest = max({tuple(r["fp32_layers"]) for r in good}, key=lambda layers: layer_set_speed(rows, list(layers)))
    return max((r for r in good if tuple(r["fp32_layers"]) == fastest), key=lambda r: r["mAP50-95"])


def choose_size(rows: list[dict]) -> dict:
    best = max(r["mAP50-95"] for r in rows)
    return min((r for r in rows if (best - r["mAP50-95"]) * 100 <= SIZE_TOLERANCE), key=lambda r: r["calibration_frames"])


def markdown(report: dict) -> str:
    head = report["fp32"]
    lines = [
        f"# INT8 calibration choices ({report['created'][:10]})", "",
        f"Written by `scripts/int8_choice.py` on {report['cpu']} ({report['cores']} cores). "
        f"Validation: {report['validation']['frames']} frames of scenes {report['validation']['seeds']} (neither the "
        "sample clip, nor the calibration scenes, nor the demo detector's training scenes), demo detector, "
        f"engines `ort-cpu` (FP32) and `ort-cpu-int8`. FP32: mAP50 {head['mAP50']:.4f}, mAP50-95 {head['mAP50-95']:.4f}.",
        "",
        f"Rule: a variant qualifies within {MAX_DROP} mAP50-95 points of FP32 with ≥ {MIN_AGREEMENT:.0%} of FP32's "
        "boxes found again at IoU ≥ 0.5; of the layer sets with a qualifying variant, the fastest (the median "
        "one-thread speed-up of its variants), and its most accurate qualifying variant; then the smallest "
        f"calibration set within {SIZE_TOLERANCE} points of the best size.", "",
        f"Speed-up: FP32's median inference time over the variant's, the FP32 export and every variant taking turns "
        f"of {SPEED_BLOCK} frames in one process ({SPEED_ROUNDS} rounds, a turn's first frame not counted; "
        "`session.run` alone, no pre- or post-processing), with one intra-op thread and then two; ratios within one "
        "loop, since absolute times on this shared machine move with the other jobs. The inference ms column is "
        "each variant's sequential median over the validation frames, for information only.", "",
        "## Method × layers kept in FP32", "",
        "| method | FP32 layers | FP32 nodes | mAP50 | mAP50-95 | Δ points | agreement IoU≥0.5 | agreement IoU≥0.9 | "
        "× FP32, 1 thread | × FP32, 2 threads | inference ms | quantize s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["variants"]:
        mark = " **(chosen)**" if r is report["variants"][report["chosen_variant"]] else ""
        lines.append(_row(r, mark))
    lines += ["", f"## Calibration set size ({report['chosen']['method']}, FP32 layers: "
                  f"{', '.join(report['chosen']['fp32_layers']) or 'none'})", "",
              "| frames | FP32 nodes | mAP50 | mAP50-95 | Δ points | agreement IoU≥0.5 | agreement IoU≥0.9 | inference ms | quantize s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["sizes"]:
        mark = " **(chosen)**" if r["calibration_frames"] == report["chosen"]["calibration_frames"] else ""
        lines.append(f"| {r['calibration_frames']}{mark} | {r['fp32_nodes']} | {r['mAP50']:.4f} | {r['mAP50-95']:.4f} | "
                     f"{-r['drop_points']:+.2f} | {r['agreement_iou50']:.2%} | {r['agreement_iou90']:.2%} | "
                     f"{r['inference_ms_median']:.1f} | {r['quantize_s']:.0f} |")
    drops = [-r["drop_points"] for r in report["sizes"]]
    lines += ["", f"Across sizes Δ ranges from {min(drops):+.2f} to {max(drops):+.2f} points, not in the order of the "
                  "sizes: which scenes the frames come from moves mAP50-95 as much as how many there are, so "
                  "differences of this order between rows of either table are not a ranking."]
    chosen = report["chosen"]
    lines += ["", f"**Chosen:** method `{chosen['method']}`, FP32 layers `{chosen['fp32_layers']}`, "
                  f"{chosen['calibration_frames']} calibration frames.", ""]
    return "\n".join(lines)


def _row(r: dict, mark: str) -> str:
    return (f"| {r['method']}{mark} | {', '.join(r['fp32_layers']) or 'none'} | {r['fp32_nodes']} | {r['mAP50']:.4f} | "
            f"{r['mAP50-95']:.4f} | {-r['drop_points']:+.2f} | {r['agreement_iou50']:.2%} | {r['agreement_iou90']:.2%} | "
            f"{r['speedup_1_thread']:.2f}× | {r['speedup_2_threads']:.2f}× | {r['inference_ms_median']:.1f} | "
            f"{r['quantize_s']:.0f} |")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=200, help="validation frames")
    parser.add_argument("--frames-calibration", type=int, default=64, help="calibration frames of step 1")
    parser.add_argument("--engines-dir", help="where the models are made (default: a new temporary folder, so "
                        "that every variant is quantized, and timed, in this run)")
    args = parser.parse_args(argv)
    if args.engines_dir is None:
        with tempfile.TemporaryDirectory(prefix="rtmon-int8-choice-") as tmp:
            return run(args, tmp)
    return run(args, args.engines_dir)


def run(args, engines_dir: str) -> int:
    model = resolve_model("demo", Path(engines_dir))
    frames = list(scene_frames(VALIDATION_SEED_BASE, args.frames))
    truth = [labels for _, labels in frames]
    reference, fp32_ms, _ = detect("ort-cpu", model, {"paths.engines_dir": engines_dir}, frames)
    fp32 = {**scored(reference, truth, None), "inference_ms_median": fp32_ms}
    print(f"fp32 mAP50-95 {fp32['mAP50-95']:.4f} {fp32_ms:.1f} ms", flush=True)
    made = [variant(model, frames, truth, reference, fp32["mAP50-95"], method, layers, args.frames_calibration,
                    engines_dir) for method in METHODS for layers in LAYER_SETS]
    rows = [row for row, _ in made]
    imgsz = load_settings().model.imgsz
    fp32_model = export_onnx(model, Path(engines_dir), imgsz, "fp32")
    for threads in SPEED_THREADS:
        key = "speedup_1_thread" if threads == 1 else f"speedup_{threads}_threads"
        ratios = speedups(fp32_model, [path for _, path in made], frames[0][0], imgsz, threads)
        for row, ratio in zip(rows, ratios, strict=True):
            row[key] = ratio
        print(f"speed-ups, {threads} thread(s): " + ", ".join(
            f"{r['method']}/{','.join(r['fp32_layers']) or 'none'} {r[key]:.2f}" for r in rows), flush=True)
    chosen = choose_variant(rows)
    sizes = [chosen if size == chosen["calibration_frames"] else
             variant(model, frames, truth, reference, fp32["mAP50-95"], chosen["method"], chosen["fp32_layers"], size,
                     engines_dir)[0] for size in SIZES]
    size = choose_size(sizes)
    seeds = scene_seeds(VALIDATION_SEED_BASE, args.frames)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "validation": {"frames": len(frames), "seeds": f"{seeds[0]}…{seeds[-1]}"},
        "rule": {"max_drop_points": MAX_DROP, "min_agreement_iou50": MIN_AGREEMENT, "size_tolerance_points": SIZE_TOLERANCE},
        "fp32": fp32, "variants": rows, "chosen_variant": rows.index(chosen), "sizes": sizes,
        "chosen": {"method": chosen["method"], "fp32_layers": chosen["fp32_layers"],
                   "calibration_frames": size["calibration_frames"]},
    }
    write_folder(args.out, {
        "choice.json": lambda p: p.write_text(json.dumps(report, indent=2) + "\n"),
        "choice.md": lambda p: p.write_text(markdown(report)),
    })
    print(f"chosen: {report['chosen']} -> {args.out}/choice.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
