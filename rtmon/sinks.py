"""Where composed pictures go on disk: an H.264 MP4 (`H264Writer`, fed by a `Recorder` at the
source's frame rate) and PNG snapshots. The desktop window, the other place pictures go, is
`rtmon/window/`.

`H264Writer` encodes with FFmpeg's libx264 through PyAV (yuv420p, `+faststart`), which every
browser and VLC plays. Every file is written under a hidden temporary name beside the target and
renamed into place when complete (`rtmon.files`), so a crash or a bad start never leaves a
half-written file under the final name; Ctrl-C and SIGTERM are turned into a normal `close()` by
the callers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtmon.errors import UserError, one_line
from rtmon.files import PendingFile, timestamped, write_image

log = logging.getLogger(__name__)


class H264Writer:
    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], crf: int = 23) -> None:
        import av

        self.path = Path(path)
        width, height = size
        if width % 2 or height % 2:
            raise ValueError(f"H.264 (yuv420p) needs even dimensions, got {width}x{height}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"output: cannot create folder {self.path.parent} ({exc.strerror})") from None
        try:
            self._pending = PendingFile(self.path)
        except OSError as exc:
            raise UserError(f"output: cannot write {self.path} ({exc.strerror})") from None
        try:
            self._container = av.open(str(self._pending.tmp), mode="w", options={"movflags": "+faststart"})
        except (OSError, av.FFmpegError) as exc:
            self._pending.discard()
            raise UserError(f"output: cannot write {self.path} ({exc})") from None
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0
        self._closed = False

    def write(self, bgr: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush and finalize; returns the final path, or None if nothing was written."""
        if self._closed:
            return self.path if self.path.exists() else None
        self._closed = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
        if self.frames == 0:
            self._pending.discard()
            return None
        return self._pending.commit()

    def abort(self) -> None:
        """Throw away what was written (used when a run fails before producing anything useful)."""
        self._closed = True
        with contextlib.suppress(Exception):  # the container may already be broken
            self._container.close()
        self._pending.discard()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()


class Recorder(threading.Thread):
    """Writes `picture()` to an H.264 MP4 at `fps`, on the clock: one picture per frame period
    whether or not an engine had a new result, so the video plays at the source's speed and a
    slow engine's boxes visibly trail. Ends by `stop()`, after `max_frames`, once `finished()`
    (the source ended and every engine answered), or on the first error, which it keeps in
    `error` and for which it keeps no file."""

    def __init__(self, picture: Callable[[], np.ndarray | None], finished: Callable[[], bool], path: Path,
                 fps: float, crf: int = 23, max_frames: int = 0) -> None:
        super().__init__(name="rtmon-recorder", daemon=True)
        self.path, self.fps, self.crf, self.max_frames = path, fps, crf, max_frames
        self._picture, self._finished = picture, finished
        self.result: Path | None = None
        self.error = ""
        self.written = 0
        self.done = threading.Event()
        self._halt = threading.Event()
        self._writer: H264Writer | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            self.error = one_line(exc)
            log.error("recording failed: %s", self.error)
            if self._writer is not None:
                self._writer.abort()  # a recording that failed is not a recording
                self._writer = None
        finally:
            if self._writer is not None:
                self.result = self._writer.close()
            self.done.set()

    def _loop(self) -> None:
        period = 1.0 / self.fps
        next_due = time.perf_counter()
        while not self._halt.is_set():
            if self._finished() and self.written:
                return
            image = self._picture()
            if image is None:
                self._halt.wait(0.02)  # nothing processed yet: nothing to show
                next_due = time.perf_counter()
                continue
            if self._writer is None:
                self._writer = H264Writer(self.path, self.fps, (image.shape[1], image.shape[0]), self.crf)
            self._writer.write(image)
            self.written += 1
            if self.max_frames and self.written >= self.max_frames:
                return
            next_due += period
            self._halt.wait(max(next_due - time.perf_counter(), 0.0))


def save_png(image: np.ndarray, folder: Path) -> Path:
    """`image` as `snapshot-<date>-<time>.png` in `folder`, written whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_image(timestamped(folder, "snapshot", ".png"), image)
