#!/usr/bin/env python3
"""What an engine's `infer` adds to ultralytics' `predict`, in one process, frame by frame.

    python scripts/outside_probe.py [--engines torch-fp32,ultralytics-ort] [--frames 300] [--out probe.json]
                                    [--set section.key=value]

The bench's stage table splits a frame into ultralytics' own stages (`results[0].speed`), the
rest of the frame (*outside*) and rtmon's hand-over. On the H100 of 2026-12-07 the engine's
*outside* was 0.10-0.15 ms longer than the plain script's, about half of what kept
`ultralytics-ort` (7 ms a frame) over the yardstick's 3%. This separates the engine class from
the process around it: the same loaded model, in this one process, per frame in turn
(rotating the order)

- `plain`: `model.predict(frame)` as the plain script calls it, then, untimed by that row, the
  boxes to the host as the engine takes them (`Detections.from_ultralytics`: timed on its own,
  `boxes_ms`);
- `engine`: the engine's `infer(Frame(frame))` on the same private frame;
- `engine, shm`: the same on a view of shared memory (as the engine process reads its ring).

Each row: the medians of the frame's time, ultralytics' stages and `outside` (time − stages).
The frames are the sample clip's (`.cache/rtmon`, as the bench decodes them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np

ROWS = ("plain", "engine", "engine, shm")


def _frames(cache: Path, count: int) -> list[np.ndarray]:
    import av

    from rtmon.sample import ensure_sample

    out = []
    with av.open(str(ensure_sample(cache).video)) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24"))
            if len(out) >= count:
                break
    return out


def probe(name: str, frames: list[np.ndarray], count: int, settings, model) -> dict:
    from multiprocessing import shared_memory

    from rtmon.core import Detections, Frame
    from rtmon.engines import create

    engine = create(name, model, settings)
    engine.load()
    yolo = engine._yolo
    m = settings.model
    kwargs = dict(imgsz=m.imgsz, conf=m.conf, iou=m.iou, max_det=m.max_det, rect=False, verbose=False)
    kwargs.update({"half": True, "device": 0} if name == "ultralytics-ort" else {"device": getattr(engine, "_device", None)})
    block = shared_memory.SharedMemory(create=True, size=frames[0].nbytes)
    view = np.ndarray(frames[0].shape, np.uint8, block.buf)
    rows: dict[str, list[tuple[float, float, float]]] = {row: [] for row in ROWS}
    boxes_ms: list[float] = []
    try:
        for i in range(count + 8):
            frame = frames[i % len(frames)]
            np.copyto(view, frame)
            order = ROWS[i % 3:] + ROWS[:i % 3]
            for row in order:
                t0 = time.perf_counter()
                if row == "plain":
                    (res,) = yolo.predict(frame, **kwargs)
                    took = (time.perf_counter() - t0) * 1e3
                    stages = sum(res.speed.values())
                    t1 = time.perf_counter()
                    Detections.from_ultralytics(res.boxes)
                    if i >= 8:
                        boxes_ms.append((time.perf_counter() - t1) * 1e3)
                else:
                    result = engine.infer(Frame(i, frame if row == "engine" else view, 0.0))
                    took = (time.perf_counter() - t0) * 1e3
                    s = result.stages
                    stages = s.preprocess + s.inference + s.postprocess
                if i >= 8:  # warm
                    rows[row].append((took, stages, took - stages))
    finally:
        engine.close()
        del view
        block.close()
        block.unlink()
    out = {"name": name, "frames": count, "boxes_ms": statistics.median(boxes_ms)}
    for row, values in rows.items():
        out[row] = {key: statistics.median(v[k] for v in values) for k, key in
                    enumerate(("frame_ms", "stages_ms", "outside_ms"))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="torch-fp32,ultralytics-ort")
    parser.add_argument("--frames", type=int, default=300, help="timed frames per row (default 300)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--cache", type=Path, default=Path(".cache/rtmon"), help="where the sample clip is")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="section.key=value",
                        help="a setting, as rtmon's --set (e.g. model.imgsz=64 on a CPU: the host's dispatch of the "
                             "layers is most of predict, as on a GPU)")
    args = parser.parse_args()
    if args.frames < 1:
        print("error: --frames must be at least 1", file=sys.stderr)
        return 2
    from rtmon.config import load_settings, parse_set_options
    from rtmon.errors import UserError
    from rtmon.models import resolve_model

    try:
        settings = load_settings(overrides={"paths.cache_dir": str(args.cache), **parse_set_options(args.sets)})
        model = resolve_model("demo", Path(settings.paths.engines_dir))
        frames = _frames(args.cache, 16)
        results = []
        for name in args.engines.split(","):
            results.append(probe(name.strip(), frames, args.frames, settings, model))
            print(json.dumps(results[-1]), flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
