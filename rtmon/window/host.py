"""The monitor's side of the window: starts the window process, hands it pictures, hears its keys."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rtmon.errors import UserError
from rtmon.keys import QUIT_KEY
from rtmon.window.buffer import FrameBuffer
from rtmon.window.messages import (
    CloseRequested,
    CloseWindow,
    KeyPressed,
    UseBuffer,
    WindowEvent,
    WindowFailed,
    WindowOpened,
)
from rtmon.window.view import INSTALL_HINT, TITLE, window_process

if TYPE_CHECKING:
    from rtmon.snapshot import MonitorControl

log = logging.getLogger("rtmon")

DEFAULT_CAPACITY = 1920 * 1080 * 3  # bytes per picture slot; a bigger picture gets a bigger buffer
OPEN_TIMEOUT_S = 30.0
REFRESH_AT_LEAST_S = 0.5  # recompose this often even when nothing changed (FPS decays while no result comes)
RATE_CHECK_S = 2.0  # how often the source's frame rate, which caps the window's, is read again


class WindowHost(Protocol):
    """Whoever runs the monitor: it receives the window's keys and hears when the window is lost."""

    def press(self, key: str) -> None: ...  # one of `rtmon.keys.passed_on_keys()`; the close button arrives as "q"

    def window_lost(self, reason: str) -> None: ...


def check_can_open() -> None:
    """The quick checks, before any slow work: a display to open on, and the library installed."""
    on_desktop_os = sys.platform in {"win32", "darwin"}
    if not (on_desktop_os or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("SDL_VIDEODRIVER")):
        raise UserError("window: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); run it on a desktop, "
                        "or use the terminal UI's preview (key v) or `rtmon record`")
    if importlib.util.find_spec("pygame") is None:
        raise UserError(f"window: the window extra is not installed; {INSTALL_HINT}")


class Window:
    """The monitor's handle on the window process: pictures in, keys out.

    `open()` starts the process and waits until the window is on screen (or says why not);
    `follow()` keeps it showing a `MonitorControl`'s split screen and passes its keys to a
    `WindowHost`; `close()` ends the process and reaps it, whatever state it is in.
    """

    def __init__(self, process, conn, buffer: FrameBuffer, opened: WindowOpened) -> None:
        self._process = process
        self._conn = conn
        self._buffer = buffer
        self.driver = opened.driver
        self.refresh_hz = opened.refresh_hz
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def open(cls, title: str = TITLE, timeout_s: float = OPEN_TIMEOUT_S) -> Window:
        """Start the window process (call from the main thread: the window dies with that thread)."""
        check_can_open()
        context = multiprocessing.get_context("spawn")
        buffer = FrameBuffer.create(DEFAULT_CAPACITY)
        ours, theirs = context.Pipe()
        process = context.Process(
            target=window_process, args=(theirs, buffer.name, title, os.getpid()), name="rtmon-window", daemon=True
        )
        process.start()
        theirs.close()
        try:
            first = ours.recv() if ours.poll(timeout_s) else WindowFailed(f"no window after {timeout_s:.0f} s")
        except (EOFError, OSError):
            first = WindowFailed("the window process ended before the window opened")
        if not isinstance(first, WindowOpened):
            _stop(process)
            ours.close()
            buffer.close()
            buffer.unlink()
            reason = first.reason if isinstance(first, WindowFailed) else f"unexpected message {first!r}"
            raise UserError(f"window: {reason}")
        return cls(process, ours, buffer, first)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def show(self, image: np.ndarray) -> None:
        """Hand a BGR picture to the window (it shows the latest one it has at its next frame)."""
        image = np.ascontiguousarray(image)
        if image.nbytes > self._buffer.capacity:
            self._grow(image.nbytes)
        self._buffer.write(image)

    def _grow(self, capacity: int) -> None:
        old, self._buffer = self._buffer, FrameBuffer.create(capacity)
        self._send(UseBuffer(self._buffer.name))
        old.close()
        old.unlink()  # the window keeps its mapping until it has moved to the new buffer

    def _send(self, message: UseBuffer | CloseWindow) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # a window that is gone needs no message
            self._conn.send(message)

    def follow(self, control: MonitorControl, host: WindowHost) -> None:
        """Show `control.split_screen()` as it changes and pass the window's keys to `host`, until `close()`."""
        self._threads = [
            threading.Thread(target=self._pump, args=(control,), name="rtmon-window-pump", daemon=True),
            threading.Thread(target=self._listen, args=(host,), name="rtmon-window-keys", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, control: MonitorControl) -> None:
        # Composing a split screen costs tens of milliseconds of CPU the engines would rather have:
        # compose again only when the snapshot version says something changed (or now and then,
        # for the overlays' figures), and never faster than the display shows or the source
        # delivers. The version costs nothing to ask for; a snapshot computes every engine's
        # percentiles, so the source's rate is read from one only every RATE_CHECK_S.
        seen, composed_at, rate_read_at = None, -math.inf, -math.inf
        period = 1.0 / self.refresh_hz
        while not self._closing.wait(period):
            try:
                version, now = control.snapshot_version(), time.monotonic()
                if now - rate_read_at >= RATE_CHECK_S:
                    period = 1.0 / min(self.refresh_hz, control.snapshot().source.nominal_fps or math.inf)
                    rate_read_at = now
                if version == seen and now - composed_at < REFRESH_AT_LEAST_S:
                    continue
                image = control.split_screen()
                if image is not None:
                    self.show(image)
                    seen, composed_at = version, now
            except Exception as exc:  # the pipeline's trouble must not end the window; the TUI reports it
                log.debug("window: no picture: %s", exc)

    def _listen(self, host: WindowHost) -> None:
        while True:
            try:
                event: WindowEvent = self._conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(event, KeyPressed | CloseRequested):
                try:
                    host.press(event.key if isinstance(event, KeyPressed) else QUIT_KEY)
                except Exception as exc:
                    log.error("window: key %s: %s", event, exc)
        if not self._closing.is_set():
            self._process.join(timeout=5)  # reap it: no zombie
            host.window_lost(f"window: the window process ended unexpectedly (exit code {self._process.exitcode})")

    def close(self) -> None:
        """Close the window and end its process (reaped, never left behind). Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._send(CloseWindow())
        pump, listener = self._threads or (None, None)
        if pump:
            pump.join(timeout=5)  # it may be writing a picture into the buffer
        _stop(self._process)
        if listener and listener is not threading.current_thread():
            listener.join(timeout=5)  # the window's end of the pipe is closed now: it sees EOF
        self._conn.close()
        self._buffer.close()
        self._buffer.unlink()


def _stop(process) -> None:
    """Wait a moment for the process to end by itself, then make it; always reap it."""
    process.join(timeout=3)
    if process.is_alive():
        process.terminate()
        process.join(timeout=2)
    if process.is_alive():
        process.kill()
        process.join()
