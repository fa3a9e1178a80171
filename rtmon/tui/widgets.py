"""The monitor's panels (the picture preview is `preview.py`). Each owns what it shows as reactive
attributes and redraws when they change.

Nothing here talks to the pipeline: the app assigns snapshots, the widgets format them.
Colours and layout live in `app.tcss`; widgets only set CSS classes that name a state.
"""

from __future__ import annotations

import time

import numpy as np
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Sparkline, Static
from textual_plotext import PlotextPlot

from rtmon.core import EngineInfo, EngineState, Role, SourceState
from rtmon.formatting import NA, fmt, fmt_mib
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot
from rtmon.snapshot import MonitorSnapshot, SourceStatus

ACTIVE_STATES = (EngineState.STARTING, EngineState.LOADING, EngineState.RUNNING)
SOURCE_TROUBLE = (SourceState.RECONNECTING, SourceState.FAILED, SourceState.ENDED)
PANEL_ROLES = (Role.BASELINE, Role.PEER, Role.OPTIMIZED)  # app.tcss colours each one's title
HIST_BINS = 20
HIST_TITLE = "% of frames by latency"
HIST_REDRAW_S = 1.0
LOG_AXIS_SPREAD = 8.0  # a shared axis goes logarithmic when the slowest frame is this many times the fastest


def fmt_duration(seconds: float) -> str:
    """h:mm:ss."""
    s = max(int(seconds), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def engine_state_text(engine: EngineSnapshot, wanted_on: bool) -> str:
    """The state word a user reads, saying so while an on/off request has not taken effect yet."""
    state = EngineState(engine.state)
    if not wanted_on and state in ACTIVE_STATES:
        return "turning off…"
    if wanted_on and state == EngineState.OFF:
        return "turning on…"
    if state == EngineState.FAILED:
        return f"failed: {engine.error}" if engine.error else "failed"
    return state.value + (f" · {engine.notice}" if engine.notice else "")


def panel_title(index: int, engine: EngineSnapshot | None, name: str) -> str:
    """`1 BASELINE torch-fp32`: the key that toggles it, its role, its engine."""
    role = engine.role.value.upper() if engine is not None else ""
    return f"{index} {role} {name}".replace("  ", " ")


def engine_info_text(info: EngineInfo | None) -> str:
    if info is None or not info.precision:
        return f"{info.backend} · loading…" if info is not None else NA
    return f"{info.backend} · {info.precision} · on {info.device or NA} · {info.input_size}px"


def engine_numbers_text(engine: EngineSnapshot) -> str:
    """Latency percentiles from capture, frame counts, busy share and this engine's GPU memory."""
    lat = engine.latency
    if lat is None:
        latency = f"capture→boxes ms  {NA}\n"
    else:
        latency = (
            f"capture→boxes ms  P50 {lat.p50:.1f}\n"
            f"                  P95 {lat.p95:.1f}  P99 {lat.p99:.1f}"
        )
    mem = engine.memory
    own = f" (own {fmt_mib(mem.engine_mib)})" if mem.engine_mib is not None else ""
    return (
        f"{latency}\n"
        f"frames {engine.processed:,}  skipped {engine.skipped:,}  busy {fmt(engine.busy_pct, '.0f', '%')}\n"
        f"GPU mem {fmt_mib(mem.process_mib)}{own}"
    )


def engine_fps_text(engine: EngineSnapshot) -> str:
    return f"FPS {fmt(engine.fps)} · capacity {fmt(engine.capacity_fps, '.0f')} "


def headline_text(snapshot: MonitorSnapshot) -> str:
    """The comparison in `Headline.text()`'s one wording (the overlay's too), followed by the
    engines it compares and the pace the feed runs at."""
    head = snapshot.headline
    pace = f"pace {snapshot.pace}"
    if head is None:
        return f"{pace} · add the baseline and an optimized engine to compare them"
    if head.speedup is None:  # "<optimized> vs <baseline>: measuring...", the names already in it
        return f"{head.text()} · {pace}"
    return f"{head.text()} · {head.optimized} vs {head.baseline} · {pace}"


def shared_axis(engines: tuple[EngineSnapshot, ...]) -> tuple[float, float, bool] | None:
    """The range (ms) every latency histogram shares, and whether it is logarithmic, so the
    engines' distributions sit on one axis and the faster one visibly lies to the left. The ends
    are powers of two, so the axis holds still while the figures move within it."""
    values = [v for e in engines for v in e.latency_window_ms if v > 0]
    if not values:
        return None
    lo = 2.0 ** np.floor(np.log2(min(values)))
    hi = 2.0 ** np.ceil(np.log2(max(values) * 1.0001))
    return float(lo), float(hi), hi / lo >= LOG_AXIS_SPREAD


def axis_edges(axis: tuple[float, float, bool]) -> np.ndarray:
    lo, hi, log = axis
    return np.geomspace(lo, hi, HIST_BINS + 1) if log else np.linspace(lo, hi, HIST_BINS + 1)


def ms_tick(ms: float) -> str:
    """A latency tick that reads at a glance: "0.5 ms", "5.7 ms", "23 ms", "1,024 ms"."""
    return f"{ms:.2g} ms" if ms < 10 else f"{ms:,.0f} ms"


def latency_ticks(edges: np.ndarray) -> tuple[list[float], list[str]]:
    """The x ticks of a histogram drawn bin by bin (bin i centred on i, so edge k lies at k - 0.5):
    both ends of the shared axis and its middle, in ms."""
    picks = [0, (len(edges) - 1) // 2, len(edges) - 1]
    return [k - 0.5 for k in picks], [ms_tick(float(edges[k])) for k in picks]


def share_ticks(top: float) -> tuple[list[float], list[str]]:
    """The y ticks of a histogram of shares: 0, half the tallest bar and the tallest, in % of frames."""
    values = [0.0, top / 2, top]
    return values, [f"{v:.0f}%" for v in values]


def gpu_text(gpu: GpuSample | None) -> str:
    if gpu is None:
        return f"GPU {NA} (no NVIDIA GPU visible)"
    used, total = gpu.memory_used_mib, gpu.memory_total_mib
    memory = f"{used:,.0f} / {fmt_mib(total)}" if used is not None and total is not None else f"mem {NA}"
    return (
        f"GPU {gpu.name} · util {fmt(gpu.utilization_pct, '.0f', '%')} · {memory}"
        f" · {fmt(gpu.temperature_c, '.0f', ' °C')} · {fmt(gpu.power_w, '.0f', ' W')}"
        f" · rtmon {fmt_mib(gpu.process_mem_mib)}"
        + (f" (torch peak {fmt_mib(gpu.allocator_peak_mib)})" if gpu.allocator_peak_mib is not None else "")
    )


def source_text(source: SourceStatus, paused: bool) -> str:
    name = source.kind if source.uri == source.kind else f"{source.kind} {source.uri}"
    state = SourceState.PAUSED if paused and source.state == SourceState.RUNNING else source.state
    if source.error:
        # In trouble the error is what matters; size and rate would push it off an 80-column line.
        return f"{name} · {state}: {source.error}"
    size = f"{source.width}×{source.height}" if source.width and source.height else NA
    return f"{name} · {size} @ {fmt(source.fps, '.1f', ' fps')} · {state}"


class EnginePanel(Vertical):
    """One engine: what it is, its state, FPS with a sparkline, latency numbers and histogram."""

    engine: reactive[EngineSnapshot | None] = reactive(None)
    info: reactive[EngineInfo | None] = reactive(None)
    wanted_on: reactive[bool] = reactive(True)
    axis: reactive[tuple[float, float, bool] | None] = reactive(None)

    def __init__(self, index: int, name: str) -> None:
        super().__init__(classes="engine-panel")
        self.index = index
        self.engine_name = name
        self.border_title = panel_title(index, None, name)
        self._hist_data: tuple[float, ...] | None = None
        self._hist_drawn_at = -HIST_REDRAW_S
        self._info = Static(classes="engine-info")
        self._state = Static(classes="engine-state")
        self._fps = Static(classes="fps-text")
        self._spark = Sparkline([], classes="fps-spark")
        self._numbers = Static(classes="engine-numbers")
        self._hist = PlotextPlot(classes="latency-hist")

    def compose(self) -> ComposeResult:
        yield self._info  # across the whole panel: a long backend and device must read whole
        with Horizontal(classes="engine-body"):
            with Vertical(classes="engine-stats"):
                yield self._state
                with Horizontal(classes="fps-row"):
                    yield self._fps
                    yield self._spark
                yield self._numbers
            yield self._hist

    def on_mount(self) -> None:
        self._show()

    def watch_engine(self) -> None:
        self._show_when_mounted()

    def watch_info(self) -> None:
        self._show_when_mounted()

    def watch_wanted_on(self) -> None:
        self._show_when_mounted()

    def _show_when_mounted(self) -> None:
        # Watchers may fire before compose has made the children; on_mount shows the first state.
        if self.is_mounted:
            self._show()

    def _show(self) -> None:
        self._info.update(engine_info_text(self.info))
        engine = self.engine
        if engine is None:
            return
        self.border_title = panel_title(self.index, engine, self.engine_name)
        for role in PANEL_ROLES:
            self.set_class(engine.role == role, f"-{role.value}")
        for state in EngineState:  # app.tcss styles each one
            self.set_class(engine.state == state, f"-{state.value}")
        self._state.update(engine_state_text(engine, self.wanted_on))
        self._fps.update(engine_fps_text(engine))
        self._spark.data = list(engine.fps_history)
        self._numbers.update(engine_numbers_text(engine))
        self._show_histogram(engine.latency_window_ms)

    def _show_histogram(self, latencies: tuple[float, ...]) -> None:
        # Drawing a plotext figure costs 10-30 ms on the event loop, so it is redrawn at most
        # every HIST_REDRAW_S: the distribution of the last few hundred frames moves slowly.
        now = time.monotonic()
        if latencies == self._hist_data or now - self._hist_drawn_at < HIST_REDRAW_S:
            return
        self._hist_data, self._hist_drawn_at = latencies, now
        plt = self._hist.plt
        plt.clear_data()
        plt.clear_figure()
        axis = self.axis
        if latencies and axis is not None:
            edges, log = axis_edges(axis), axis[2]
            counts, _ = np.histogram(np.clip(latencies, edges[0], edges[-1]), bins=edges)
            shares = 100.0 * counts / max(len(latencies), 1)
            plt.bar(list(range(len(counts))), list(shares), width=1)  # bins drawn evenly; the ticks say the ms
            plt.xticks(*latency_ticks(edges))
            plt.yticks(*share_ticks(float(shares.max())))
            plt.title(HIST_TITLE + (" (log)" if log else ""))
        else:
            plt.title(HIST_TITLE)
        self._hist.refresh()

    def watch_axis(self) -> None:
        self._hist_drawn_at = -HIST_REDRAW_S  # a new common axis: redraw now
        self._hist_data = None
        self._show_when_mounted()


class HeadlineBar(Static):
    """The comparison the whole screen is about, in one line."""


class StreamsTable(Static):
    """One row per source when there are several: state, reconnects, and each engine's delivered
    FPS, P50/P95/P99 from capture and dropped frames for that stream."""

    snapshot: reactive[MonitorSnapshot | None] = reactive(None, always_update=True)

    def watch_snapshot(self, snapshot: MonitorSnapshot | None) -> None:
        self.display = bool(snapshot and len(snapshot.streams) > 1)
        if snapshot is None or not self.display:
            return
        self.update(streams_text(snapshot))


def streams_text(snapshot: MonitorSnapshot) -> str:
    names = [e.name for e in snapshot.engines]
    lines = ["stream source           state         reconn  " + "  ".join(f"{n[:14]:<14} FPS  P95  P99  drop" for n in names)]
    for stream in snapshot.streams:
        src = stream.source
        cells = []
        for name in names:
            fig = stream.engines.get(name)
            if fig is None:
                cells.append(f"{'—':<14} {'':>4} {'':>4} {'':>4} {'':>5}")
                continue
            lat = fig.latency
            cells.append(f"{'':<14} {fmt(fig.fps, '.0f'):>4} {fmt(lat.p95 if lat else None, '.0f'):>4} "
                         f"{fmt(lat.p99 if lat else None, '.0f'):>4} {fig.dropped:>5}")
        lines.append(f"{src.stream:>6} {src.uri[-16:]:<16} {src.state[:13]:<13} {src.reconnects:>6}  " + "  ".join(cells))
    return "\n".join(lines)


class GpuPanel(Static):
    """Device name, utilization, memory, temperature and power; "n/a" without a GPU."""

    gpu: reactive[GpuSample | None] = reactive(None, always_update=True)

    def on_mount(self) -> None:
        self.update(gpu_text(self.gpu))

    def watch_gpu(self, gpu: GpuSample | None) -> None:
        self.set_class(gpu is None, "-absent")
        self.update(gpu_text(gpu))


class StatusLine(Horizontal):
    """Source, resolution, source FPS and state; uptime; recording state."""

    source: reactive[SourceStatus | None] = reactive(None)
    sources: reactive[int] = reactive(1)
    uptime_s: reactive[float] = reactive(0.0)
    recording: reactive[str] = reactive("")
    recording_error: reactive[str] = reactive("")
    paused: reactive[bool] = reactive(False)
    problem: reactive[str] = reactive("")  # the snapshot itself could not be read

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._source = Static(classes="status-source")
        self._uptime = Static(classes="status-uptime")
        self._rec = Static(classes="status-rec")

    def compose(self) -> ComposeResult:
        yield self._source
        yield self._uptime
        yield self._rec

    def on_mount(self) -> None:
        self._show()

    def watch_source(self) -> None:
        self._show_when_mounted()

    def watch_uptime_s(self) -> None:
        self._show_when_mounted()

    def watch_recording(self) -> None:
        self._show_when_mounted()

    def watch_recording_error(self) -> None:
        self._show_when_mounted()

    def watch_paused(self) -> None:
        self._show_when_mounted()

    def watch_problem(self) -> None:
        self._show_when_mounted()

    def _show_when_mounted(self) -> None:
        # Watchers may fire before compose has made the children; on_mount shows the first state.
        if self.is_mounted:
            self._show()

    def _show(self) -> None:
        source_widget = self._source
        if self.problem:
            source_widget.update(self.problem)
        elif self.source is not None:
            more = f" (+{self.sources - 1} more streams)" if self.sources > 1 else ""
            source_widget.update(source_text(self.source, self.paused) + more)
        else:
            source_widget.update(f"source {NA}")
        state = self.source.state if self.source is not None else ""
        source_widget.set_class(bool(self.problem) or state in SOURCE_TROUBLE, "-trouble")
        source_widget.set_class(self.paused or state == SourceState.PAUSED, "-paused")
        self._uptime.update(f"up {fmt_duration(self.uptime_s)}")
        rec = self._rec
        if self.recording:
            rec.update(f"● REC {self.recording}")
        elif self.recording_error:
            rec.update(f"recording failed: {self.recording_error}")
        else:
            rec.update("rec off")
        rec.set_class(bool(self.recording), "-on")
        rec.set_class(bool(self.recording_error) and not self.recording, "-failed")
