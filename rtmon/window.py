"""The desktop window: the split screen at the display's rate, and the terminal UI's keys.

The window lives in a process of its own, started with "spawn", whose main thread draws (the one
thread every window library accepts, on every platform). It draws with SDL through pygame-ce in
software, so it needs no OpenGL context and also works over SSH's X forwarding. The monitor
process composes the picture and hands it over through shared memory (`FrameBuffer`); the window
sends typed events back over a pipe (`KeyPressed`, `CloseRequested`), and a thread of the monitor
process passes each key to the `WindowHost` (the terminal UI when it runs, else `act_on_key`).

The window process ends with the monitor: on Linux the kernel sends it SIGTERM when its parent
dies, even by `kill -9` (PR_SET_PDEATHSIG); everywhere it also checks its parent every frame.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rtmon.errors import UserError
from rtmon.processes import die_with_parent

if TYPE_CHECKING:
    from rtmon.snapshot import MonitorControl, MonitorSnapshot

log = logging.getLogger("rtmon")

TITLE = "rtmon"
ENGINE_KEYS = "123456789"
KEYS = (*ENGINE_KEYS, "r", "p", "s", "q")  # what the window passes on; `f` and Escape it handles itself
DEFAULT_CAPACITY = 1920 * 1080 * 3  # bytes per picture slot; a bigger picture gets a bigger buffer
OPEN_TIMEOUT_S = 30.0
REFRESH_AT_LEAST_S = 0.5  # recompose this often even when no engine has a new result (FPS decays, states change)
INSTALL_HINT = "pip install 'rtmon[window]'"
HEADLESS_DRIVERS = {"offscreen", "dummy", "evdev"}  # SDL drivers that show nothing on a screen


# --- what crosses the pipe ---------------------------------------------------------------------


@dataclass(frozen=True)
class WindowOpened:
    driver: str  # SDL's video driver: x11, wayland, windows, cocoa, ...
    refresh_hz: float


@dataclass(frozen=True)
class WindowFailed:
    reason: str  # one line, said to the user after "window: "


@dataclass(frozen=True)
class KeyPressed:
    key: str  # one of KEYS


@dataclass(frozen=True)
class CloseRequested:
    """The window's close button (or the window manager) asked to close."""


@dataclass(frozen=True)
class UseBuffer:
    name: str  # a bigger FrameBuffer replaced the previous one


@dataclass(frozen=True)
class CloseWindow:
    """The monitor is stopping."""


WindowEvent = WindowOpened | WindowFailed | KeyPressed | CloseRequested


# --- the picture in shared memory --------------------------------------------------------------


class FrameBuffer:
    """Two BGR picture slots in shared memory: one process writes, another reads the latest.

    The header holds the number of pictures written, the slot of the latest one, and per slot a
    sequence number, width and height. A slot's sequence number is odd while it is being written
    (a seqlock), so the reader never shows a torn picture and neither side ever waits on a lock
    the other could die holding. The writer fills the slot the reader is not being pointed at.
    """

    _HEADER = 8  # int64s: pictures written, latest slot, (sequence, width, height) x 2

    def __init__(self, shm: SharedMemory) -> None:
        self._shm = shm
        self._header = np.ndarray((self._HEADER,), np.int64, shm.buf)
        self.capacity = (shm.size - self._HEADER * 8) // 2

    @classmethod
    def create(cls, capacity: int) -> FrameBuffer:
        buffer = cls(SharedMemory(create=True, size=cls._HEADER * 8 + 2 * capacity))
        buffer._header[:] = 0
        return buffer

    @classmethod
    def attach(cls, name: str) -> FrameBuffer:
        return cls(SharedMemory(name=name))

    @property
    def name(self) -> str:
        return self._shm.name

    def _slot(self, slot: int, nbytes: int) -> np.ndarray:
        start = self._HEADER * 8 + slot * self.capacity
        return np.ndarray((nbytes,), np.uint8, self._shm.buf, start)

    def write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(f"expected a BGR uint8 picture, got {image.dtype} {image.shape}")
        if image.nbytes > self.capacity:
            raise ValueError(f"a {width}x{height} picture does not fit in {self.capacity} bytes")
        header = self._header
        slot = 1 - int(header[1]) if header[0] else 0
        seq = 2 + 3 * slot
        header[seq] += 1  # odd: being written
        header[seq + 1], header[seq + 2] = width, height
        self._slot(slot, image.nbytes)[:] = image.reshape(-1)
        header[seq] += 1  # even: complete
        header[1] = slot
        header[0] += 1

    def read(self, after: int = 0) -> tuple[int, np.ndarray] | None:
        """(picture number, a copy of the latest picture) if one newer than `after` is complete."""
        header = self._header
        number = int(header[0])
        if number <= after:
            return None
        seq = 2 + 3 * int(header[1])
        before = int(header[seq])
        width, height = int(header[seq + 1]), int(header[seq + 2])
        if before % 2 or width * height * 3 > self.capacity:
            return None
        image = self._slot((seq - 2) // 3, width * height * 3).copy().reshape(height, width, 3)
        if int(header[seq]) != before:  # rewritten while copying: take the next one
            return None
        return number, image

    def close(self) -> None:
        self._header = None  # release the view before the mapping goes away
        self._shm.close()

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()


# --- geometry ------------------------------------------------------------------------------------


def letterbox(picture: tuple[int, int], window: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where a (width, height) picture goes in a (width, height) window, aspect ratio kept:
    (x, y, width, height), centred, the rest left as bars."""
    pw, ph = picture
    ww, wh = window
    if min(pw, ph, ww, wh) <= 0:
        return 0, 0, 0, 0
    scale = min(ww / pw, wh / ph)
    width, height = max(1, round(pw * scale)), max(1, round(ph * scale))
    return (ww - width) // 2, (wh - height) // 2, width, height


def initial_size(desktop: tuple[int, int], aspect: float = 32 / 9) -> tuple[int, int]:
    """The window's first size: a split screen of two 16:9 halves in 80% of the desktop."""
    width, height = desktop
    return letterbox((round(1000 * aspect), 1000), (int(width * 0.8), int(height * 0.8)))[2:]


# --- the window process --------------------------------------------------------------------------


class WindowView:
    """The window itself (window process only): the latest picture, letterboxed; keys out."""

    def __init__(self, title: str = TITLE) -> None:
        import pygame

        self._pg = pygame
        pygame.display.init()
        if pygame.display.get_driver() in HEADLESS_DRIVERS and not os.environ.get("SDL_VIDEODRIVER"):
            # SDL falls back to drawing into memory when no display server answers: nobody would see it
            raise RuntimeError("no display server answers there")
        pygame.font.init()
        desktops = pygame.display.get_desktop_sizes() or [(1280, 720)]
        self.window = pygame.Window(title, initial_size(desktops[0]), resizable=True)
        rates = pygame.display.get_desktop_refresh_rates() or [0]
        self.refresh_hz = float(rates[0] or 60)  # 0: the driver does not say (Xvfb, X forwarding)
        self.fullscreen = False
        self.picture: np.ndarray | None = None
        self._keys = {getattr(pygame, f"K_{k}"): k for k in KEYS} | {
            getattr(pygame, f"K_KP{k}"): k for k in ENGINE_KEYS
        }
        self._dirty = True
        self._close_asked = False

    @property
    def driver(self) -> str:
        return self._pg.display.get_driver()

    def handle(self, event) -> KeyPressed | CloseRequested | None:
        """One SDL event: what the monitor should hear of it, if anything."""
        pg = self._pg
        if event.type in (pg.QUIT, pg.WINDOWCLOSE):
            # SDL reports one click on the close button twice (the window's close, then the app's quit)
            asked, self._close_asked = self._close_asked, True
            return None if asked else CloseRequested()
        if event.type == pg.KEYDOWN:
            if event.key == pg.K_f or (event.key == pg.K_ESCAPE and self.fullscreen):
                self.toggle_fullscreen()
            elif event.key in self._keys:
                return KeyPressed(self._keys[event.key])
        elif event.type in (pg.WINDOWSIZECHANGED, pg.WINDOWEXPOSED, pg.WINDOWRESTORED):
            self._dirty = True
        return None

    def toggle_fullscreen(self) -> None:
        self.fullscreen = not self.fullscreen
        if self.fullscreen:
            self.window.set_fullscreen(desktop=True)  # the desktop's resolution: no mode switch
        else:
            self.window.set_windowed()
        self._dirty = True

    def show(self, picture: np.ndarray) -> None:
        self.picture = picture
        self._dirty = True

    def draw(self) -> None:
        """Present the picture scaled to the window, if anything changed since the last time."""
        if not self._dirty:
            return
        pg = self._pg
        surface = self.window.get_surface()
        surface.fill((0, 0, 0))
        if self.picture is None:
            text = pg.font.Font(None, 32).render("rtmon: waiting for the first frame…", True, (170, 170, 170))
            surface.blit(text, text.get_rect(center=surface.get_rect().center))
        else:
            height, width = self.picture.shape[:2]
            x, y, w, h = letterbox((width, height), surface.get_size())
            if w and h:
                source = pg.image.frombuffer(self.picture, (width, height), "BGR")
                surface.blit(pg.transform.smoothscale(source, (w, h)), (x, y))
        self.window.flip()
        self._dirty = False

    def serve(self, conn, buffer: FrameBuffer, parent_pid: int) -> None:
        """Draw at the display's rate and pass on events, until told to close or the parent is gone."""
        pg = self._pg
        clock = pg.time.Clock()
        shown = 0
        while os.getppid() == parent_pid:
            while conn.poll():
                message = conn.recv()
                if isinstance(message, CloseWindow):
                    return
                if isinstance(message, UseBuffer):
                    with contextlib.suppress(FileNotFoundError):  # already replaced again: the next one comes
                        bigger = FrameBuffer.attach(message.name)
                        buffer.close()
                        buffer, shown = bigger, 0
            for event in pg.event.get():
                out = self.handle(event)
                if out is not None:
                    conn.send(out)
            latest = buffer.read(after=shown)
            if latest is not None:
                shown, picture = latest
                self.show(picture)
            self.draw()
            clock.tick(self.refresh_hz)


def _display_name() -> str:
    return os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY") or "(default)"


def window_process(conn, buffer_name: str, title: str, parent_pid: int) -> None:
    """The window process's main: open the window, say whether it opened, then serve until closed."""
    # SIGTERM, sent when the thread that started us exits: the monitor starts the window from its
    # main thread; the window also checks its parent every frame.
    die_with_parent(parent_pid, signal.SIGTERM, poll_s=None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the monitor's; it then closes us
    # SDL and pygame talk on stdout/stderr, which would scribble over the terminal UI; what the
    # user must know travels over the pipe instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    os.environ["SDL_VIDEO_X11_WMCLASS"] = title  # so window managers (and tests) can find it
    os.environ["SDL_NO_SIGNAL_HANDLERS"] = "1"  # SIGTERM ends us; SDL would turn it into a close event
    try:
        view = WindowView(title)
    except ModuleNotFoundError as exc:
        conn.send(WindowFailed(f"the window extra is not installed ({exc}); {INSTALL_HINT}"))
        return
    except ImportError as exc:
        conn.send(WindowFailed(f"the window library does not load ({exc}); reinstall it: {INSTALL_HINT}"))
        return
    except Exception as exc:  # pygame.error: no display server, connection refused, ...
        conn.send(WindowFailed(f"cannot open a window on display {_display_name()} ({exc})"))
        return
    buffer = FrameBuffer.attach(buffer_name)
    with contextlib.suppress(EOFError, OSError, KeyboardInterrupt):  # the monitor went away
        conn.send(WindowOpened(view.driver, view.refresh_hz))
        view.serve(conn, buffer, parent_pid)


# --- the monitor's side --------------------------------------------------------------------------


class WindowHost(Protocol):
    """Whoever runs the monitor: it receives the window's keys and hears when the window is lost."""

    def press(self, key: str) -> None: ...  # one of KEYS; the close button arrives as "q"

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
        """Start the window process (call from the main thread: see `_die_with_parent`)."""
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
        # compose again only when an engine has a new result (or now and then, for the overlays),
        # and never faster than the display shows or the source delivers.
        last_state, last_time = None, 0.0
        period = 1.0 / self.refresh_hz
        while not self._closing.wait(period):
            try:
                snapshot = control.snapshot()
                state, now = _picture_state(snapshot), time.monotonic()
                period = 1.0 / min(self.refresh_hz, snapshot.source.nominal_fps or math.inf)
                if state == last_state and now - last_time < REFRESH_AT_LEAST_S:
                    continue
                image = control.split_screen()
                if image is not None:
                    self.show(image)
                    last_state, last_time = state, now
            except Exception as exc:  # the pipeline's trouble must not end the window; the TUI reports it
                log.debug("window: no picture: %s", exc)

    def _listen(self, host: WindowHost) -> None:
        while True:
            try:
                event = self._conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(event, KeyPressed | CloseRequested):
                try:
                    host.press(event.key if isinstance(event, KeyPressed) else "q")
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


def _picture_state(snapshot: MonitorSnapshot) -> tuple:
    """What, when it changes, makes a new split screen worth composing."""
    return tuple((e.name, e.state, e.processed) for e in snapshot.engines), snapshot.recording, snapshot.source.state


def _stop(process) -> None:
    """Wait a moment for the process to end by itself, then make it; always reap it."""
    process.join(timeout=3)
    if process.is_alive():
        process.terminate()
        process.join(timeout=2)
    if process.is_alive():
        process.kill()
        process.join()


# --- keys without a terminal ---------------------------------------------------------------------


def act_on_key(key: str, control: MonitorControl, notify: Callable[[str], None], quit: Callable[[], None]) -> None:
    """What a window key does when no terminal UI runs: the same as the terminal UI's key, through
    the same `MonitorControl`. Each toggle starts from the pipeline's own state (the snapshot), so
    whatever else toggled it, the key turns it the other way."""
    if key == "q":
        quit()
    elif key in ENGINE_KEYS:
        engines = control.snapshot().engines
        number = int(key)
        if number > len(engines):
            notify(f"there is no engine {number}")
            return
        engine, turn_on = engines[number - 1], engines[number - 1].state == "off"
        control.set_enabled(engine.name, turn_on)
        notify(f"{engine.name} turned {'on' if turn_on else 'off'}")
    elif key == "p":
        pause = control.snapshot().source.state != "paused"
        control.set_paused(pause)
        notify("feed paused" if pause else "feed resumed")
    elif key == "r":
        was = control.snapshot().recording
        path = control.toggle_recording()
        notify(f"recording to {path}" if path else f"recording stopped{f', saved {was}' if was else ''}")
    elif key == "s":
        notify(f"saved {control.save_snapshot_png()}")
