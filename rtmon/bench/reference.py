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
import itertools
import json
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
from rtmon.processes import children_on

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


class PlainSession:
    """The plain script for `ref`, loaded and warmed up once, then timed segments on request:
    `segment()` between the engine's own segments, so the two alternate on the same machine."""

    READY_TIMEOUT_S = 600.0  # loading ultralytics and the model, the first CUDA kernels, the warm-up

    def __init__(self, ref: Reference, frames: Path, settings, warmup: int, cpus: tuple[int, ...] | None = None) -> None:
        m = settings.model
        self.ref = ref
        self.runs: list[dict] = []
        job = {"frames_file": str(frames), "model": str(ref.weights), "imgsz": m.imgsz, "conf": m.conf, "iou": m.iou,
               "max_det": m.max_det, "predict": ref.predict, "warmup": warmup}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(job, fh)
        self._job_path = Path(fh.name)
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the script; close() ends both)
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
        with children_on(cpus):  # the CPUs its engine runs on, where the bench splits them (bench.cpu_split)
            self._proc = subprocess.Popen([sys.executable, str(SCRIPT), str(self._job_path)], stdin=subprocess.PIPE,
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
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # it died: _reply says why
        out = self._reply(max_duration_s + 120.0)
        run = {"latencies_ms": out["latencies_ms"], "wall_s": out["wall_s"], "speed_ms": out.get("speed_ms") or [],
               "ultralytics": self.facts["ultralytics"], "device": self.facts["device"]}
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


def row(ref: Reference, runs: list[dict]) -> dict:
    """The report's row for `ref` from its segments (alternating with its engine's, so a machine
    that changed speed meanwhile shows as drift): FPS over all segments' frames and wall time,
    percentiles over all their frames."""
    latencies = [v for run in runs for v in run["latencies_ms"]]
    lat = LatencyStats.of(latencies)
    per_run = [{"fps": throughput_fps(len(r["latencies_ms"]), 0.0, r["wall_s"]), "frames": len(r["latencies_ms"]),
                "p50_ms": float(np.percentile(r["latencies_ms"], 50))} for r in runs]
    fps = [r["fps"] for r in per_run if r["fps"]]
    return {"name": ref.name, "for": ref.for_engine, "fps": throughput_fps(len(latencies), 0.0, sum(r["wall_s"] for r in runs)),
            "latency_ms": lat.as_dict() if lat else None, "frames": len(latencies), "runs": per_run,
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


def stages_beside(engine: dict, ref: dict) -> dict | None:
    """Stage by stage, the engine against its plain script (mean ms per frame): ultralytics' own
    three stages, the rest of the frame inside the engine's process (`outside`: the rest of
    `predict` and getting the boxes out), and the hand-over, which the plain script does not have."""
    mine, theirs = engine.get("stages_ms") or {}, ref.get("stages_ms") or {}
    mean = (engine.get("latency_ms") or {}).get("mean")
    if not theirs or mean is None or any(mine.get(k) is None for k in (*STAGES, "handover")):
        return None
    outside = mean - mine["handover"] - sum(mine[k] for k in STAGES)
    out = {k: {"engine": mine[k], "reference": theirs[k]} for k in STAGES}
    out["outside"] = {"engine": outside, "reference": theirs.get("outside")}
    out["handover"] = {"engine": mine["handover"], "reference": 0.0}
    out["frame"] = {"engine": mean, "reference": (ref.get("latency_ms") or {}).get("mean")}
    return out


def rounds(engine: dict, ref: dict) -> list[dict]:
    """Segment by segment, the engine's FPS against the mean of the reference segments just
    before and just after it: the same comparison, round by round (a drifting machine shows
    here as ratios that agree while the FPS move)."""
    segments, runs = engine.get("segments") or [], ref.get("runs") or []
    if len(runs) != len(segments) + 1:
        return []
    out = []
    for k, seg in enumerate(segments):
        ref_fps, ref_p50 = (_mean_of(runs[k : k + 2], key) for key in ("fps", "p50_ms"))
        out.append({"engine_fps": seg["fps"], "reference_fps": ref_fps,
                    "fps_ratio": seg["fps"] / ref_fps if seg.get("fps") and ref_fps else None,
                    "engine_p50_ms": seg.get("p50_ms"), "reference_p50_ms": ref_p50,
                    "p50_ratio": seg["p50_ms"] / ref_p50 if seg.get("p50_ms") and ref_p50 else None})
    return out


def undecided(parts: list, runs: list[dict]) -> bool:
    """While the segments alternate: can the check not tell yet? True while either ratio's 95%
    interval straddles a 3% bound (`decided`), judged on the rounds that have the script's
    segments on both sides. `parts`: the engine's segments so far (`Measured`); `runs`: the
    script's (`PlainSession.runs`), one ahead of them."""
    segments = [{"fps": p.fps, "p50_ms": float(np.percentile(p.latency_ms, 50))} for p in parts if p.frames]
    per_run = [{"fps": throughput_fps(len(r["latencies_ms"]), 0.0, r["wall_s"]),
                "p50_ms": float(np.percentile(r["latencies_ms"], 50))} for r in runs if r["latencies_ms"]]
    closed = max(min(len(segments), len(per_run) - 1), 0)  # rounds with a script segment after them too
    pairs = paired(rounds({"segments": segments[:closed]}, {"runs": per_run[:closed + 1]}))
    return pairs is None or any(decided(pairs[f"{k}_ci95"]) is None for k in ("fps", "p50"))


def segment_edges(segments: list[list[float]]) -> dict | None:
    """How a segment's first, second and last timed frames compare with the rest of it: the mean,
    over segments (of 4 frames or more), of each one's latency less its segment's median (ms). A
    side whose first frames pay for having idled through the other side's segment shows here."""
    rows = [np.asarray(seg, float) for seg in segments if len(seg) >= 4]
    if not rows:
        return None
    over = {name: float(np.mean([r[i] - np.median(r) for r in rows])) for name, i in
            (("first_ms", 0), ("second_ms", 1), ("last_ms", -1))}
    return {**over, "segments": len(rows)}


def engine_segments(engine: dict) -> list[list[float]]:
    """The engine's per-frame latencies, segment by segment (where every frame was stored)."""
    lat, segs = engine.get("latencies_ms") or [], engine.get("segments") or []
    if engine.get("latencies_every") != 1 or sum(seg["frames"] for seg in segs) != len(lat):
        return []
    cuts = np.cumsum([0, *(seg["frames"] for seg in segs)])
    return [lat[a:b] for a, b in itertools.pairwise(cuts.tolist())]


def rounds_rule(bench) -> str:
    """How many rounds a single-stream run alternated (`bench`: the bench settings), for the report."""
    decide = " or the check could not yet decide (an interval straddling a 3% bound)" if bench.until_decided else ""
    return (f"Rounds: at least {bench.reference_rounds}, more while the engine was not yet stable{decide}, up to "
            f"{max(bench.max_duration_s, bench.min_duration_s):g} s of the engine's time.")


def _mean_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key)]
    return float(np.mean(values)) if values else None


def paired(by_round: list[dict]) -> dict | None:
    """The medians of the round-by-round FPS and P50 ratios: the comparison a drifting machine
    leaves standing (each pair ran seconds apart, the run as a whole did not), each with its 95%
    bootstrap interval — how precisely this machine could tell. None with fewer than two rounds."""
    fps = [r["fps_ratio"] for r in by_round if r.get("fps_ratio")]
    p50 = [r["p50_ratio"] for r in by_round if r.get("p50_ratio")]
    if len(fps) < 2 or len(p50) < 2:
        return None
    return {"fps_ratio": float(np.median(fps)), "p50_ratio": float(np.median(p50)), "rounds": len(fps),
            "fps_ci95": median_interval(fps), "p50_ci95": median_interval(p50)}


def decided(interval: list[float] | None) -> str | None:
    """What a ratio's 95% interval says about the tolerance: "within" (all of it inside ±3%),
    "outside" (all of it beyond), or None: it straddles a bound, and the run cannot tell."""
    if not interval:
        return None
    lo, hi = interval
    if lo >= 1 - WITHIN and hi <= 1 + WITHIN:
        return "within"
    if hi < 1 - WITHIN or lo > 1 + WITHIN:
        return "outside"
    return None


def median_interval(values: list[float], resamples: int = 2000) -> list[float]:
    """The 95% bootstrap interval of the median of `values` (a fixed seed: the same report gives
    the same interval)."""
    rng = np.random.default_rng(0)
    data = np.asarray(values, float)
    medians = np.median(rng.choice(data, (resamples, len(data))), axis=1)
    return [float(v) for v in np.percentile(medians, [2.5, 97.5])]


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
        by_round = rounds(engine, ref)
        pairs = paired(by_round)
        if pairs:  # what the rounds' 95% intervals say about the 3% bound (None: they cannot tell)
            pairs["decides"] = {k: decided(pairs[f"{k}_ci95"]) for k in ("fps", "p50")}
        judged = pairs or {"fps_ratio": fps_ratio, "p50_ratio": p50_ratio}
        ok = bool(abs(judged["fps_ratio"] - 1) <= WITHIN and judged["p50_ratio"] is not None
                  and abs(judged["p50_ratio"] - 1) <= WITHIN)
        checks.append({"engine": engine["name"], "reference": ref["name"], "fps_ratio": fps_ratio,
                       "p50_ratio": p50_ratio, "paired": pairs, "judged_on": "rounds" if pairs else "whole run",
                       "pass": ok, "rounds": by_round, "stages_ms": stages_beside(engine, ref),
                       "edges": {"engine": segment_edges(engine_segments(engine)),
                                 "reference": segment_edges(ref.get("segment_latencies_ms") or [])}})
    base = next((c for c in checks if registry.is_baseline(c["engine"])), None)
    return {"pass": bool(base and all(c["pass"] for c in checks)),
            "baseline_vs_reference": base,
            "checks": checks,
            "rule": f"an engine's FPS and P50 within {WITHIN:.0%} of the plain ultralytics script's ({scenario}), "
                    "judged on the medians of the round-by-round ratios where the two alternated (each engine "
                    "segment against the script's segments just before and after it), else on the whole run"}
