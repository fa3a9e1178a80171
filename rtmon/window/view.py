"""The window process: opens the window, shows the latest picture letterboxed at the display's
rate, and sends keys and the close button back to the monitor."""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np

from rtmon.keys import ENGINE_KEYS, FULLSCREEN_KEY, passed_on_keys
from rtmon.processes import die_with_parent
from rtmon.window.buffer import FrameBuffer
from rtmon.window.messages import CloseRequested, CloseWindow, KeyPressed, UseBuffer, WindowFailed, WindowOpened

TITLE = "rtmon"
INSTALL_HINT = "pip install 'rtmon[window]'"
HEADLESS_DRIVERS = {"offscreen", "dummy", "evdev"}  # SDL drivers that show nothing on a screen


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


# --- the window ----------------------------------------------------------------------------------


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
        self._keys = {getattr(pygame, f"K_{k}"): k for k in passed_on_keys()} | {
            getattr(pygame, f"K_KP{k}"): k for k in ENGINE_KEYS
        }
        self._fullscreen_key = getattr(pygame, f"K_{FULLSCREEN_KEY}")
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
            if event.key == self._fullscreen_key or (event.key == pg.K_ESCAPE and self.fullscreen):
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
