"""The bench's progress bars are drawn only when asked, and within a timed segment at most every
`every_s`: a draw holds the GIL while an engine's answer may be arriving."""

from __future__ import annotations

import io

from rich.console import Console

from rtmon.bench.progress import QuietProgress, progress_bars


def test_bars_are_drawn_when_asked_and_no_more_often_than_every_s(monkeypatch):
    drawn = []
    bars = QuietProgress(console=Console(file=io.StringIO()), every_s=2.0)
    monkeypatch.setattr(bars, "refresh", lambda: drawn.append(1))
    clock = iter([10.0, 10.5, 11.9, 12.1, 12.2])
    monkeypatch.setattr("rtmon.bench.progress.time.monotonic", lambda: next(clock))
    bars.draw()  # 10.0: the first
    bars.draw()  # 10.5: too soon
    bars.draw()  # 11.9: too soon
    bars.draw()  # 12.1: 2.1 s after the last
    bars.draw(now=True)  # 12.2: between segments, regardless
    assert len(drawn) == 3


def test_the_bench_bars_have_no_refresh_thread():
    with progress_bars(Console(file=io.StringIO())) as bars:
        assert bars.live.auto_refresh is False and bars.live._refresh_thread is None
