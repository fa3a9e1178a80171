"""The reference rows of a report: ultralytics run as a user runs it, beside rtmon's own engines.

rtmon's `baseline` must be ultralytics out of the box, and `ultralytics-ort` ultralytics' own
ONNX Runtime path. To prove it, `rtmon bench` also runs `plain_predict.py` — a plain
subprocess with no rtmon code on its timed path — on the same decoded frames, in segments that
alternate with the engine it is the yardstick of (reference, engine, reference, …, reference:
`bench.reference_rounds` engine segments), so a machine whose speed drifts during the run
slows both alike; the **yardstick check** compares the engine with it: PASS when its FPS and
P50 latency are within 3% of the plain script's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtmon import engines as registry
from rtmon.errors import UserError
from rtmon.metrics import LatencyStats, throughput_fps
from rtmon.models import ModelRef, export_onnx
from rtmon.processes import children_on, minor_faults

SCRIPT = Path(__file__).with_name("plain_predict.py")


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


class PlainSession:
    """The plain script for `ref`, loaded and warmed up once, then timed segments on request:
    `segment()` between the engine's own segments, so the two alternate on the same machine."""

    READY_TIMEOUT_S = 600.0  # loading ultralytics and the model, the first CUDA kernels, the warm-up

    def __init__(self, ref: Reference, frames: Path, settings, warmup: int, cpus: tuple[int, ...] | None = None,
                 env: dict[str, str] | None = None, script: Path = SCRIPT) -> None:
        m = settings.model
        self.ref = ref
        self.runs: list[dict] = []
        job = {"frames_file": str(frames), "model": str(ref.weights), "imgsz": m.imgsz, "conf": m.conf, "iou": m.iou,
               "max_det": m.max_det, "predict": ref.predict, "warmup": warmup}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(job, fh)
        self._job_path = Path(fh.name)
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the script; close() ends both)
        # env, script: a probe's A/B only (scripts/drift_probe.py)
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", **(env or {})}
        with children_on(cpus):  # the CPUs its engine runs on, where the bench splits them (bench.cpu_split)
            self._proc = subprocess.Popen([sys.executable, str(script), str(self._job_path)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="plain-reference-stdout", daemon=True).start()
        self.facts = self._reply(self.READY_TIMEOUT_S)

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.startswith("{"):
                self._lines.put(line)
        self._lines.put(None)

    def _reply(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise UserError(f"reference: the plain ultralytics script did not answer within {timeout:.0f} s") from None
        if line is None:
            self._proc.wait()
            self._stderr.seek(0)
            last = (self._stderr.read().strip().splitlines() or [f"exit code {self._proc.returncode}"])[-1]
            self.close()
            raise UserError(f"reference: the plain ultralytics script failed ({last[:200]}); --no-reference skips it")
        return json.loads(line)

    def segment(self, frames: int, min_duration_s: float, max_duration_s: float, warmup: int = 0) -> dict:
        """One timed segment: at least `frames` frames and `min_duration_s` (at most `max_duration_s`),
        after `warmup` untimed ones."""
        request = {"frames": frames, "min_duration_s": min_duration_s, "max_duration_s": max_duration_s,
                   "warmup": warmup}
        faults = minor_faults(self._proc.pid)  # before it is asked: it is waiting on its input
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # it died: _reply says why
        out = self._reply(max_duration_s + 120.0)
        after = minor_faults(self._proc.pid)
        calls = warmup + len(out["latencies_ms"])  # read from outside, between its segments: the untimed calls too
        run = {"latencies_ms": out["latencies_ms"], "wall_s": out["wall_s"], "speed_ms": out.get("speed_ms") or [],
               "ultralytics": self.facts["ultralytics"], "device": self.facts["device"],
               "faults_per_frame": (after - faults) / calls if faults is not None and after is not None and calls else None}
        self.runs.append(run)
        return run

    def close(self) -> None:
        """End the script (end of its input) and wait for it; kill it if it does not go."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._job_path.unlink(missing_ok=True)
        self._stderr.close()

    def __enter__(self) -> PlainSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Alternation:
    """Single-stream's reference side, for `rtmon.bench.scenarios.single_stream`: the plain
    script's segments between its engine's, each with the engine's share of the frames and of the
    minimum duration, appended to `runs` with the pair of processes each ran in. `renew()` ends
    the script's process and starts a fresh one for the next pair (the engine's is renewed
    beside it), so the check sees several processes of each side (`rtmon.bench.yardstick`)."""

    def __init__(self, ref: Reference, frames: Path, settings, cpus: tuple[int, ...] | None, runs: list[dict],
                 progress=None) -> None:
        b = settings.bench
        self.rounds, self.processes = b.reference_rounds, b.reference_processes
        segments = math.ceil(b.reference_rounds / b.reference_processes) * b.reference_processes  # as the engine's
        self._share = (math.ceil(b.frames / segments), b.min_duration_s / segments,
                       max(b.max_duration_s, b.min_duration_s), b.segment_warmup)
        self._open = lambda: PlainSession(ref, frames, settings, b.warmup, cpus)
        self._runs, self._progress, self._engine = runs, progress, ref.for_engine
        self._task = progress.add_task(f"reference for {ref.for_engine}", total=None) if progress else None
        self.process = 0
        self._say("loading")
        self._session = self._open()

    def _say(self, what: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"reference for {self._engine} (pair {self.process + 1} of "
                                  f"at least {self.processes}: {what})")
            self._progress.draw(now=True)  # between the engine's segments: nothing is being timed here

    def segment(self, k: int) -> None:
        """The script's next segment (`k`: how many it ran before)."""
        self._say(f"segment {k + 1}")
        run = self._session.segment(*self._share)
        run["process"] = self.process
        self._runs.append(run)
        if self._progress is not None:
            self._progress.update(self._task, completed=k + 1, total=k + 1)

    def renew(self) -> None:
        self._session.close()
        self.process += 1
        self._say("loading")
        self._session = self._open()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Alternation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_summary(run: dict) -> dict:
    """One script segment as the report and the check read it: its FPS, frames, P50, pair of
    processes and page faults per frame."""
    lat = run["latencies_ms"]
    return {"fps": throughput_fps(len(lat), 0.0, run["wall_s"]), "frames": len(lat),
            "p50_ms": float(np.percentile(lat, 50)) if lat else None, "process": run.get("process", 0),
            "faults_per_frame": run.get("faults_per_frame")}


def row(ref: Reference, runs: list[dict]) -> dict:
    """The report's row for `ref` from its segments (alternating with its engine's, so a machine
    that changed speed meanwhile shows as drift): FPS over all segments' frames and wall time,
    percentiles over all their frames."""
    latencies = [v for run in runs for v in run["latencies_ms"]]
    lat = LatencyStats.of(latencies)
    per_run = [run_summary(r) for r in runs]
    fps = [r["fps"] for r in per_run if r["fps"]]
    faults = [r["faults_per_frame"] for r in per_run if r["faults_per_frame"] is not None]
    return {"name": ref.name, "for": ref.for_engine, "fps": throughput_fps(len(latencies), 0.0, sum(r["wall_s"] for r in runs)),
            "latency_ms": lat.as_dict() if lat else None, "frames": len(latencies), "runs": per_run,
            "processes": len({r["process"] for r in per_run}),
            "faults_per_frame": float(np.mean(faults)) if faults else None,
            "drift_pct": 100.0 * (max(fps) - min(fps)) / min(fps) if len(fps) > 1 else None,
            "stages_ms": stage_means(runs, lat.mean if lat else None),
            "segment_latencies_ms": [[round(float(v), 4) for v in r["latencies_ms"]] for r in runs],
            "call": ref.what, "script": "rtmon/bench/plain_predict.py", "ultralytics": runs[0]["ultralytics"],
            "device": runs[0]["device"]}


STAGES = ("preprocess", "inference", "postprocess")


def stage_means(runs: list[dict], mean_ms: float | None) -> dict | None:
    """ultralytics' own stage times of the plain script (mean ms per frame), and `outside`: the
    rest of each `predict` call (its setup, the Results) — the figures to set beside the engine's."""
    speeds = [s for run in runs for s in run.get("speed_ms") or []]
    if not speeds:
        return None
    means = dict(zip(STAGES, (float(v) for v in np.mean(np.asarray(speeds, float), axis=0)), strict=True))
    means["outside"] = mean_ms - sum(means.values()) if mean_ms is not None else None
    return means
