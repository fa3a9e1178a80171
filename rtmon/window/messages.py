"""What crosses the pipe between the monitor and its window process: one small typed message
per event, each going one way."""

from __future__ import annotations

from dataclasses import dataclass

# --- window → monitor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowOpened:
    driver: str  # SDL's video driver: x11, wayland, windows, cocoa, ...
    refresh_hz: float


@dataclass(frozen=True)
class WindowFailed:
    reason: str  # one line, said to the user after "window: "


@dataclass(frozen=True)
class KeyPressed:
    key: str  # one of `rtmon.keys.passed_on_keys()`


@dataclass(frozen=True)
class CloseRequested:
    """The window's close button (or the window manager) asked to close."""


WindowEvent = WindowOpened | WindowFailed | KeyPressed | CloseRequested

# --- monitor → window ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UseBuffer:
    name: str  # a bigger FrameBuffer replaced the previous one


@dataclass(frozen=True)
class CloseWindow:
    """The monitor is stopping."""
