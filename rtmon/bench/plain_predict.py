"""ultralytics as a user runs it, and nothing else: the yardstick's yardstick.

`rtmon bench` runs this file as a plain subprocess (`python plain_predict.py JOB.json`) with no
rtmon code on the timed path: it imports only ultralytics and NumPy, loads the frames rtmon
decoded (a .npy file of the same decoded frames every engine sees), loads the model and warms
up, prints `{"ready": ...}`, then runs one timed segment per request line on stdin
(`{"frames": N, "min_duration_s": S, "max_duration_s": M, "warmup": W}`): W untimed calls
first (the engine's segments begin the same way), then `model.predict(frame, ...)` one frame at
a time, exactly as a user's loop would, until it has N frames and S seconds (or M seconds). Each segment prints one JSON line: per-frame latencies (ms), the wall time from its
first call to its last return, and ultralytics' own per-frame stage times (`results[0].speed`,
read after the clock stopped), so a report can put the engine's stages beside the script's.
End of input ends the script.

Segments let `rtmon bench` alternate the plain script with the engine it is the yardstick of
(reference, engine, reference, ...), so both see the same machine even when its speed drifts.
Between segments the script waits on stdin, outside any timing.

Keep it that way: no import of rtmon, no threads, no tricks; it must be what a user would write.
"""

import json
import sys
import time


def main(job_path: str) -> None:
    with open(job_path) as fh:
        job = json.load(fh)
    import numpy as np
    import ultralytics
    from ultralytics import YOLO

    frames = np.load(job["frames_file"])  # (n, H, W, 3) BGR uint8, in memory
    frames = [np.ascontiguousarray(f) for f in frames]
    model = YOLO(job["model"], task="detect")
    kwargs = dict(imgsz=job["imgsz"], conf=job["conf"], iou=job["iou"], max_det=job["max_det"], rect=False,
                  verbose=False)
    kwargs.update(job.get("predict", {}))
    for i in range(job["warmup"]):
        model.predict(frames[i % len(frames)], **kwargs)
    device = str(model.predictor.device) if model.predictor is not None else ""
    print(json.dumps({"ready": True, "ultralytics": ultralytics.__version__, "device": device,
                      "python": sys.version.split()[0]}), flush=True)
    i = 0
    for line in sys.stdin:
        segment = json.loads(line)
        for _ in range(segment.get("warmup", 0)):
            model.predict(frames[i % len(frames)], **kwargs)
            i += 1
        latencies, speeds = [], []
        t_first = time.perf_counter()
        n = 0
        while n < segment["frames"] or time.perf_counter() - t_first < segment["min_duration_s"]:
            t0 = time.perf_counter()
            results = model.predict(frames[i % len(frames)], **kwargs)
            latencies.append((time.perf_counter() - t0) * 1e3)
            speed = results[0].speed
            speeds.append((speed["preprocess"], speed["inference"], speed["postprocess"]))
            i += 1
            n += 1
            if time.perf_counter() - t_first > segment["max_duration_s"]:
                break
        wall = time.perf_counter() - t_first
        print(json.dumps({"latencies_ms": latencies, "wall_s": wall, "speed_ms": speeds}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
