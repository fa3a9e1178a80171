"""`rtmon record`: the headless split-screen demo video.

Both engines run concurrently on the same feed (live policy: each takes the newest frame when
it is free); the recorder writes one split-screen frame per source frame, each half showing
its engine's latest annotated frame and numbers. Ctrl-C and SIGTERM finalize the file.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rtmon.errors import UserError
from rtmon.models import ModelRef
from rtmon.pipeline import Pipeline, timestamped
from rtmon.sources import SourceSpec


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_record(
    settings, model: ModelRef, spec: SourceSpec, left: str, right: str, out: Path | None, console: Console,
    publisher_factory=None,
) -> Path:
    rec = settings.record
    names = list(dict.fromkeys([left, right]))
    path = out or timestamped(Path(rec.out_dir), f"rtmon-{left}-vs-{right}", ".mp4")
    if path.suffix.lower() != ".mp4":
        raise UserError(f"out: {path}: the recording is an H.264 MP4; give a path ending in .mp4")
    pipeline = Pipeline(spec, model, settings, names, max_frames=rec.frames, realtime=True, record_pair=(left, right))
    _sigterm_as_interrupt()
    publisher = publisher_factory(pipeline.snapshot, model.class_names) if publisher_factory else None
    result: Path | None = None
    try:
        with console.status(f"loading {', '.join(names)} …"):
            pipeline.load_engines_or_raise()
        pipeline.start_recording(path, max_frames=rec.frames)  # before the feed: no frame is missed
        pipeline.start_feed()
        if publisher:
            publisher.start()
        result = _wait(pipeline, rec.frames, rec.duration, console)
    except KeyboardInterrupt:
        console.print("interrupted: finalizing the recording …")
    finally:
        result = pipeline.stop_recording() or result
        pipeline.stop()
        if publisher:
            publisher.stop()
    if result is None:
        raise UserError(f"record: no frame was recorded into {path}")
    return result


def _wait(pipeline: Pipeline, frames: int, duration: float, console: Console) -> Path | None:
    total = frames or None
    columns = (TextColumn("recording"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    t0 = time.monotonic()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("record", total=total, info="")
        while True:
            rec = pipeline.recorder
            if rec is None or rec.done.is_set():
                break
            if duration and time.monotonic() - t0 >= duration:
                break
            fps = "  ".join(
                f"{s.name} {s.fps:.1f} FPS" if s.fps else f"{s.name} …" for s in pipeline.snapshot().engines
            )
            progress.update(task, completed=rec.written, info=fps)
            time.sleep(0.2)
        if pipeline.recorder:
            progress.update(task, completed=pipeline.recorder.written)
    return None
