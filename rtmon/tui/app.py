"""The monitor screen: panels per engine, a GPU line, a status line, a footer with the keys.

The app looks at `MonitorControl.snapshot_version()` on a steady timer (at most 10 Hz) however
fast the engines run, reads a snapshot when it changed, and gives the pipeline commands only
through `rtmon.keys.MonitorActions`, as the window does; its keys come from `rtmon.keys`.
Commands that may write files (recording, PNG snapshot) run in a thread so a key never waits on
a disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.geometry import Size
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from rtmon.errors import one_line
from rtmon.keys import ENGINE_KEYS, MONITOR_KEYS, MonitorActions, Notice, Where
from rtmon.snapshot import MonitorControl, MonitorSnapshot
from rtmon.tui.preview import PreviewWidget
from rtmon.tui.widgets import (
    EnginePanel,
    GpuPanel,
    HeadlineBar,
    StatusLine,
    StreamsTable,
    headline_text,
    shared_axis,
)

MIN_WIDTH, MIN_HEIGHT = 80, 24
MAX_REFRESH_HZ = 10.0
REFRESH_AT_LEAST_S = 1.0  # read a snapshot this often even when nothing changed: the uptime ticks, FPS decays
TEXTUAL_KEY_NAMES = {"?": "question_mark"}  # Textual names some keys by a word

KEY_LINES = "\n".join(f"  [b]{k.display or k.key:<4}[/b] {k.help}" for k in MONITOR_KEYS)
HELP_TEXT = f"""\
[b]rtmon — keys[/b]

{KEY_LINES}

Each panel names its role (BASELINE, PEER, OPTIMIZED), the engine
and the device it really runs on. FPS is what it delivered; capacity
is what it could sustain (frames per second of busy time), so the
difference shows even when a camera paces both. Latency runs from
capture to boxes on the host; each histogram shows the % of recent
frames per latency bin, on one axis (ms) that every panel shares.
GPU memory is the engine's own process (NVML), with its share beside
the CUDA context; "n/a" where NVML cannot tell. The top line
compares optimized and baseline from these same figures.

[dim]escape or ? closes this help[/dim]"""


def monitor_bindings() -> list[Binding]:
    """The terminal UI's keys, from the one table in `rtmon.keys`."""
    bindings = []
    for k in MONITOR_KEYS:
        if k.where == Where.WINDOW:
            continue
        if k.action == "toggle_engine":
            bindings.append(Binding(ENGINE_KEYS[0], f"toggle_engine({ENGINE_KEYS[0]})", k.label, key_display=k.display))
            bindings += [Binding(key, f"toggle_engine({key})", show=False) for key in ENGINE_KEYS[1:]]
        else:
            bindings.append(Binding(TEXTUAL_KEY_NAMES.get(k.key, k.key), k.action, k.label, key_display=k.display or k.key))
    return [*bindings, Binding("ctrl+c", "quit", "quit", show=False, priority=True)]


class HelpScreen(ModalScreen[None]):
    """What each key does and what the panels show."""

    BINDINGS = [  # noqa: RUF012 - Textual's declared style
        Binding("escape", "dismiss", "close"),
        Binding("question_mark", "dismiss", "close", key_display="?"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP_TEXT, id="help-text")


class MonitorApp(App[None]):
    """Live panels for every engine of a running pipeline, driven only through `MonitorControl`."""

    CSS_PATH = "app.tcss"
    TITLE = "rtmon"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (160, "-wide")]  # noqa: RUF012
    BINDINGS = monitor_bindings()

    show_preview: reactive[bool] = reactive(False)
    too_small: reactive[bool] = reactive(False)

    def __init__(self, control: MonitorControl, refresh_hz: float = 4.0, show_preview: bool = False) -> None:
        if not 0 < refresh_hz <= MAX_REFRESH_HZ:
            raise ValueError(f"refresh_hz must be in (0, {MAX_REFRESH_HZ:g}], got {refresh_hz}")
        super().__init__()
        self.control = control
        self.actions = MonitorActions(control)
        self.refresh_hz = refresh_hz
        self.last_snapshot: MonitorSnapshot | None = None
        self._seen_version: int | None = None
        self._read_at = -REFRESH_AT_LEAST_S
        self._engine_names: tuple[str, ...] = ()
        self._panels: list[EnginePanel] = []
        self._status = StatusLine(id="status")
        self._headline = HeadlineBar(id="headline")
        self._streams = StreamsTable(id="streams")
        self._gpu = GpuPanel(id="gpu")
        self._preview = PreviewWidget(id="preview")
        self._engines = Container(id="engines")
        self._too_small_message = Static(id="too-small")
        self.set_reactive(MonitorApp.show_preview, show_preview)

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield self._status
            yield self._headline
            yield self._gpu
            yield self._preview
            yield self._streams
            yield self._engines
        yield self._too_small_message
        yield Footer()

    def on_mount(self) -> None:
        self._preview.display = self.show_preview
        self._check_size(self.size)
        self.poll()
        self.set_interval(1 / self.refresh_hz, self.poll)

    # --- reading the pipeline -------------------------------------------------------------

    def poll(self) -> None:
        """Read a snapshot (and the preview picture while it is shown) when the pipeline's version
        says something changed, or REFRESH_AT_LEAST_S passed, and hand it to the panels."""
        try:
            version, now = self.control.snapshot_version(), time.monotonic()
            if version == self._seen_version and now - self._read_at < REFRESH_AT_LEAST_S:
                return
            snapshot = self.control.snapshot()
        except Exception as exc:  # the pipeline's trouble must not take the screen down with it
            self._status.problem = f"cannot read the pipeline's state: {one_line(exc)}"
            return
        self._seen_version, self._read_at = version, now
        self._status.problem = ""
        self.last_snapshot = snapshot
        self._show(snapshot)
        if self.show_preview:
            self._preview.frame = self.control.split_screen()

    def _show(self, snapshot: MonitorSnapshot) -> None:
        status = self._status
        status.source = snapshot.source
        status.uptime_s = snapshot.uptime_s
        status.recording = snapshot.recording
        status.recording_error = snapshot.recording_error
        status.sources = len(snapshot.sources)
        status.paused = self.actions.feed_paused(snapshot)
        self._headline.update(headline_text(snapshot))
        self._streams.snapshot = snapshot
        self._gpu.gpu = snapshot.gpu
        names = tuple(engine.name for engine in snapshot.engines)
        if names != self._engine_names:
            self._engine_names = names
            self._panels = [EnginePanel(i, name) for i, name in enumerate(names, start=1)]
            self._engines.remove_children()
            self._engines.mount_all(self._panels)
        axis = shared_axis(snapshot.engines)
        for panel, engine in zip(self._panels, snapshot.engines, strict=True):
            panel.axis = axis
            panel.engine = engine
            panel.info = snapshot.engine_info.get(engine.name)
            panel.wanted_on = self.actions.engine_on(engine)

    # --- terminal size --------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size) -> None:
        self.too_small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        self._too_small_message.update(
            f"terminal too small: need {MIN_WIDTH}×{MIN_HEIGHT}, have {size.width}×{size.height}"
        )

    def watch_too_small(self, too_small: bool) -> None:
        self.set_class(too_small, "-too-small")

    # --- keys -----------------------------------------------------------------------------

    def action_toggle_engine(self, number: int) -> None:
        self._say(self.actions.toggle_engine(number, self.last_snapshot), quiet=True)
        self._show_again()

    def action_toggle_pause(self) -> None:
        self._say(self.actions.toggle_pause(self.last_snapshot), quiet=True)
        self._show_again()

    def action_toggle_recording(self) -> None:
        self._in_thread(lambda: self.actions.toggle_recording(self.last_snapshot))

    def action_save_snapshot(self) -> None:
        self._in_thread(self.actions.save_snapshot)

    def _show_again(self) -> None:
        """Show the latest snapshot again, now with what was just asked ("turning off…", "paused")."""
        if self.last_snapshot is not None:
            self._show(self.last_snapshot)

    def _in_thread(self, command: Callable[[], Notice]) -> None:
        """Run a command that writes files in a thread, so a key never waits on a disk; say what it did."""
        self.run_worker(lambda: self.call_from_thread(self._say, command()), thread=True, group="commands")

    def _say(self, notice: Notice, quiet: bool = False) -> None:
        """A notification of what a key did; `quiet`: only trouble, as the screen itself shows the change."""
        if not quiet or notice.severity != "information":
            self.notify(notice.text, title=notice.title, severity=notice.severity)

    def action_toggle_preview(self) -> None:
        self.show_preview = not self.show_preview

    def watch_show_preview(self, shown: bool) -> None:
        self._preview.display = shown
        self._preview.frame = self.control.split_screen() if shown else None

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.exit(return_code=0)
