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
   The choice: of the variants within `MAX_DROP` mAP50-95 points of FP32 whose agreement with
   FP32 at IoU ≥ 0.5 is at least `MIN_AGREEMENT`, the one keeping the fewest nodes in FP32 (the
   most of the network in INT8: the deterministic stand-in for "fastest", since timings on a
   shared machine are noisy), then the highest mAP50-95.
2. Calibration set sizes for that choice: the smallest within `SIZE_TOLERANCE` points of the best size.

Timings (median inference per frame) are written beside each row for information only.
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
from rtmon.evaluate import AGREEMENT_IOU, EVAL_CONF, LOOSE_AGREEMENT_IOU, agreement_rate, coco_map
from rtmon.files import write_folder
from rtmon.models import resolve_model
from rtmon.quantize import VALIDATION_SEED_BASE, quantized_onnx, scene_frames, scene_seeds
from rtmon.scene import CLASS_NAMES

METHODS = ("minmax", "entropy", "percentile")
LAYER_SETS = ([], ["output"], ["decode"], ["head"], ["stem", "decode"])
SIZES = (8, 16, 32, 64, 128)
MAX_DROP = 0.5  # mAP50-95 points: half the 1.0, as room for a clip the choice never saw
MIN_AGREEMENT = 0.97  # at IoU 0.5, the bar
SIZE_TOLERANCE = 0.1  # mAP50-95 points
OPERATING_CONF = 0.25


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
            engines_dir: str) -> dict:
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
    return row


def acceptable(row: dict) -> bool:
    return row["drop_points"] <= MAX_DROP and row["agreement_iou50"] >= MIN_AGREEMENT


def choose_variant(rows: list[dict]) -> dict:
    good = [r for r in rows if acceptable(r)]
    if not good:
        return max(rows, key=lambda r: r["mAP50-95"])
    return min(good, key=lambda r: (r["fp32_nodes"], -r["mAP50-95"]))


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
        f"Rule: of the variants within {MAX_DROP} mAP50-95 points of FP32 with ≥ {MIN_AGREEMENT:.0%} of FP32's boxes "
        "found again at IoU ≥ 0.5, the one keeping the fewest nodes in FP32, then the most accurate; then the "
        f"smallest calibration set within {SIZE_TOLERANCE} points of the best size. Inference times are medians on a "
        "shared machine, for information only.", "",
        "## Method × layers kept in FP32", "",
        "| method | FP32 layers | FP32 nodes | mAP50 | mAP50-95 | Δ points | agreement IoU≥0.5 | agreement IoU≥0.9 | inference ms | quantize s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
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
            f"{r['inference_ms_median']:.1f} | {r['quantize_s']:.0f} |")


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
    rows = [variant(model, frames, truth, reference, fp32["mAP50-95"], method, layers, args.frames_calibration,
                    engines_dir) for method in METHODS for layers in LAYER_SETS]
    chosen = choose_variant(rows)
    sizes = [chosen if size == chosen["calibration_frames"] else
             variant(model, frames, truth, reference, fp32["mAP50-95"], chosen["method"], chosen["fp32_layers"], size,
                     engines_dir) for size in SIZES]
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
