"""Frames in: camera, video file, image folder, RTSP/HTTP stream, or the embedded sample.

`open_source()` checks the source up front (a missing file, a corrupt video or a camera that
does not open is a one-line `UserError` before anything starts). `FrameReader` decodes ahead
in its own thread and publishes timestamped frames on a `FrameBus`, where each consumer
subscribes with its own policy:

- `every`: the consumer sees every frame through a bounded queue; a full queue holds the reader
  back (benchmarks, recording);
- `latest`: a busy consumer skips to the newest frame when it is free, and the frames it
  skipped are counted (live engines).

A camera or stream that fails mid-run is reopened with exponential back-off; a file ends, or
loops with `loop=True`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmon.core import Frame
from rtmon.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")

cv2.setLogLevel(0) if hasattr(cv2, "setLogLevel") else None  # OpenCV's own warnings are not ours to print


@dataclass(frozen=True)
class SourceSpec:
    uri: str  # what the user typed, resolved (e.g. the sample's cached file)
    kind: str  # camera | file | folder | stream | sample
    target: str | int  # what OpenCV opens, or the folder
    label: str  # for status lines and reports
    labels_file: Path | None = None  # ground truth, for the sample


class _Capture:
    """A uniform `read() -> image | None` over OpenCV captures and image folders."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._files: list[Path] = []
        self._pos = 0
        self._cap = None
        if spec.kind == "folder":
            self._files = _folder_images(Path(spec.target))
        else:
            self._cap = cv2.VideoCapture(spec.target)

    @property
    def opened(self) -> bool:
        return bool(self._files) if self.spec.kind == "folder" else bool(self._cap and self._cap.isOpened())

    @property
    def nominal_fps(self) -> float | None:
        if self._cap is None:
            return None
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and 0 < fps < 1000 else None

    @property
    def frame_count(self) -> int | None:
        if self.spec.kind == "folder":
            return len(self._files)
        if self.spec.kind in {"file", "sample"} and self._cap is not None:
            n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
            return n if n > 0 else None
        return None

    def read(self) -> np.ndarray | None:
        if self.spec.kind == "folder":
            while self._pos < len(self._files):
                path = self._files[self._pos]
                self._pos += 1
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is not None:
                    return image
                log.warning("skipping %s: not a readable image", path)
            return None
        ok, image = self._cap.read()
        return image if ok else None

    def rewind(self) -> bool:
        if self.spec.kind == "folder":
            self._pos = 0
            return True
        return bool(self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _cameras_present() -> bool:
    # On Linux a missing /dev/video* means no camera: don't make OpenCV probe (and complain).
    return not Path("/dev").is_dir() or any(Path("/dev").glob("video*"))


def resolve_source(uri: str, cache_dir: Path) -> SourceSpec:
    """Classify `uri` and check that it exists (without decoding anything yet)."""
    uri = str(uri).strip()
    if uri == "auto":
        if _cameras_present():
            cap = cv2.VideoCapture(0)
            ok = cap.isOpened() and cap.read()[0]
            cap.release()
            if ok:
                return SourceSpec("0", "camera", 0, "camera 0")
        log.warning("no camera opens here; showing the embedded sample clip (--source sample)")
        return resolve_source("sample", cache_dir)
    if uri == "sample":
        from rtmon.scene import ensure_sample

        clip = ensure_sample(cache_dir)
        return SourceSpec("sample", "sample", str(clip.video), "sample clip", clip.labels)
    if uri.isdigit():
        return SourceSpec(uri, "camera", int(uri), f"camera {uri}")
    if uri.lower().startswith(STREAM_PREFIXES):
        return SourceSpec(uri, "stream", uri, uri)
    path = Path(uri).expanduser()
    if not path.exists():
        raise UserError(f"source: {uri}: no such file or folder (or give a camera index, a URL, or 'sample')")
    if not os.access(path, os.R_OK):
        raise UserError(f"source: {uri}: permission denied")
    if path.is_dir():
        if not _folder_images(path):
            raise UserError(f"source: {uri}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return SourceSpec(uri, "folder", str(path), path.name)
    return SourceSpec(uri, "file", str(path), path.name)


def open_capture(spec: SourceSpec) -> tuple[_Capture, np.ndarray]:
    """Open the source and decode its first frame, or raise a one-line UserError."""
    cap = _Capture(spec)
    if not cap.opened:
        cap.release()
        what = {"camera": f"camera {spec.target} does not open", "stream": f"stream {spec.uri} does not open"}
        raise UserError(f"source: {what.get(spec.kind, f'{spec.uri}: cannot open it as a video')}")
    first = cap.read()
    if first is None or first.ndim != 3 or first.shape[2] != 3:
        cap.release()
        raise UserError(f"source: {spec.uri}: no decodable frame (corrupt or unsupported file?)")
    return cap, first


class Subscription:
    """One consumer's view of the bus."""

    def __init__(self, bus: FrameBus, name: str, policy: str, capacity: int) -> None:
        if policy not in ("latest", "every"):
            raise ValueError(f"policy must be 'latest' or 'every', not {policy!r}")
        self.bus, self.name, self.policy = bus, name, policy
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=capacity)
        self._last_index = -1

    def get(self, timeout: float | None = None) -> tuple[Frame | None, int]:
        """The next frame for this consumer and how many it skipped; (None, 0) at the end.

        Raises `queue.Empty` after `timeout` seconds without a frame.
        """
        if self.policy == "every":
            frame = self._queue.get(timeout=timeout)
            return frame, 0
        frame = self.bus._wait_newer(self._last_index, timeout)
        if frame is None:
            return None, 0
        skipped = max(frame.index - self._last_index - 1, 0) if self._last_index >= 0 else 0
        self._last_index = frame.index
        return frame, skipped

    def close(self) -> None:
        self.bus.unsubscribe(self)


class FrameBus:
    """Fan-out of frames from one reader to any number of consumers (see module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._subs: list[Subscription] = []

    def subscribe(self, name: str, policy: str = "latest", capacity: int = 8) -> Subscription:
        sub = Subscription(self, name, policy, capacity)
        with self._cond:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, frame: Frame, stop: threading.Event) -> None:
        with self._cond:
            self._latest = frame
            self._cond.notify_all()
            every = [s for s in self._subs if s.policy == "every"]
        for sub in every:
            while not stop.is_set():
                try:
                    sub._queue.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    if sub not in self._subs:  # unsubscribed while we waited
                        break

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
            every = [s for s in self._subs if s.policy == "every"]
        for sub in every:
            try:
                sub._queue.put(None, timeout=1.0)
            except queue.Full:
                log.debug("consumer %s did not drain its queue at end of stream", sub.name)

    def _wait_newer(self, index: int, timeout: float | None) -> Frame | None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._ended or (self._latest is not None and self._latest.index > index), timeout
            )
            if not ok:
                raise queue.Empty
            if self._latest is not None and self._latest.index > index:
                return self._latest
            return None


@dataclass
class ReaderStatus:
    state: str = "starting"
    error: str = ""
    frames: int = 0
    fps: float | None = None
    nominal_fps: float | None = None
    width: int | None = None
    height: int | None = None


class FrameReader(threading.Thread):
    """Decodes ahead in its own thread and publishes frames on `bus`.

    `realtime` paces file sources at their nominal frame rate (live views); cameras and
    streams are paced by the device itself. `max_frames` stops after that many frames.
    """

    def __init__(
        self,
        spec: SourceSpec,
        bus: FrameBus,
        *,
        loop: bool = False,
        realtime: bool = False,
        max_frames: int = 0,
        reopen_max_s: float = 8.0,
        opened: tuple[_Capture, np.ndarray] | None = None,
    ) -> None:
        super().__init__(name="rtmon-reader", daemon=True)
        self.spec, self.bus = spec, bus
        self.loop, self.realtime, self.max_frames = loop, realtime, max_frames
        self.reopen_max_s = reopen_max_s
        self.status = ReaderStatus()
        self._opened = opened
        self._halt = threading.Event()
        self._resume = threading.Event()
        self._resume.set()

    @property
    def live(self) -> bool:
        return self.spec.kind in {"camera", "stream"}

    def pause(self, paused: bool) -> None:
        if paused:
            self._resume.clear()
            self.status.state = "paused"
        else:
            self._resume.set()
            self.status.state = "running"

    def stop(self) -> None:
        self._halt.set()
        self._resume.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never let the reader die silently
            log.exception("source reader failed")
            self.status.state, self.status.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.bus.end()

    def _run(self) -> None:
        if self._opened:
            cap, first = self._opened
        else:
            try:
                cap, first = open_capture(self.spec)
            except UserError as exc:
                if not self.live:
                    raise
                # A camera or stream that is not there yet: keep trying, as for one lost mid-run.
                log.warning("%s", exc)
                cap = self._reopen(None)
                if cap is None:
                    return
                first = None  # the loop reads it
        self.status.nominal_fps = cap.nominal_fps
        self.status.state = "running"
        period = 1.0 / cap.nominal_fps if self.realtime and not self.live and cap.nominal_fps else 0.0
        pending: np.ndarray | None = first
        index = 0
        next_due = time.perf_counter()
        arrivals: list[float] = []
        while not self._halt.is_set():
            self._resume.wait()
            if self._halt.is_set():
                break
            image = pending if pending is not None else cap.read()
            pending = None
            if image is None:
                if self.live:
                    cap = self._reopen(cap)
                    if cap is None:
                        break
                    continue
                if self.loop and cap.rewind():
                    continue
                self.status.state = "ended"
                break
            if period:
                next_due += period
                delay = next_due - time.perf_counter()
                if delay > 0:
                    self._halt.wait(delay)
                else:
                    next_due = time.perf_counter()  # fell behind: don't burst to catch up
            now = time.perf_counter()
            arrivals = [t for t in arrivals[-59:] if now - t < 2.0] + [now]
            if len(arrivals) > 1:
                self.status.fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
            self.status.height, self.status.width = image.shape[:2]
            self.bus.publish(Frame(index, image, now), self._halt)
            index += 1
            self.status.frames = index
            if self.max_frames and index >= self.max_frames:
                self.status.state = "ended"
                break
        cap.release()

    def _reopen(self, cap: _Capture | None) -> _Capture | None:
        """Reopen a lost camera/stream with exponential back-off until it works or we stop."""
        if cap is not None:
            cap.release()
        delay = 0.5
        while not self._halt.is_set():
            self.status.state = "reconnecting"
            self.status.error = f"{self.spec.label} lost; retrying in {delay:.1f} s"
            log.warning("%s", self.status.error)
            if self._halt.wait(delay):
                return None
            cap = _Capture(self.spec)
            if cap.opened:
                self.status.state, self.status.error = "running", ""
                return cap
            cap.release()
            delay = min(delay * 2, self.reopen_max_s)
        return None


def read_frames(spec: SourceSpec, count: int) -> Iterator[np.ndarray]:
    """The first `count` frames of a source, wrapping around at its end (benchmarks)."""
    cap, first = open_capture(spec)
    try:
        yield first
        produced = 1
        while produced < count:
            image = cap.read()
            if image is None:
                if spec.kind in {"camera", "stream"} or not cap.rewind():
                    raise UserError(f"source: {spec.uri}: ended after {produced} frames")
                continue
            yield image
            produced += 1
    finally:
        cap.release()
