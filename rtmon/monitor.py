"""The live monitor: a pipeline, its front ends (terminal UI, desktop window, MQTT), and their order
of starting and stopping. `rtmon record` is its headless sibling (`rtmon/record.py`)."""

from __future__ import annotations

from rtmon.models import ModelRef
from rtmon.sources import SourceSpec


def run_live(settings, model: ModelRef, spec: SourceSpec, names: list[str], publisher_factory=None) -> int:
    """Run the monitor until the user quits; returns the exit code. Everything started here is
    stopped here, whatever happens."""
    from rtmon.pipeline import Pipeline
    from rtmon.prometheus import start_exporter
    from rtmon.sinks import Window
    from rtmon.tui import run_monitor

    pipeline = Pipeline(spec, model, settings, names, retry_open=True)
    window = Window() if settings.monitor.window else None
    publisher = publisher_factory(pipeline.snapshot, model.class_names) if publisher_factory else None
    exporter = start_exporter(settings.prometheus, pipeline.snapshot) if settings.prometheus.listen else None
    pipeline.load_engines(wait=False)
    pipeline.start_feed()
    if publisher:
        publisher.start()
    if window:
        window.follow(pipeline.split_screen)
    try:
        return run_monitor(pipeline, settings.monitor)
    finally:
        if window:
            window.close()
        pipeline.stop()
        if publisher:
            publisher.stop()
        if exporter:
            exporter.stop()
