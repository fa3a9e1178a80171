"""The bench's progress bars: drawn only when the bench asks, never by a refresh thread, so that
drawing them does not hold the GIL while an engine's answer arrives."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class QuietProgress(Progress):
    """rich's progress bars, drawn only when asked (`draw`), never by a refresh thread of their
    own. Drawing holds the GIL (1.4 ms a draw in a terminal, 0.09 ms into a pipe, measured on
    the development machine), and an engine's answer that arrives meanwhile waits in the thread
    that receives it: the bench draws between an engine's segments and, within a long one, at
    most every `every_s`."""

    def __init__(self, *columns, every_s: float, **kwargs) -> None:
        super().__init__(*columns, auto_refresh=False, **kwargs)
        self.every_s = every_s
        self._drawn = 0.0

    def draw(self, now: bool = False) -> None:
        """Redraw, unless the last draw was less than `every_s` ago (`now`: regardless)."""
        t = time.monotonic()
        if now or t - self._drawn >= self.every_s:
            self._drawn = t
            self.refresh()


PROGRESS_EVERY_S = 2.0  # the bars' redraws within an engine's timed segment, at most


def progress_bars(console: Console) -> QuietProgress:
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return QuietProgress(*columns, every_s=PROGRESS_EVERY_S, console=console, transient=False)
