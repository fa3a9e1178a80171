"""Where a runner's frames come from: a `Feed` the runner pulls from whenever its engine has
room — after each result (from the thread that received it, so the next frame goes at once)
and when the feed says something new may be ready. The live bus (`rtmon.sources.Subscription`)
and the benchmarks' frame pools are feeds.

The clock never stops: frames handed over right after a result are stamped with the instant that
result arrived, so in a closed loop (single-stream) every microsecond of the run, the main
process's own bookkeeping included, lies inside some frame's latency."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from rtmon.core import Frame, Handed


class Feed(Protocol):
    def take(self, room: int, now: float) -> list[Handed] | None:
        """What is ready now, at most `room` frames, without waiting; [] when nothing is; None
        once the feed has ended. `now` is the instant the runner hands them over: a feed whose
        frames have no capture instant of their own (a benchmark's pool) stamps them with it."""
        ...

    def wait(self, timeout: float) -> None:
        """Return when `take` may have something new (or after `timeout`)."""
        ...

    def forget(self) -> None:
        """The runner was turned off and on again: frames it missed meanwhile are not skipped."""
        ...


class PoolFeed:
    """Frames of a pool of decoded images, each stamped with the instant it is handed over, as
    fast as the runner takes them, until `count` were handed over or `stop()` is called. Frame i
    is image i % len(pool); with `preloaded`, the runner's ring holds the pool (image i in slot
    i), so nothing is copied. Taking a frame costs a few attribute updates: whatever decides
    when to stop runs in another thread."""

    def __init__(self, pool: list[np.ndarray], first_index: int = 0, count: int | None = None,
                 preloaded: bool = False) -> None:
        self.pool, self.next_index, self.count, self.preloaded = pool, first_index, count, preloaded
        self.handed = 0
        self._ended = threading.Event()

    def take(self, room: int, now: float) -> list[Handed] | None:
        out = []
        while len(out) < room and not self._ended.is_set():
            if self.count is not None and self.handed >= self.count:
                self._ended.set()
                break
            i = self.next_index
            slot = i % len(self.pool)
            out.append(Handed(Frame(i, self.pool[slot], now), 0, slot if self.preloaded else None))
            self.next_index += 1
            self.handed += 1
        return out or (None if self._ended.is_set() else [])

    def stop(self) -> None:
        """Hand over nothing more."""
        self._ended.set()

    def wait(self, timeout: float) -> None:
        self._ended.wait(timeout)

    def forget(self) -> None:
        """Nothing is ever skipped."""
