"""The terminal screen of `rtmon monitor`: a Textual app that reads a `MonitorSnapshot` on a timer."""

from __future__ import annotations

from rtmon.config import MonitorSettings
from rtmon.snapshot import MonitorControl
from rtmon.tui.app import HelpScreen, MonitorApp

__all__ = ["HelpScreen", "MonitorApp", "run_monitor"]


def run_monitor(control: MonitorControl, settings: MonitorSettings) -> int:
    """Run the monitor screen until the user quits; its exit code (0 on `q` / Ctrl-C).

    The terminal is restored when this returns. Stopping the pipeline (and so finalizing a
    recording still running) is the caller's job, after this returns.
    """
    app = MonitorApp(control, refresh_hz=settings.refresh_hz, show_preview=settings.preview)
    app.run()
    return app.return_code or 0
