"""The live monitor: a pipeline, its front ends (terminal UI, desktop window, MQTT), and their order
of starting and stopping (`publisher_factory`: `rtmon.outlets`, MQTT and Prometheus). `rtmon record` is its headless sibling (`rtmon/record.py`).

With the terminal UI, a key pressed in the window is that key pressed in the terminal UI, so the
two never disagree about what is on; a window that cannot open is a notice there. Without it
(`--window --no-tui`), the window's keys act on the pipeline directly, no terminal is needed, and
the monitor runs until q, the window's close button, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from rtmon.config import MonitorSettings
from rtmon.errors import UserError
from rtmon.keys import QUIT_KEY, MonitorActions
from rtmon.models import ModelRef
from rtmon.processes import sigterm_as_interrupt, stop_on_signals
from rtmon.sources import SourceSpec

if TYPE_CHECKING:
    from rtmon.snapshot import MonitorControl
    from rtmon.tui import MonitorApp
    from rtmon.window import Window

log = logging.getLogger("rtmon")
LOG_LEVELS = {"information": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}  # a notice's severity


def run_live(settings, model: ModelRef, specs: list[SourceSpec], engines: list[list[str]], publisher_factory=None,
             engine_streams: dict[str, set[int]] | None = None) -> int:
    """Run the monitor until the user quits; returns the exit code. Everything started here is
    stopped here, whatever happens (SIGTERM included)."""
    from rtmon.pipeline import Pipeline

    sigterm_as_interrupt()
    window, notice = _open_window(settings.monitor)  # before the slow engine loading: a bad display fails fast
    pipeline = publisher = None
    try:
        pipeline = Pipeline(specs, model, settings, engines, retry_open=True, engine_streams=engine_streams)
        publisher = publisher_factory(pipeline.snapshot, model.class_names) if publisher_factory else None
        pipeline.load_engines(wait=False)
        pipeline.start_feed()
        if publisher:
            publisher.start()
        if settings.monitor.tui:
            return _run_terminal(pipeline, settings.monitor, window, notice)
        return _run_without_terminal(pipeline, window)
    except KeyboardInterrupt:
        return 130
    finally:
        if window:
            window.close()
        if pipeline:
            pipeline.stop()
        if publisher:
            publisher.stop()


def _open_window(settings: MonitorSettings) -> tuple[Window | None, str]:
    """(the window or None, a notice for the terminal UI). Without the terminal UI a window that
    cannot open is the user's error; with it, the terminal UI says so and goes on."""
    if not settings.window:
        return None, ""
    from rtmon.window import Window

    try:
        return Window.open(), ""
    except UserError as exc:
        if not settings.tui:
            raise
        return None, str(exc)


def _run_terminal(control: MonitorControl, settings: MonitorSettings, window: Window | None, notice: str) -> int:
    app = _terminal_app(control, settings, window, notice)
    app.run()
    return app.return_code or 0


def _terminal_app(control: MonitorControl, settings: MonitorSettings, window: Window | None, notice: str) -> MonitorApp:
    """The terminal UI, saying `notice` once it is up, with the window's keys (if any) as its own."""
    from rtmon.tui import MonitorApp

    app = MonitorApp(control, refresh_hz=settings.refresh_hz, show_preview=settings.preview)
    if notice:
        app.notify(notice, severity="error", timeout=15)  # queued until the screen is up
    if window:
        window.follow(control, _TerminalHost(app))
    return app


class _TerminalHost:
    """The window's keys become the terminal UI's keys (its bindings, its state, its notices)."""

    def __init__(self, app: MonitorApp) -> None:
        self.app = app

    def press(self, key: str) -> None:
        self.app.simulate_key(key)  # posts a message: safe from any thread

    def window_lost(self, reason: str) -> None:
        self.app.notify(reason, severity="error", timeout=15)


def _run_without_terminal(control: MonitorControl, window: Window | None) -> int:
    host = _WindowOnlyHost(control)
    if window:
        window.follow(control, host)
    with stop_on_signals(host.stop):
        while not host.stop.wait(0.5):
            pass
    if host.lost:
        raise UserError(host.lost)
    return 0


class _WindowOnlyHost:
    """No terminal UI: the window's keys act on the pipeline directly (`MonitorActions`, as the
    terminal UI's keys do, each from a fresh snapshot); what they did goes to the log."""

    def __init__(self, control: MonitorControl) -> None:
        self.control = control
        self.actions = MonitorActions(control)
        self.stop = threading.Event()
        self.lost = ""

    def press(self, key: str) -> None:
        if key == QUIT_KEY:
            self.stop.set()
            return
        notice = self.actions.press(key, self.control.snapshot())
        if notice is not None:
            log.log(LOG_LEVELS[notice.severity], "%s", notice.text)

    def window_lost(self, reason: str) -> None:
        self.lost = reason
        self.stop.set()
