"""One engine, measured alone in its own process: `python -m rtmon.bench_worker JOB.json`.

The parent (`rtmon.bench`) starts one of these per engine, so each engine's GPU memory is its
own and engines never contend. The worker decodes the same frames every other worker decodes
(before timing starts), warms up on the first `warmup` of them, then times `frames` frames,
each stamped as captured the instant it is handed to the engine. It prints one JSON line per
progress step on stdout and writes its measurements to the job's `result` path.

How an engine is driven, in the order tried (the result's `mode` says which):
- `batch`: `engines.batch` > 1 and the engine has `infer_batch`: micro-batches of that many
  frames; every frame of a batch is stamped when the batch is handed over and done when the
  whole batch is; FPS = frames / wall time.
- `stream`: the engine is `pipelined` and has `infer_stream`: frames are handed over as fast as
  the engine takes them, with frames in flight; latency = hand-over → its boxes on the host.
- `single`: `infer`, one frame at a time (the baseline, and ladder rungs that show exactly that).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rtmon import engines as registry
from rtmon import gpu
from rtmon.config import Settings
from rtmon.core import Frame, Result
from rtmon.errors import UserError
from rtmon.models import ModelRef
from rtmon.sources import SourceSpec, read_frames


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def measuring_mode(engine, batch: int) -> str:
    if batch > 1 and hasattr(engine, "infer_batch"):
        return "batch"
    if getattr(engine, "pipelined", False) and hasattr(engine, "infer_stream"):
        return "stream"
    return "single"


def drive(engine, mode: str, batch: int, images: list, index_from: int = 0) -> Iterator[Result]:
    """Results for `images` in order, each frame stamped the instant it is handed over."""
    if mode == "stream":
        yield from engine.infer_stream(Frame(index_from + i, im, time.perf_counter()) for i, im in enumerate(images))
    elif mode == "batch":
        for start in range(0, len(images), batch):
            t = time.perf_counter()
            yield from engine.infer_batch([Frame(index_from + start + j, im, t)
                                           for j, im in enumerate(images[start:start + batch])])
    else:
        for i, image in enumerate(images):
            yield engine.infer(Frame(index_from + i, image, time.perf_counter()))


def run_job(job: dict) -> dict:
    settings = Settings.model_validate(job["settings"])
    model = ModelRef(Path(job["model"]["path"]), job["model"]["label"], job["model"]["kind"], job["model"]["sha256"],
                     {int(k): v for k, v in job["model"]["class_names"].items()})
    spec = SourceSpec(**{**job["source"], "labels_file": None})
    warmup, frames = job["warmup"], job["frames"]
    images = list(read_frames(spec, warmup + frames))
    engine = registry.create(job["engine"], model, settings)
    _emit(stage="loading")
    t_load = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t_load
    mode = measuring_mode(engine, settings.engines.batch)
    for _ in drive(engine, mode, settings.engines.batch, images[:warmup], index_from=-warmup):
        pass
    _emit(stage="measuring")
    latencies, done, stages, proc_mem = [], [], [], []
    t_start = time.perf_counter()
    step = max(frames // 50, 1)
    for i, result in enumerate(drive(engine, mode, settings.engines.batch, images[warmup:])):
        latencies.append(result.latency_ms)
        done.append(result.t_done - t_start)
        stages.append((result.stages.preprocess, result.stages.inference, result.stages.postprocess))
        if i % step == 0 or i == frames - 1:
            proc_mem.append(gpu.process_memory_mib())
            _emit(progress=i + 1)
    wall = time.perf_counter() - t_start
    known = [m for m in proc_mem if m is not None]
    out = {
        "engine": job["engine"],
        "info": engine.info.__dict__ | {"notes": list(engine.info.notes)},
        "frames": frames,
        "wall_s": wall,
        "load_s": load_s,
        "latencies_ms": latencies,
        "done_s": done,
        "stages_ms": stages,
        "gpu_process_mib": max(known) if known else None,
        "torch_peak_mib": gpu.torch_peak_mib(),
        "detections_last": len(result.detections),
        "mode": mode,
        "batch": settings.engines.batch if mode == "batch" else 1,
        "fallbacks": getattr(engine, "overflows", 0),
    }
    engine.close()
    return out


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    try:
        out = run_job(job)
    except UserError as exc:
        _emit(error=str(exc))
        return 2
    except Exception as exc:
        _emit(error=f"{job.get('engine')}: {type(exc).__name__}: {exc}".splitlines()[0])
        return 1
    Path(job["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
