"""The desktop window, as a person sees it: a real X server (Xvfb), real key presses (xdotool),
screenshots of the window (ImageMagick's `import`), the real monitor; plus its parts against a
fake `MonitorControl`."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from rtmon.config import MonitorSettings
from rtmon.errors import UserError
from rtmon.keys import MonitorActions
from rtmon.window import Window, check_can_open
from rtmon.window import host as window_host
from rtmon.window.buffer import FrameBuffer
from rtmon.window.messages import CloseRequested, KeyPressed, WindowOpened
from rtmon.window.view import initial_size, letterbox
from tests.cli_helpers import assert_one_line_error, rtmon_command, run_rtmon
from tests.test_tui import FakeControl, split_screen_image

X_TOOLS = ("Xvfb", "xdotool", "import")
needs_x = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in X_TOOLS), reason=f"needs {', '.join(X_TOOLS)} (.ci/run installs them)"
)
SCREEN = (1280, 720)


# --- an X server, and what a person does with it -------------------------------------------------


@pytest.fixture(scope="module")
def xvfb():
    """A private X server for this module; yields its DISPLAY name."""
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write)
    number = b""
    while not number.endswith(b"\n") and select.select([read], [], [], 20)[0]:
        chunk = os.read(read, 32)
        if not chunk:
            break
        number += chunk
    os.close(read)
    number = number.decode().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a loaded machine: not the window's fault, but leave nothing behind
        server.kill()
        server.wait(timeout=10)


@pytest.fixture
def display(xvfb, monkeypatch) -> str:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    no_window_left(xvfb)
    return xvfb


def x(display: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=20,
                            env={**os.environ, "DISPLAY": display})
    return result.stdout.strip()


def no_window_left(display: str, timeout: float = 10) -> None:
    """Wait until no earlier test's rtmon window is still on this (shared) X server, so
    `find_window` cannot return one being destroyed (ImageMagick's `import` then hangs)."""
    deadline = time.monotonic() + timeout
    while x(display, "search", "--classname", "^rtmon$"):
        assert time.monotonic() < deadline, "an earlier rtmon window is still on the X server"
        time.sleep(0.1)


def find_window(display: str, timeout: float) -> str:
    """The id of rtmon's window (its X class is "rtmon"), once it is mapped (SDL also makes unmapped ones)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = x(display, "search", "--onlyvisible", "--classname", "^rtmon$").split()
        if found:
            return found[0]
        time.sleep(0.25)
    raise AssertionError(f"no rtmon window appeared within {timeout:.0f} s")


def press(display: str, window_id: str, *keys: str) -> None:
    x(display, "windowfocus", "--sync", window_id)
    for key in keys:
        x(display, "key", key)


def screenshot(display: str, window_id: str, timeout: float = 20) -> np.ndarray:
    """What the window shows on the screen, BGR."""
    png = subprocess.run(["import", "-window", window_id, "png:-"], capture_output=True, timeout=timeout,
                         env={**os.environ, "DISPLAY": display}, check=True).stdout
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def on_screen(display: str, expected: np.ndarray) -> str | None:
    """The rtmon window's id once it shows `expected`, else None. The window is found anew at every
    try and a capture that fails counts as "not yet": the window a search found can be gone by the
    time `import` asks for it, and `import` then waits for it (the full suite, 2026-12-08: "no
    window with specified ID exists", 20 s, a failed test)."""
    window_id = find_window(display, 20)
    try:
        shot = screenshot(display, window_id, timeout=5)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return window_id if difference(shot, expected) < 4 else None


def click_close_button(display: str, window_id: str) -> None:
    """What the window manager sends when the close button is clicked: WM_DELETE_WINDOW."""

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]

    xlib = ctypes.CDLL("libX11.so.6")
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XInternAtom.restype = ctypes.c_ulong
    xlib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    xlib.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    xlib.XFlush.argtypes = xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    conn = xlib.XOpenDisplay(display.encode())
    assert conn, f"cannot open {display}"
    event = ClientMessage(type=33, window=int(window_id), format=32,  # 33: ClientMessage
                          message_type=xlib.XInternAtom(conn, b"WM_PROTOCOLS", 0))
    event.data[0] = xlib.XInternAtom(conn, b"WM_DELETE_WINDOW", 0)
    xlib.XSendEvent(conn, int(window_id), 0, 0, ctypes.byref(event))
    xlib.XFlush(conn)
    xlib.XCloseDisplay(conn)


def wait_until(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def holds(predicate, seconds: float) -> None:
    """`predicate` stays true for `seconds`: what should not happen does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.05)


def shown_as(image: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """`image` as the window should show it: letterboxed into a (width, height) window."""
    out = np.zeros((window[1], window[0], 3), np.uint8)
    left, top, width, height = letterbox((image.shape[1], image.shape[0]), window)
    out[top:top + height, left:left + width] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return out


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


class RecordingHost:
    """A `WindowHost` that remembers what arrived."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.lost: list[str] = []

    def press(self, key: str) -> None:
        self.keys.append(key)

    def window_lost(self, reason: str) -> None:
        self.lost.append(reason)


# --- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picture", "window", "placed"),
    [
        ((1920, 540), (1024, 288), (0, 0, 1024, 288)),  # same aspect: fills it
        ((1920, 540), (1000, 1000), (0, 359, 1000, 281)),  # wide picture, square window: bars above and below
        ((640, 480), (1600, 600), (400, 0, 800, 600)),  # narrow picture, wide window: bars left and right
        ((100, 50), (50, 50), (0, 12, 50, 25)),  # shrinks too
        ((100, 50), (0, 0), (0, 0, 0, 0)),  # a minimized window
    ],
)
def test_letterbox_keeps_the_aspect_ratio(picture, window, placed):
    assert letterbox(picture, window) == placed
    x0, y0, width, height = placed
    if width:
        assert abs(width / height - picture[0] / picture[1]) < 0.05
        assert x0 + width <= window[0] and y0 + height <= window[1]


def test_initial_size_fits_a_split_screen_into_most_of_the_desktop():
    assert initial_size((1280, 720)) == (1024, 288)
    assert initial_size((1920, 1080)) == (1536, 432)


def test_frame_buffer_hands_over_the_latest_picture_whole():
    buffer = FrameBuffer.create(640 * 360 * 3)
    reader = FrameBuffer.attach(buffer.name)
    try:
        assert reader.read() is None
        first = split_screen_image()
        buffer.write(first)
        number, got = reader.read()
        assert number == 1 and np.array_equal(got, first)
        assert reader.read(after=number) is None  # nothing newer
        second = np.full((360, 640, 3), 7, np.uint8)
        buffer.write(second)
        buffer.write(first)  # two writes before a read: the reader gets the latest only
        number, got = reader.read(after=number)
        assert number == 3 and np.array_equal(got, first)
        with pytest.raises(ValueError, match="does not fit"):
            buffer.write(np.zeros((361, 640, 3), np.uint8))
        header = np.ndarray((8,), np.int64, buffer._shm.buf)
        slot = int(header[1])
        header[2 + 3 * slot] += 1  # the writer is half-way through that slot
        assert reader.read() is None  # never a torn picture
        header[2 + 3 * slot] += 1
        del header
    finally:
        reader.close()
        buffer.close()
        buffer.unlink()


# --- keys without the terminal UI ----------------------------------------------------------------


def test_window_keys_act_like_the_terminal_keys(caplog):
    from rtmon.monitor import _WindowOnlyHost

    control = FakeControl()
    host = _WindowOnlyHost(control)
    caplog.set_level(logging.INFO, logger="rtmon")
    act = host.press
    act("1")
    assert control.called("set_enabled") == [("torch-fp32", False)]
    act("1")
    act("2")
    assert control.called("set_enabled")[1:] == [("torch-fp32", True), ("ort-cpu", False)]
    assert caplog.messages == ["torch-fp32 turned off", "torch-fp32 turned on", "ort-cpu turned off"]
    act("7")
    assert caplog.messages[-1] == "there is no engine 7"
    act("p")
    act("p")
    assert control.called("set_paused") == [(True,), (False,)]
    assert caplog.messages[-2:] == ["feed paused", "feed resumed"]
    act("r")
    act("r")
    assert caplog.messages[-2:] == ["recording to recordings/rec-1.mp4", "recording stopped, saved recordings/rec-1.mp4"]
    act("s")
    assert caplog.messages[-1] == "saved recordings/snapshot-1.png"
    assert not host.stop.is_set()
    act("q")
    assert host.stop.is_set()


def test_a_window_key_that_fails_is_one_line_in_the_log(caplog):
    from rtmon.monitor import _WindowOnlyHost

    control = FakeControl()

    def disk_full() -> str:
        raise OSError(28, "No space left on device")

    control.save_snapshot_png = disk_full
    caplog.set_level(logging.INFO, logger="rtmon")
    _WindowOnlyHost(control).press("s")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "snapshot: OSError: [Errno 28] No space left on device")]


def test_engine_keys_start_from_the_pipelines_state():
    """Whoever turned an engine off (the terminal UI, another key), its key turns it back on."""
    control = FakeControl()
    control.set_enabled("ort-cpu", False)
    MonitorActions(control).press("2", control.snapshot())
    assert control.called("set_enabled")[-1] == ("ort-cpu", True)


def test_the_window_composes_only_when_the_snapshot_version_changes(monkeypatch):
    """At the display's rate the window asks only for the version; a snapshot and a new split
    screen only when it changed (here: never now and then, to see it)."""
    monkeypatch.setattr(window_host, "REFRESH_AT_LEAST_S", 1e9)
    monkeypatch.setattr(window_host, "RATE_CHECK_S", 1e9)
    control = FakeControl(frozen=True)  # nothing changes unless a command is given
    buffer = FrameBuffer.create(split_screen_image().nbytes)
    window = window_host.Window(None, None, buffer, WindowOpened("test", 200.0))
    pump = threading.Thread(target=window._pump, args=(control,), daemon=True)
    pump.start()
    try:
        wait_until(lambda: len(control.called("snapshot_version")) >= 30, 10, "the window to ask 30 times")
        assert len(control.called("split_screen")) == 1  # the first picture, then nothing changed
        assert len(control.called("snapshot")) == 1  # the source's rate, once
        control.set_paused(True)
        wait_until(lambda: len(control.called("split_screen")) == 2, 5, "a picture after the change")
        reader = FrameBuffer.attach(buffer.name)
        number, shown = reader.read()
        reader.close()
        assert number == 2 and np.array_equal(shown, split_screen_image())
    finally:
        window._closing.set()
        pump.join(timeout=5)
        buffer.close()
        buffer.unlink()


async def test_with_the_terminal_ui_a_window_key_is_that_key_in_the_terminal_ui():
    from rtmon.monitor import _TerminalHost
    from rtmon.tui import MonitorApp

    control = FakeControl()
    app = MonitorApp(control)
    async with app.run_test(size=(80, 24)) as pilot:
        host = _TerminalHost(app)
        await asyncio.to_thread(host.press, "1")  # from the window's thread, as in the monitor
        await pilot.pause()
        assert control.called("set_enabled") == [("torch-fp32", False)]
        await asyncio.to_thread(host.press, "q")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


def test_without_the_terminal_ui_sigterm_and_ctrl_c_stop_the_monitor_cleanly():
    from rtmon.monitor import _run_without_terminal

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for sig in (signal.SIGTERM, signal.SIGINT):
        timer = threading.Timer(0.3, os.kill, (os.getpid(), sig))
        timer.start()
        assert _run_without_terminal(FakeControl(), None) == 0
        timer.join()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_without_the_terminal_ui_a_lost_window_ends_the_monitor_with_one_line():
    from rtmon.monitor import _run_without_terminal

    class DyingWindow:
        def follow(self, control, host) -> None:
            threading.Timer(0.2, host.window_lost, ("window: the window process ended unexpectedly (exit code -9)",)).start()

    with pytest.raises(UserError, match="ended unexpectedly"):
        _run_without_terminal(FakeControl(), DyingWindow())


# --- what cannot open ----------------------------------------------------------------------------


def test_quick_checks_name_what_is_missing(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(UserError, match="no display"):
        check_can_open()
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"window extra is not installed; pip install 'rtmon\[window\]'"):
        check_can_open()


def test_in_the_terminal_ui_a_window_that_cannot_open_is_a_notice(monkeypatch):
    from rtmon import monitor
    from rtmon.tui import MonitorApp

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="window: no display"):
        monitor._open_window(MonitorSettings(window=True, tui=False))
    window, notice = monitor._open_window(MonitorSettings(window=True, tui=True))
    assert window is None and notice.startswith("window: no display")
    said = []
    monkeypatch.setattr(MonitorApp, "notify", lambda self, message, **kw: said.append((message, kw["severity"])))
    app = monitor._terminal_app(FakeControl(), MonitorSettings(window=True), None, notice)
    assert isinstance(app, MonitorApp)
    assert said == [(notice, "error")]


def test_no_display_is_one_line(rtmon_env):
    env = {k: v for k, v in rtmon_env["env"].items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"}}
    result = run_rtmon(["--window", "--no-tui", "--source", "sample"], {**rtmon_env, "env": env}, timeout=120)
    assert_one_line_error(result, "window: no display")


def test_only_the_terminal_ui_needs_a_terminal(rtmon_env):
    result = run_rtmon(["--source", "sample"], rtmon_env, timeout=120)  # stdout is a pipe here
    assert_one_line_error(result, "terminal UI needs a terminal", "--window --no-tui")


def test_no_tui_without_a_window_is_one_line(rtmon_env):
    result = run_rtmon(["--no-tui", "--source", "sample"], rtmon_env, timeout=120)
    assert_one_line_error(result, "--no-tui: nothing would show the monitor")


@needs_x
def test_a_display_that_refuses_the_connection_is_one_line(rtmon_env):
    unused = next(n for n in range(150, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    env = {**rtmon_env["env"], "DISPLAY": f":{unused}"}
    env.pop("WAYLAND_DISPLAY", None)
    result = run_rtmon(["--window", "--no-tui", "--source", "sample"], {**rtmon_env, "env": env}, timeout=300)
    assert_one_line_error(result, f"window: cannot open a window on display :{unused}")


@needs_x
def test_without_the_window_extra_is_one_line(rtmon_env, xvfb, tmp_path, monkeypatch):
    fake = tmp_path / "site" / "pygame"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pygame'\", name='pygame')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))  # found by name, but does not import: as if uninstalled
    env = {**rtmon_env["env"], "DISPLAY": xvfb}
    result = run_rtmon(["--window", "--no-tui", "--source", "sample"], {**rtmon_env, "env": env}, timeout=300)
    assert_one_line_error(result, "window: the window extra is not installed", "pip install 'rtmon[window]'")


# --- the window itself, in this process ----------------------------------------------------------


@pytest.fixture
def view(display, monkeypatch):
    import pygame

    from rtmon.window.view import WindowView

    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    deadline = time.monotonic() + 15
    while True:  # a loaded 2-core machine: SDL's first connection to Xvfb can fail (the full suite, 2026-12-07)
        try:
            view = WindowView()
            break
        except RuntimeError:
            pygame.display.quit()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield view
    view.window.destroy()
    pygame.display.quit()


@needs_x
def test_view_turns_keys_and_the_close_button_into_events(view):
    import pygame

    def key(code: int):
        return view.handle(pygame.event.Event(pygame.KEYDOWN, key=code, mod=0, unicode=""))

    assert [key(getattr(pygame, f"K_{k}")) for k in "123456789rpsq"] == [KeyPressed(k) for k in "123456789rpsq"]
    assert key(pygame.K_KP3) == KeyPressed("3")
    assert key(pygame.K_x) is None and key(pygame.K_v) is None  # keys the window has no use for
    assert view.handle(pygame.event.Event(pygame.WINDOWCLOSE, window=None)) == CloseRequested()
    assert view.handle(pygame.event.Event(pygame.QUIT)) is None  # the same click, as SDL reports it again


@needs_x
def test_f_toggles_full_screen_and_escape_leaves_it(view):
    import pygame

    windowed = view.window.size
    assert windowed == initial_size(SCREEN)
    assert view.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_f, mod=0, unicode="f")) is None
    assert view.fullscreen and view.window.size == SCREEN
    view.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_f, mod=0, unicode="f"))
    assert not view.fullscreen and view.window.size == windowed
    view.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_f, mod=0, unicode="f"))
    assert view.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0, unicode="")) is None
    assert not view.fullscreen and view.window.size == windowed
    view.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0, unicode=""))
    assert not view.fullscreen  # Escape only leaves full screen


@needs_x
def test_view_letterboxes_the_picture_into_any_window_size(view):
    import pygame

    view.window.size = (800, 600)  # taller than the picture: bars above and below
    picture = split_screen_image()
    view.show(picture)
    view.draw()
    drawn = cv2.cvtColor(pygame.surfarray.array3d(view.window.get_surface()).swapaxes(0, 1), cv2.COLOR_RGB2BGR)
    assert drawn.shape == (600, 800, 3)
    left, top, width, height = letterbox((640, 180), (800, 600))
    assert (left, top, width, height) == (0, 187, 800, 225)
    assert drawn[:top].max() == 0 and drawn[top + height:].max() == 0
    assert difference(drawn, shown_as(picture, (800, 600))) < 3


# --- the window process --------------------------------------------------------------------------


@needs_x
def test_window_process_shows_the_split_screen_and_sends_keys_and_close_back(display):
    control, host = FakeControl(), RecordingHost()
    window = Window.open()
    pid = window.pid
    try:
        assert window.driver == "x11"
        window.follow(control, host)
        expected = shown_as(split_screen_image(), initial_size(SCREEN))
        window_id = wait_until(lambda: on_screen(display, expected), 10, "the split screen on screen")
        press(display, window_id, "1", "KP_2", "r", "p", "s", "x", "f", "f", "q")
        wait_until(lambda: host.keys == ["1", "2", "r", "p", "s", "q"], 10, f"the keys (got {host.keys})")
        click_close_button(display, window_id)
        wait_until(lambda: host.keys[6:] == ["q"], 10, "the close button as q")
        holds(lambda: host.keys == ["1", "2", "r", "p", "s", "q", "q"], 0.5)  # one click, one q
        assert not control.called("set_enabled")  # the window only passes keys on; the host acts
    finally:
        window.close()
    assert gone(pid) and host.lost == []
    window.close()  # twice is harmless


@needs_x
def test_a_bigger_picture_gets_a_bigger_buffer(display):
    window = Window.open()
    try:
        find_window(display, 20)
        big = cv2.resize(split_screen_image(), (3840, 1080), interpolation=cv2.INTER_NEAREST)
        window.show(big)
        expected = shown_as(big, initial_size(SCREEN))
        wait_until(lambda: on_screen(display, expected), 10, "the bigger picture")
    finally:
        window.close()


@needs_x
def test_window_process_ends_when_the_monitor_is_killed(display):
    code = "from rtmon.window import Window\nimport time\nw = Window.open()\nprint(w.pid, flush=True)\ntime.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()  # kill -9: no cleanup code runs in the monitor
        parent.wait(timeout=10)
        wait_until(lambda: gone(child), 5, "the window process to end")
    finally:
        parent.kill()
        parent.wait()


# --- the real monitor ----------------------------------------------------------------------------


def halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    middle = image.shape[1] // 2
    return image[:, : middle - 4], image[:, middle + 4 :]


@needs_x
def test_monitor_window_without_a_terminal_shows_both_engines_and_takes_the_keys(xvfb, tmp_path, rtmon_env):
    cmd, env = rtmon_command(["--window", "--no-tui", "--source", "sample", "--engines", "baseline,ort-cpu"], rtmon_env)
    env = {**env, "DISPLAY": xvfb}
    env.pop("WAYLAND_DISPLAY", None)
    no_window_left(xvfb)
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        monitor = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        window_id = find_window(xvfb, 240)
        shot = lambda: screenshot(xvfb, window_id)  # noqa: E731
        # both halves live: detections drawn on moving video, each half with its overlay panel
        first = _wait_shot(shot, lambda image: image.std() > 20, 120, "the first split screen")
        wait_until(lambda: all(difference(a, b) > 1 for a, b in zip(halves(first), halves(shot()), strict=True)),
                   60, "both halves to move")

        # p pauses; s saves what split_screen() returns, which is what the window shows
        press(xvfb, window_id, "p")
        still = _wait_still(shot, lambda image: image, 30)
        press(xvfb, window_id, "s")
        wait_until(lambda: "saved recordings/snapshot-" in log.read_text(), 20, "the PNG snapshot")  # written whole
        picture = cv2.imread(str(next((tmp_path / "recordings").glob("snapshot-*.png"))))
        assert difference(still, shown_as(picture, (still.shape[1], still.shape[0]))) < 4
        for half in halves(still):
            assert half.std() > 20  # a picture, not a blank
        # Each half carries its overlay, top left: bright text on a dark box. Checked at full size
        # on the picture the window shows (above), as a window scaled down leaves text too few
        # pixels to count on.
        for half in halves(picture):
            panel = half[: half.shape[0] // 12, : half.shape[1] // 8].max(axis=2)
            assert (panel <= 90).mean() > 0.55 and (panel > 160).sum() > 100, ((panel <= 90).mean(), (panel > 160).sum())
        press(xvfb, window_id, "p")

        # 1 turns the baseline (left) off: its half goes dark (the feed dimmed under "OFF"), the
        # right one goes on
        press(xvfb, window_id, "1")
        wait_until(lambda: "torch-fp32 turned off" in log.read_text(), 10, "the engine to turn off")
        lit = halves(still)[0].mean()
        dark = _wait_shot(shot, lambda image: halves(image)[0].mean() < 0.5 * lit, 30, "the left half to go dark")
        wait_until(lambda: difference(halves(dark)[1], halves(shot())[1]) > 1, 30, "the right half to go on")

        children = [p.pid for p in psutil.Process(monitor.pid).children(recursive=True)]
        assert children, "the window runs in a process of its own"
        press(xvfb, window_id, "q")
        assert monitor.wait(timeout=30) == 0, log.read_text()[-3000:]
        wait_until(lambda: all(gone(pid) for pid in children), 10, "rtmon's child processes to end")
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "feed paused" in text and "feed resumed" in text


def _wait_shot(shot, condition, timeout: float, what: str) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = shot()
        if condition(image):
            return image
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _wait_still(shot, part, timeout: float, moving=None, hold_s: float = 1.5) -> np.ndarray:
    """A screenshot once `part` of it has stayed the same for `hold_s` (while `moving` of it changed)."""
    deadline = time.monotonic() + timeout
    before = shot()
    while time.monotonic() < deadline:
        time.sleep(hold_s)
        now = shot()
        if difference(part(before), part(now)) == 0 and (moving is None or difference(moving(before), moving(now)) > 1):
            return now
        before = now
    raise AssertionError(f"the picture did not settle within {timeout:.0f} s")
