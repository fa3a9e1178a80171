"""What the outside of the pipeline may see and do: one immutable snapshot, a few commands.

The TUI, the desktop window, MQTT, Prometheus and the recorder's overlays read
`MonitorSnapshot`; front ends drive the pipeline only through `MonitorControl`. None of them
knows anything about engines beyond their names, their `EngineInfo` and their metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from rtmon.core import EngineInfo, SourceState
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot, Headline, StreamFigures, headline


@dataclass(frozen=True)
class SourceStatus:
    uri: str
    kind: str  # camera | file | folder | stream | sample
    width: int | None
    height: int | None
    fps: float | None  # measured rate at which frames arrive
    nominal_fps: float | None  # what the source says it runs at
    state: SourceState
    error: str
    frames: int
    reconnects: int = 0
    stream: int = 0  # its number when there are several sources
    label: str = ""  # how status lines and pictures name it ("sample clip", "camera 0", a file's name)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StreamSnapshot:
    """One source of several: its status and each engine's figures for it."""

    source: SourceStatus
    engines: dict[str, StreamFigures]


@dataclass(frozen=True)
class MonitorSnapshot:
    time: float  # Unix time of the snapshot
    uptime_s: float
    model: str
    sources: tuple[SourceStatus, ...]
    engines: tuple[EngineSnapshot, ...]
    engine_info: dict[str, EngineInfo]
    gpu: GpuSample | None
    recording: str  # path being written, "" when not recording
    recording_error: str = ""  # why the last recording failed, "" when it did not
    pace: str = "realtime"  # realtime | max
    streams: tuple[StreamSnapshot, ...] = ()
    compared: tuple[str, str] | None = field(default=None)  # (baseline, optimized) of the headline

    @property
    def source(self) -> SourceStatus:
        """The first source (the only one, usually)."""
        return self.sources[0]

    def engine(self, name: str) -> EngineSnapshot | None:
        return next((e for e in self.engines if e.name == name), None)

    @property
    def headline(self) -> Headline | None:
        return headline(self.engines, self.compared[1] if self.compared else None)


class MonitorControl(Protocol):
    """The commands a front end may give a running pipeline."""

    def snapshot(self) -> MonitorSnapshot: ...

    # A number that is different whenever something a snapshot shows has changed since (a result
    # arrived, an engine or a source changed state, a recording started or stopped), and costs
    # nothing to ask for: front ends that redraw at a display's rate compare it before asking for
    # a snapshot, which computes every engine's and stream's percentiles.
    def snapshot_version(self) -> int: ...

    def set_enabled(self, engine: str, enabled: bool) -> None: ...

    def set_paused(self, paused: bool) -> None: ...

    def toggle_recording(self) -> str: ...  # returns the path started, or "" when it stopped

    def split_screen(self) -> np.ndarray | None: ...  # the current annotated split screen (or mosaic), BGR

    def save_snapshot_png(self) -> str: ...  # returns the path written
