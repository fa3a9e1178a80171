"""The reference rows of a report: ultralytics run as a user runs it, beside rtmon's own engines.

rtmon's `baseline` must be ultralytics out of the box, and `ultralytics-ort` ultralytics' own
ONNX Runtime path. To prove it, `rtmon bench` also runs `plain_predict.py` — a plain
subprocess with no rtmon code on its timed path — on the same decoded frames, right before and
right after the engine it is the yardstick of, and the **yardstick check** compares the engine
with it: PASS when its FPS and P50 latency are within 3% of the plain script's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtmon import engines as registry
from rtmon.errors import UserError
from rtmon.metrics import LatencyStats, throughput_fps
from rtmon.models import ModelRef, export_onnx

SCRIPT = Path(__file__).with_name("plain_predict.py")
WITHIN = 0.03  # the yardstick's tolerance on FPS and P50


@dataclass(frozen=True)
class Reference:
    """One plain-script run: which weights, how `predict` is called, whose yardstick it is."""

    name: str
    for_engine: str
    weights: Path
    predict: dict = field(default_factory=dict)
    what: str = ""


def references(model: ModelRef, settings) -> list[Reference]:
    """The baseline's reference always; ultralytics' ONNX Runtime FP16 export's where ONNX
    Runtime's CUDA provider is present."""
    out = [Reference("plain ultralytics predict (PyTorch FP32)", registry.BASELINE, Path(model.path), {},
                     "YOLO(weights).predict(frame, imgsz, conf, iou, max_det, rect=False)")]
    if registry.unavailable_reason("ultralytics-ort") is None:
        onnx = export_onnx(model, Path(settings.paths.engines_dir), settings.model.imgsz, "fp16")
        out.append(Reference("plain ultralytics predict (ONNX Runtime CUDA, FP16 export)", "ultralytics-ort", onnx,
                             {"half": True, "device": 0},
                             "YOLO(fp16.onnx).predict(frame, imgsz, conf, iou, max_det, rect=False, half=True, device=0)"))
    return out


def save_frames(pool: list[np.ndarray], folder: Path) -> Path:
    """The decoded frames every engine sees, as one .npy file the plain script loads."""
    path = folder / "frames.npy"
    np.save(path, np.stack(pool))
    return path


def run(ref: Reference, frames: Path, settings, min_frames: int, warmup: int, min_duration_s: float,
        max_duration_s: float) -> dict:
    """Run the plain script for `ref` once: its per-frame latencies and wall time."""
    m = settings.model
    job = {"frames_file": str(frames), "model": str(ref.weights), "imgsz": m.imgsz, "conf": m.conf, "iou": m.iou,
           "max_det": m.max_det, "predict": ref.predict, "warmup": warmup, "frames": min_frames,
           "min_duration_s": min_duration_s, "max_duration_s": max_duration_s}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    job_path = Path(fh.name)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    timeout = max_duration_s + 600
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), str(job_path)], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"reference: the plain ultralytics script did not finish within {timeout:.0f} s") from None
    finally:
        job_path.unlink(missing_ok=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise UserError(f"reference: the plain ultralytics script failed ({last[:200]}); --no-reference skips it")
    out = json.loads(lines[-1])
    return {"latencies_ms": out["latencies_ms"], "wall_s": out["wall_s"], "ultralytics": out["ultralytics"],
            "device": out["device"]}


def row(ref: Reference, runs: list[dict]) -> dict:
    """The report's row for `ref` from its runs (one before its engine and one after, so a
    machine that changed speed in between shows as drift): FPS over all runs' frames and wall
    time, percentiles over all their frames."""
    latencies = [v for run in runs for v in run["latencies_ms"]]
    lat = LatencyStats.of(latencies)
    per_run = [{"fps": throughput_fps(len(r["latencies_ms"]), 0.0, r["wall_s"]), "frames": len(r["latencies_ms"]),
                "p50_ms": float(np.percentile(r["latencies_ms"], 50))} for r in runs]
    fps = [r["fps"] for r in per_run if r["fps"]]
    return {"name": ref.name, "for": ref.for_engine, "fps": throughput_fps(len(latencies), 0.0, sum(r["wall_s"] for r in runs)),
            "latency_ms": lat.as_dict() if lat else None, "frames": len(latencies), "runs": per_run,
            "drift_pct": 100.0 * (max(fps) - min(fps)) / min(fps) if len(fps) > 1 else None,
            "call": ref.what, "script": "rtmon/bench/plain_predict.py", "ultralytics": runs[0]["ultralytics"],
            "device": runs[0]["device"]}


def yardstick(engines: list[dict], refs: list[dict], scenario: str) -> dict:
    """Each engine with a reference against it: FPS and P50 within 3%. `pass` needs the
    baseline's check (and every other one made) to pass."""
    checks = []
    for ref in refs:
        engine = next((e for e in engines if e["name"] == ref["for"]), None)
        if engine is None or not engine.get("fps") or not ref.get("fps"):
            continue
        fps_ratio = engine["fps"] / ref["fps"]
        e50, r50 = (engine.get("latency_ms") or {}).get("p50"), (ref.get("latency_ms") or {}).get("p50")
        p50_ratio = e50 / r50 if e50 and r50 else None
        ok = bool(abs(fps_ratio - 1) <= WITHIN and p50_ratio is not None and abs(p50_ratio - 1) <= WITHIN)
        checks.append({"engine": engine["name"], "reference": ref["name"], "fps_ratio": fps_ratio,
                       "p50_ratio": p50_ratio, "pass": ok})
    base = next((c for c in checks if registry.is_baseline(c["engine"])), None)
    return {"pass": bool(base and all(c["pass"] for c in checks)),
            "baseline_vs_reference": base,
            "checks": checks,
            "rule": f"an engine's FPS and P50 within {WITHIN:.0%} of the plain ultralytics script's ({scenario})"}
