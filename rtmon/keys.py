"""The monitor's keys: which key does what, and the doing, in one place for the terminal UI and
the desktop window.

`MONITOR_KEYS` is the one table: the terminal UI makes its bindings, footer and help from it, the
window the keys it passes on. Keys for both are passed on by the window: with the terminal UI
running a key pressed in the window becomes that key pressed in the terminal UI; without it the
window's host hands it to `MonitorActions.press`. Either way `MonitorActions` does it, through
`MonitorControl`, so a key does the same wherever it is pressed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtmon.core import EngineState, SourceState
from rtmon.errors import one_line

if TYPE_CHECKING:
    from rtmon.metrics import EngineSnapshot
    from rtmon.snapshot import MonitorControl, MonitorSnapshot

ENGINE_KEYS = "123456789"
QUIT_KEY = "q"
FULLSCREEN_KEY = "f"


class Where(str, enum.Enum):
    """Where a key works."""

    BOTH = "both"  # the terminal UI binds it; the window passes it on
    TUI = "tui"  # the terminal UI only
    WINDOW = "window"  # the window only, which handles it itself


@dataclass(frozen=True)
class MonitorKey:
    key: str  # the character pressed; "1" stands for every engine key 1-9
    action: str  # the terminal UI's `action_<action>`; the same name in `MonitorActions` where shared
    label: str  # the footer's word for it
    help: str  # the help screen's line for it
    where: Where = Where.BOTH
    display: str = ""  # how the footer and help write the key, when not as itself


MONITOR_KEYS = (
    MonitorKey(ENGINE_KEYS[0], "toggle_engine", "engine on/off", "turn engine 1…9 on or off (numbered as on its panel)",
               display="1-9"),
    MonitorKey("r", "toggle_recording", "record", "start / stop recording the split screen to recordings/"),
    MonitorKey("p", "toggle_pause", "pause", "pause / resume the feed"),
    MonitorKey("s", "save_snapshot", "snapshot", "save a PNG snapshot of the split screen"),
    MonitorKey("v", "toggle_preview", "preview", "show / hide the in-terminal preview of the split screen",
               Where.TUI),
    MonitorKey(FULLSCREEN_KEY, "toggle_fullscreen", "full screen",
               "in the window: full screen on / off (Escape leaves it)", Where.WINDOW),
    MonitorKey("?", "help", "help", "this help", Where.TUI),
    MonitorKey(QUIT_KEY, "quit", "quit", "quit (also Ctrl-C; the window's close button)"),
)


def passed_on_keys() -> tuple[str, ...]:
    """The characters the window passes on to whoever runs the monitor: 1-9, r, p, s, q."""
    keys: list[str] = []
    for k in MONITOR_KEYS:
        if k.where == Where.BOTH:
            keys.extend(ENGINE_KEYS if k.action == "toggle_engine" else k.key)
    return tuple(keys)


@dataclass(frozen=True)
class Notice:
    """What a key did, for the user: a notification in the terminal UI, a log line without it."""

    text: str
    severity: str = "information"  # information | warning | error (Textual's words)
    title: str = ""


class MonitorActions:
    """What the keys for both front ends do. A toggle turns the other way from what was last
    asked until the pipeline's snapshot shows it done, and from the pipeline's own state after
    that: a key pressed twice before the pipeline caught up undoes itself, and a change made
    elsewhere is not undone by the next press. Each method takes the snapshot its front end has
    (the terminal UI's latest, so a key never waits for a new one)."""

    def __init__(self, control: MonitorControl) -> None:
        self.control = control
        self._engine_asked: dict[str, bool] = {}
        self._pause_asked: bool | None = None
        self._recording = ""

    def engine_on(self, engine: EngineSnapshot) -> bool:
        """Whether `engine` is on, or has been asked to be and is not yet (then its panel says
        "turning on…"). A request the snapshot shows done is forgotten."""
        on = EngineState(engine.state) != EngineState.OFF
        asked = self._engine_asked.get(engine.name)
        if asked is None or asked == on:
            self._engine_asked.pop(engine.name, None)
            return on
        return asked

    def feed_paused(self, snapshot: MonitorSnapshot | None) -> bool:
        """Whether the feed is paused, or has been asked to be and is not yet."""
        paused = snapshot is not None and snapshot.source.state == SourceState.PAUSED
        if self._pause_asked is None or self._pause_asked == paused:
            self._pause_asked = None
            return paused
        return self._pause_asked

    def toggle_engine(self, number: int, snapshot: MonitorSnapshot | None) -> Notice:
        """Turn engine `number` (1-based, as numbered on the panels) off, or on."""
        engines = snapshot.engines if snapshot is not None else ()
        if not 1 <= number <= len(engines):
            return Notice(f"there is no engine {number}", "warning")
        engine = engines[number - 1]
        turn_on = not self.engine_on(engine)
        self._engine_asked[engine.name] = turn_on
        self.control.set_enabled(engine.name, turn_on)
        return Notice(f"{engine.name} turned {'on' if turn_on else 'off'}")

    def toggle_pause(self, snapshot: MonitorSnapshot | None) -> Notice:
        pause = not self.feed_paused(snapshot)
        self._pause_asked = pause
        self.control.set_paused(pause)
        return Notice("feed paused" if pause else "feed resumed")

    def toggle_recording(self, snapshot: MonitorSnapshot | None) -> Notice:
        """Start or stop recording (it writes files: the terminal UI calls it from a thread)."""
        try:
            path = self.control.toggle_recording()
        except Exception as exc:
            return Notice(one_line(exc, "recording"), "error")
        if path:
            self._recording = path
            return Notice(f"recording to {path}", title="recording")
        saved = self._recording or (snapshot.recording if snapshot is not None else "")
        self._recording = ""
        return Notice(f"recording stopped{f', saved {saved}' if saved else ''}", title="recording")

    def save_snapshot(self) -> Notice:
        """Save a PNG of the split screen (it writes a file: the terminal UI calls it from a thread)."""
        try:
            path = self.control.save_snapshot_png()
        except Exception as exc:
            return Notice(one_line(exc, "snapshot"), "error")
        return Notice(f"saved {path}", title="snapshot")

    def press(self, key: str, snapshot: MonitorSnapshot | None) -> Notice | None:
        """The action of a key for both front ends (1-9, r, p, s); None for the others, which
        each front end handles itself (quitting, for one)."""
        if key in ENGINE_KEYS:
            return self.toggle_engine(int(key), snapshot)
        action = next((k.action for k in MONITOR_KEYS if k.key == key and k.where == Where.BOTH), None)
        if action == "toggle_recording":
            return self.toggle_recording(snapshot)
        if action == "toggle_pause":
            return self.toggle_pause(snapshot)
        if action == "save_snapshot":
            return self.save_snapshot()
        return None
