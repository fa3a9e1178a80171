"""Where annotated frames go on disk: an H.264 MP4 file (the desktop window is `rtmon/window.py`).

`H264Writer` encodes with FFmpeg's libx264 through PyAV (yuv420p, `+faststart`), which every
browser and VLC plays. It writes to a hidden temporary file beside the target and renames it
into place on `close()`, so a crash or a bad start never leaves a half-written file under the
final name; Ctrl-C and SIGTERM are turned into a normal `close()` by the callers.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtmon.errors import UserError


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
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        try:
            self._container = av.open(str(self._tmp), mode="w", options={"movflags": "+faststart"})
        except (OSError, av.FFmpegError) as exc:
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
            self._tmp.unlink(missing_ok=True)
            return None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Throw away what was written (used when a run fails before producing anything useful)."""
        self._closed = True
        with contextlib.suppress(Exception):  # the container may already be broken
            self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()
