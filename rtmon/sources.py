"""Frames in: camera, video file, image folder, RTSP/HTTP stream, or the embedded sample.

`resolve_source()` and `open_capture()` check the source up front (a missing file, a corrupt
video or a camera that does not open is a one-line `UserError` before anything starts).
`FrameReader` decodes ahead in its own thread and publishes timestamped frames on a
`rtmon.bus.FrameBus`, from which each engine runner takes the newest frame of its streams.

A camera or stream that fails mid-run is reopened with exponential back-off; a file ends, or
loops with `loop=True`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmon.bus import FrameBus
from rtmon.core import Frame, SourceState
from rtmon.errors import UserError, one_line
from rtmon.metrics import throughput_fps
from rtmon.retry import delays

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
        from rtmon.sample import ensure_sample

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


@dataclass
class ReaderStatus:
    state: SourceState = SourceState.STARTING
    error: str = ""
    frames: int = 0
    fps: float | None = None
    nominal_fps: float | None = None
    width: int | None = None
    height: int | None = None
    reconnects: int = 0


class FrameReader(threading.Thread):
    """Decodes ahead in its own thread and publishes one stream's frames on `bus`.

    `pace`: "realtime" plays a file at its own frame rate (cameras and streams are paced by the
    device itself); "max" decodes as fast as the fastest `latest` consumer takes frames, keeping
    a looping file's decoded frames in memory (up to `cache_mb`) so decoding never limits the
    engines. `max_frames` stops after that many frames. Only this thread touches the capture.
    """

    def __init__(
        self,
        spec: SourceSpec,
        bus: FrameBus,
        *,
        stream: int = 0,
        loop: bool = False,
        pace: str = "max",
        max_frames: int = 0,
        reopen_max_s: float = 8.0,
        cache_mb: int = 0,
        opened: tuple[_Capture, np.ndarray] | None = None,
    ) -> None:
        super().__init__(name=f"rtmon-reader-{stream}", daemon=True)
        if pace not in ("realtime", "max"):
            raise ValueError(f"pace must be 'realtime' or 'max', not {pace!r}")
        self.spec, self.bus, self.stream = spec, bus, stream
        self.loop, self.pace, self.max_frames = loop, pace, max_frames
        self.reopen_max_s, self.cache_bytes = reopen_max_s, cache_mb * 1024 * 1024
        self.status = ReaderStatus()
        self._opened = opened
        self._halt = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        bus.add_stream(stream)

    @property
    def live(self) -> bool:
        return self.spec.kind in {"camera", "stream"}

    def pause(self, paused: bool) -> None:
        """Pause or resume; a source that has ended or failed stays so."""
        if paused:
            self._resume.clear()
        else:
            self._resume.set()
        if self.status.state in (SourceState.RUNNING, SourceState.PAUSED):
            self.status.state = SourceState.PAUSED if paused else SourceState.RUNNING

    def stop(self) -> None:
        self._halt.set()
        self._resume.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never let the reader die silently
            log.exception("source reader failed")
            self.status.state, self.status.error = SourceState.FAILED, one_line(exc)
        finally:
            self.bus.end(self.stream)

    def _running_state(self) -> SourceState:
        return SourceState.RUNNING if self._resume.is_set() else SourceState.PAUSED

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
        self.status.state = self._running_state()
        realtime = self.pace == "realtime" and not self.live
        period = 1.0 / cap.nominal_fps if realtime and cap.nominal_fps else 0.0
        cache: list[np.ndarray] | None = [] if self.pace == "max" and self.loop and not self.live else None
        cached_bytes, replay = 0, -1  # replay >= 0: playing the cached frames back
        pending: np.ndarray | None = first
        index = 0
        next_due = time.perf_counter()
        arrivals: deque[float] = deque(maxlen=60)
        try:
            while not self._halt.is_set():
                self._resume.wait()
                if self._halt.is_set():
                    break
                if replay >= 0:
                    image, replay = cache[replay], (replay + 1) % len(cache)
                else:
                    image = pending if pending is not None else cap.read()
                    pending = None
                    if image is not None and cache is not None:
                        if cached_bytes + image.nbytes <= self.cache_bytes:
                            cache.append(image)
                            cached_bytes += image.nbytes
                        else:
                            cache = None  # too long to keep: decode every pass
                if image is None:
                    if self.live:
                        cap = self._reopen(cap)
                        if cap is None:
                            break
                        continue
                    if self.loop and cache:
                        replay = 0
                        continue
                    if self.loop and cap.rewind():
                        continue
                    self.status.state = SourceState.ENDED
                    break
                if period:
                    next_due += period
                    delay = next_due - time.perf_counter()
                    if delay > 0:
                        self._halt.wait(delay)
                    else:
                        next_due = time.perf_counter()  # fell behind: don't burst to catch up
                elif self.pace == "max" and index:
                    self.bus.wait_demand(self.stream, 0.05)
                now = time.perf_counter()
                arrivals.append(now)
                if len(arrivals) > 1 and arrivals[-1] > arrivals[0]:
                    self.status.fps = throughput_fps(len(arrivals) - 1, arrivals[0], arrivals[-1])
                self.status.height, self.status.width = image.shape[:2]
                self.bus.publish(Frame(index, image, now, self.stream))
                index += 1
                self.status.frames = index
                if self.max_frames and index >= self.max_frames:
                    self.status.state = SourceState.ENDED
                    break
        finally:
            cap.release()

    def _reopen(self, cap: _Capture | None) -> _Capture | None:
        """Reopen a lost camera/stream with exponential back-off until it works or we stop."""
        if cap is not None:
            cap.release()
        backoff = delays(min(0.5, self.reopen_max_s), self.reopen_max_s)
        while not self._halt.is_set():
            delay = next(backoff)
            self.status.state = SourceState.RECONNECTING
            self.status.error = f"{self.spec.label} lost; retrying in {delay:.1f} s"
            log.warning("%s", self.status.error)
            if self._halt.wait(delay):
                return None
            cap = _Capture(self.spec)
            if cap.opened:
                self.status.reconnects += 1
                self.status.nominal_fps = cap.nominal_fps
                self.status.state, self.status.error = self._running_state(), ""
                return cap
            cap.release()
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
