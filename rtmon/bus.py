"""Frames from the sources to the engine runners: the newest frame of each stream, for whoever
is free to take it.

Each reader (`rtmon.sources.FrameReader`) publishes its stream's frames on one `FrameBus`; each
engine runner follows a `Subscription`, which gives it, when it has room, the newest frame of
each of its streams and how many frames of that stream it skipped (it took a newer one). A slow
engine so never holds back the feed or another engine, and the skipped frames are counted.
"""

from __future__ import annotations

import threading

from rtmon.core import Frame, Handed


class Subscription:
    """One consumer's view of the bus: the newest frame of each of its streams.

    A busy consumer skips to the newest frame when it is free; the frames it skipped are
    counted. This is the `Feed` an engine runner pulls from (`rtmon.runner.feed`).
    """

    def __init__(self, bus: FrameBus, name: str, streams: frozenset[int] | None) -> None:
        self.bus, self.name, self.streams = bus, name, streams
        self._last: dict[int, int] = {}  # the newest index taken, per stream
        self._forgotten: set[int] = set()  # streams whose next frame counts no skipped frames

    def wants(self, stream: int) -> bool:
        return self.streams is None or stream in self.streams

    def take(self, room: int, now: float = 0.0) -> list[Handed] | None:
        """The newest frame of each stream that has one newer than last taken, oldest capture
        first, at most `room`, with the frames skipped before each; [] when none is new yet;
        None once every stream this consumer follows has ended."""
        return self.bus._take_latest(self, room)

    def wait(self, timeout: float) -> None:
        """Until a new frame is published for this consumer (or its streams end), or `timeout`."""
        self.bus._wait_newer(self, timeout)

    def forget(self) -> None:
        """Take the newest frames next without counting those in between as skipped (a consumer
        that was turned off skipped nothing)."""
        self._forgotten = set(self._last)

    @property
    def ended(self) -> bool:
        """True once every stream this consumer follows has ended."""
        streams = self.bus.streams if self.streams is None else self.streams
        return bool(streams) and streams <= self.bus.ended_streams

    def close(self) -> None:
        self.bus.unsubscribe(self)


class FrameBus:
    """Frames from any number of readers (one per stream) to any number of consumers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: dict[int, Frame] = {}
        self._taken: dict[int, bool] = {}
        self.streams: frozenset[int] = frozenset()
        self.ended_streams: set[int] = set()
        self._subs: list[Subscription] = []

    def add_stream(self, stream: int) -> None:
        with self._cond:
            self.streams = self.streams | {stream}

    def subscribe(self, name: str, streams: set[int] | None = None) -> Subscription:
        sub = Subscription(self, name, None if streams is None else frozenset(streams))
        with self._cond:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            if sub in self._subs:
                self._subs.remove(sub)
            self._cond.notify_all()

    def publish(self, frame: Frame) -> None:
        with self._cond:
            self.streams = self.streams | {frame.stream}
            self._latest[frame.stream] = frame
            self._taken[frame.stream] = False
            self._cond.notify_all()

    def end(self, stream: int = 0) -> None:
        with self._cond:
            self.streams = self.streams | {stream}
            self.ended_streams.add(stream)
            self._cond.notify_all()

    def newest(self, stream: int = 0) -> Frame | None:
        """The stream's newest frame (for the picture), or None before the first one."""
        with self._cond:
            return self._latest.get(stream)

    def wait_demand(self, stream: int, timeout: float) -> None:
        """At max pace: wait until a consumer took the stream's newest frame (or `timeout`), so
        the source runs at the pace of its fastest consumer, never faster."""
        with self._cond:
            if not any(sub.wants(stream) for sub in self._subs):
                return
            self._cond.wait_for(lambda: self._taken.get(stream, True), timeout)

    def _newer(self, sub: Subscription) -> list[Frame]:
        return [f for s, f in self._latest.items() if sub.wants(s) and f.index > sub._last.get(s, -1)]

    def _wait_newer(self, sub: Subscription, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._newer(sub) or sub.ended, timeout)

    def _take_latest(self, sub: Subscription, room: int) -> list[Handed] | None:
        with self._cond:
            frames = sorted(self._newer(sub), key=lambda f: f.t_capture)[:room]
            if not frames:
                return None if sub.ended else []
            out = []
            for f in frames:
                last = None if f.stream in sub._forgotten else sub._last.get(f.stream)
                sub._forgotten.discard(f.stream)
                out.append(Handed(f, max(f.index - last - 1, 0) if last is not None else 0))
                sub._last[f.stream] = f.index
                self._taken[f.stream] = True
            self._cond.notify_all()
            return out
