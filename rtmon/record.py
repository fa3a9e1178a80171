"""`rtmon record`: the headless demo video.

The engines run concurrently on the same feed, each in its own process and taking the newest
frame when it is free; the recorder writes the composed picture (the split screen of the two
compared engines, or the mosaic of several sources) at the source's frame rate. Ctrl-C and
SIGTERM finalize the file; a recording that fails is an error, and no partial file is left.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rtmon.errors import UserError
from rtmon.files import timestamped, write_folder
from rtmon.models import ModelRef
from rtmon.pipeline import Pipeline
from rtmon.processes import sigterm_as_interrupt
from rtmon.reporting import header
from rtmon.snapshot import MonitorSnapshot
from rtmon.sources import SourceSpec


def run_record(
    settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], out: Path | None, console: Console,
    publisher_factory=None, engine_streams: dict[str, set[int]] | None = None,
) -> Path:
    """Record until `record.frames` video frames or `record.duration` seconds are written, the
    source ends, or Ctrl-C; returns the MP4's path."""
    rec = settings.record
    left, right = engines[0][0], engines[-1][0]
    path = out or timestamped(Path(rec.out_dir), f"rtmon-{left}-vs-{right}", ".mp4")
    if path.suffix.lower() != ".mp4":
        raise UserError(f"out: {path}: the recording is an H.264 MP4; give a path ending in .mp4")
    pipeline = Pipeline(specs, model, settings, engines, record_pair=(left, right), engine_streams=engine_streams)
    sigterm_as_interrupt()
    publisher = publisher_factory(pipeline.snapshot, model.class_names) if publisher_factory else None
    result: Path | None = None
    error = ""
    figures: dict = {}
    try:
        with console.status(f"loading {', '.join(c[0] for c in engines)} …"):
            pipeline.load_engines_or_raise()
        pipeline.start_feed()
        pipeline.start_recording(path, max_frames=rec.frames)
        if publisher:
            publisher.start()
        _wait(pipeline, rec.frames, rec.duration, console)
    except KeyboardInterrupt:
        console.print("interrupted: finalizing the recording …")
    finally:
        figures = final_figures(pipeline.snapshot(), model, specs)
        recorder = pipeline.recorder
        result = pipeline.stop_recording()
        error = (recorder.error if recorder else "") or pipeline.recording_error
        pipeline.stop()
        if publisher:
            publisher.stop()
    if error:
        raise UserError(f"record: the recording failed ({error}); nothing was kept")
    if result is None:
        raise UserError(f"record: no frame was recorded into {path}")
    write_folder(result.parent, {f"{result.stem}.json": lambda p: p.write_text(json.dumps(figures, indent=1))})
    return result


def final_figures(snapshot: MonitorSnapshot, model: ModelRef, specs: list[SourceSpec]) -> dict:
    """What the recording showed at its end, as measured: per engine and per stream, with the
    GPU memory each engine's process held. Written beside the video (`<name>.json`)."""
    head = snapshot.headline

    def latency(stats) -> dict | None:
        return None if stats is None else stats.as_dict()

    return {
        **header(model, specs),
        "pace": snapshot.pace,
        "uptime_s": snapshot.uptime_s,
        "headline": None if head is None else {"baseline": head.baseline, "optimized": head.optimized,
                                               "speedup": head.speedup, "p95_ratio": head.p95_ratio},
        "engines": [
            {"name": e.name, "role": e.role.value, "state": e.state.value, "error": e.error,
             "device": snapshot.engine_info[e.name].device if e.name in snapshot.engine_info else None,
             "processed": e.processed, "skipped": e.skipped, "fps": e.fps_overall, "capacity_fps": e.capacity_fps,
             "busy_pct": e.busy_pct, "latency_ms": latency(e.latency), "gpu_mem": e.memory.as_dict()}
            for e in snapshot.engines
        ],
        "streams": [
            {"stream": s.source.stream, "source": s.source.uri, "state": s.source.state,
             "reconnects": s.source.reconnects, "frames": s.source.frames,
             "engines": {name: {"fps": f.fps, "processed": f.processed, "dropped": f.dropped,
                                "latency_ms": latency(f.latency)} for name, f in s.engines.items()}}
            for s in snapshot.streams
        ],
    }


def _wait(pipeline: Pipeline, frames: int, duration: float, console: Console) -> None:
    columns = (TextColumn("recording"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    t0 = time.monotonic()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("record", total=frames or None, info="")
        while True:
            rec = pipeline.recorder
            if rec is None or rec.done.is_set():
                break
            if duration and time.monotonic() - t0 >= duration:
                break
            snap = pipeline.snapshot()
            info = "  ".join(
                f"{e.name} {e.fps:.0f} FPS (capacity {e.capacity_fps:.0f})" if e.fps and e.capacity_fps else f"{e.name} …"
                for e in snap.engines
            )
            progress.update(task, completed=rec.written, info=info)
            time.sleep(0.2)
        if pipeline.recorder:
            progress.update(task, completed=pipeline.recorder.written)
