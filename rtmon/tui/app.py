"""The monitor screen: panels per engine, a GPU line, a status line, a footer with the keys.

The app reads `MonitorControl.snapshot()` on a steady timer (at most 10 Hz) however fast the
engines run, and gives the pipeline commands only through `MonitorControl`. Commands that may
write files (recording, PNG snapshot) run in a thread so a key never waits on a disk.
"""

from __future__ import annotations

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.geometry import Size
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from rtmon.core import EngineState
from rtmon.snapshot import MonitorControl, MonitorSnapshot
from rtmon.tui.widgets import (
    EnginePanel,
    GpuPanel,
    HeadlineBar,
    PreviewWidget,
    StatusLine,
    StreamsTable,
    headline_text,
    shared_axis,
)

MIN_WIDTH, MIN_HEIGHT = 80, 24
MAX_REFRESH_HZ = 10.0
MAX_ENGINE_KEYS = 9

HELP_TEXT = """\
[b]rtmon — keys[/b]

  [b]1[/b]…[b]9[/b]  turn engine 1…9 on or off (numbered as on its panel)
  [b]r[/b]    start / stop recording the split screen to recordings/
  [b]p[/b]    pause / resume the feed
  [b]s[/b]    save a PNG snapshot of the split screen
  [b]v[/b]    show / hide the in-terminal preview of the split screen
  [b]?[/b]    this help
  [b]q[/b]    quit (also Ctrl-C)

Each panel names its role (BASELINE, PEER, OPTIMIZED), the engine
and the device it really runs on. FPS is what it delivered; capacity
is what it could sustain (frames per second of busy time), so the
difference shows even when a camera paces both. Latency runs from
capture to boxes on the host; every histogram shares one axis. GPU
memory is the engine's own process (NVML), with its share beside
the CUDA context; "n/a" where NVML cannot tell. The top line
compares optimized and baseline from these same figures.

[dim]escape or ? closes this help[/dim]"""


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
    BINDINGS = [  # noqa: RUF012
        Binding("1", "toggle_engine(1)", "engine on/off", key_display="1-9"),
        *(Binding(str(i), f"toggle_engine({i})", show=False) for i in range(2, MAX_ENGINE_KEYS + 1)),
        Binding("r", "toggle_recording", "record"),
        Binding("p", "toggle_pause", "pause"),
        Binding("s", "save_snapshot", "snapshot"),
        Binding("v", "toggle_preview", "preview"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    paused: reactive[bool] = reactive(False)
    show_preview: reactive[bool] = reactive(False)
    too_small: reactive[bool] = reactive(False)

    def __init__(self, control: MonitorControl, refresh_hz: float = 4.0, show_preview: bool = False) -> None:
        if not 0 < refresh_hz <= MAX_REFRESH_HZ:
            raise ValueError(f"refresh_hz must be in (0, {MAX_REFRESH_HZ:g}], got {refresh_hz}")
        super().__init__()
        self.control = control
        self.refresh_hz = refresh_hz
        self.last_snapshot: MonitorSnapshot | None = None
        self._engine_names: tuple[str, ...] = ()
        self._panels: list[EnginePanel] = []
        self._wanted_on: dict[str, bool] = {}
        self._recording_path = ""
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
        """Read one snapshot (and the preview picture while it is shown) and hand it to the panels."""
        try:
            snapshot = self.control.snapshot()
        except Exception as exc:  # the pipeline's trouble must not take the screen down with it
            self._status.problem = f"cannot read the pipeline's state: {exc}"
            return
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
        status.paused = self.paused
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
            panel.wanted_on = self._wanted_on.setdefault(engine.name, engine.state != EngineState.OFF)

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
        if not 1 <= number <= len(self._engine_names):
            self.notify(f"there is no engine {number}", severity="warning")
            return
        name = self._engine_names[number - 1]
        self._wanted_on[name] = not self._wanted_on.get(name, True)
        self.control.set_enabled(name, self._wanted_on[name])
        if self.last_snapshot is not None:
            self._show(self.last_snapshot)

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.control.set_paused(self.paused)
        self._status.paused = self.paused

    def action_toggle_recording(self) -> None:
        self.run_worker(self._toggle_recording, thread=True, group="commands")

    def _toggle_recording(self) -> None:
        try:
            path = self.control.toggle_recording()
        except Exception as exc:
            self.call_from_thread(self.notify, f"recording: {exc}", severity="error")
            return
        self.call_from_thread(self._recording_toggled, path)

    def _recording_toggled(self, path: str) -> None:
        if path:
            self._recording_path = path
            self.notify(f"recording to {path}", title="recording")
        else:
            saved = self._recording_path or (self.last_snapshot.recording if self.last_snapshot else "")
            self.notify(f"recording stopped{f', saved {saved}' if saved else ''}", title="recording")
            self._recording_path = ""

    def action_save_snapshot(self) -> None:
        self.run_worker(self._save_snapshot, thread=True, group="commands")

    def _save_snapshot(self) -> None:
        try:
            path = self.control.save_snapshot_png()
        except Exception as exc:
            self.call_from_thread(self.notify, f"snapshot: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"saved {path}", title="snapshot")

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
