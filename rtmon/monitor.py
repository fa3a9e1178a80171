"""The live monitor: a pipeline, its front ends (terminal UI, desktop window, MQTT), and their order
of starting and stopping (`publisher_factory`: `rtmon.outlets`, MQTT and Prometheus). `rtmon record` is its headless sibling (`rtmon/record.py`)."""

from __future__ import annotations

import signal

from rtmon.models import ModelRef
from rtmon.sources import SourceSpec


def run_live(settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], publisher_factory=None,
             engine_streams: dict[str, set[int]] | None = None) -> int:
    """Run the monitor until the user quits; returns the exit code. Everything started here is
    stopped here, whatever happens (SIGTERM included)."""
    from rtmon.pipeline import Pipeline
    from rtmon.sinks import Window
    from rtmon.tui import run_monitor

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    pipeline = Pipeline(specs, model, settings, engines, retry_open=True, engine_streams=engine_streams)
    window = publisher = None
    try:
        window = Window() if settings.monitor.window else None
        publisher = publisher_factory(pipeline.snapshot, model.class_names) if publisher_factory else None
        pipeline.load_engines(wait=False)
        pipeline.start_feed()
        if publisher:
            publisher.start()
        if window:
            window.follow(pipeline.split_screen)
        return run_monitor(pipeline, settings.monitor)
    except KeyboardInterrupt:
        return 130
    finally:
        if window:
            window.close()
        pipeline.stop()
        if publisher:
            publisher.stop()
