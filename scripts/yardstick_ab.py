#!/usr/bin/env python3
"""Where does the baseline lose time against plain ultralytics? One factor at a time.

    python scripts/yardstick_ab.py [--seconds 8] [--out ab.json]

On the GPU machine (2026-12-01, H200) `rtmon bench` measured the plain ultralytics script at
116 FPS and rtmon's `baseline` engine at 90 FPS on the same frames, while in one process the
engine class and plain `predict` ran alike (about 120 FPS each). This script times the same
`predict` loop (the demo detector, the sample scene's frames, 640, rect=False) in each setting
that separates a plain script from rtmon's engine process, alternating them twice so a machine
that changes speed shows:

- `plain child`: a spawned multiprocessing child, frames in its own memory;
- `plain child, shm frames`: the same, frames read from shared memory the parent wrote;
- `engine class, child`: rtmon's `UltralyticsEngine.infer` in a spawned child, own memory;
- `rtmon runner`: the engine in its engine process through `rtmon.runner`, closed loop, as
  `rtmon bench --scenario single-stream` runs it, with the engine's spin between frames on
  (the default) and off.

Each row's FPS is frames / (last return − first call), as the bench's reference.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")


def _frames(count: int = 32) -> list[np.ndarray]:
    from rtmon.scene import SAMPLE_SEED, render_scene

    return [image for image, _ in render_scene(SAMPLE_SEED, count * 3, stride=3)]


def _loop(predict, frames, seconds: float) -> dict:
    for i in range(16):
        predict(frames[i % len(frames)])
    lat, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        predict(frames[i % len(frames)])
        lat.append((time.perf_counter() - t) * 1e3)
        i += 1
    wall = time.perf_counter() - t0
    return {"fps": len(lat) / wall, "p50_ms": float(np.median(lat)), "frames": len(lat)}


def _plain_child(conn, weights: str, shm_name: str | None, shape, seconds: float) -> None:
    from ultralytics import YOLO

    if shm_name:
        from multiprocessing import shared_memory

        block = shared_memory.SharedMemory(name=shm_name)
        frames = list(np.ndarray(shape, np.uint8, block.buf))
    else:
        frames = _frames()
    model = YOLO(weights, task="detect")
    conn.send(_loop(lambda f: model.predict(f, imgsz=640, rect=False, verbose=False), frames, seconds))


def _engine_child(conn, seconds: float) -> None:
    from rtmon.config import load_settings
    from rtmon.core import Frame
    from rtmon.engines import create
    from rtmon.models import resolve_model

    settings = load_settings(overrides={"paths.engines_dir": "/tmp/rtmon-ab-engines"})
    engine = create("torch-fp32", resolve_model("demo", Path("/tmp/rtmon-ab-engines")), settings)
    engine.load()
    conn.send(_loop(lambda f: engine.infer(Frame(0, f, 0.0)), _frames(), seconds))


def _in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def _runner(seconds: float, spin_us: float) -> dict:
    from rtmon.bench.harness import EngineUnderTest
    from rtmon.bench.scenarios import options_for
    from rtmon.config import load_settings
    from rtmon.models import resolve_model

    settings = load_settings(overrides={"paths.engines_dir": "/tmp/rtmon-ab-engines", "engine.spin_us": spin_us})
    frames = _frames()
    eut = EngineUnderTest.start(["torch-fp32"], resolve_model("demo", Path("/tmp/rtmon-ab-engines")), settings,
                                options_for(settings, "single-stream"), frames)
    try:
        eut.require_loaded()
        eut.play(eut.feed(0, 16))
        start = eut.collector.count
        feed = eut.feed(16)
        eut.play(feed, lambda elapsed: feed.stop() if elapsed >= seconds else None)
        m = eut.collector.since(start)
        return {"fps": m.fps, "p50_ms": float(np.median(m.latency_ms)), "frames": m.frames,
                "handover_ms": float(m.stages[:, 0].mean())}
    finally:
        eut.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from multiprocessing import shared_memory

    from rtmon.models import DEMO_WEIGHTS

    frames = np.stack(_frames())
    block = shared_memory.SharedMemory(create=True, size=frames.nbytes)
    np.ndarray(frames.shape, np.uint8, block.buf)[:] = frames
    rows = []
    try:
        for round_ in range(1, args.rounds + 1):
            for name, run in (
                ("plain child", lambda: _in_child(_plain_child, str(DEMO_WEIGHTS), None, None, args.seconds)),
                ("plain child, shm frames", lambda: _in_child(_plain_child, str(DEMO_WEIGHTS), block.name, frames.shape,
                                                             args.seconds)),
                ("engine class, child", lambda: _in_child(_engine_child, args.seconds)),
                ("rtmon runner, spin on", lambda: _runner(args.seconds, 500.0)),
                ("rtmon runner, spin off", lambda: _runner(args.seconds, 0.0)),
            ):
                row = {"round": round_, "setting": name, **run()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        block.close()
        block.unlink()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
