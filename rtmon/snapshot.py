"""What the outside of the pipeline may see and do: one immutable snapshot, a few commands.

The TUI, the MQTT publisher and the recorder's overlays read `MonitorSnapshot`; the TUI drives
the pipeline only through `MonitorControl`. Neither knows anything about engines beyond their
names, their `EngineInfo` and their metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from rtmon.core import EngineInfo
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot


@dataclass(frozen=True)
class SourceStatus:
    uri: str
    kind: str  # camera | file | folder | stream | sample
    width: int | None
    height: int | None
    fps: float | None  # measured rate at which frames arrive
    nominal_fps: float | None  # what the source says it runs at
    state: str  # starting | running | paused | reconnecting | ended | failed
    error: str
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MonitorSnapshot:
    time: float  # Unix time of the snapshot
    uptime_s: float
    model: str
    source: SourceStatus
    engines: tuple[EngineSnapshot, ...]
    engine_info: dict[str, EngineInfo]
    gpu: GpuSample | None
    recording: str  # path being written, "" when not recording

    def engine(self, name: str) -> EngineSnapshot | None:
        return next((e for e in self.engines if e.name == name), None)


class MonitorControl(Protocol):
    """The commands a front end may give a running pipeline."""

    def snapshot(self) -> MonitorSnapshot: ...

    def set_enabled(self, engine: str, enabled: bool) -> None: ...

    def set_paused(self, paused: bool) -> None: ...

    def toggle_recording(self) -> str: ...  # returns the path started, or "" when it stopped

    def split_screen(self) -> np.ndarray | None: ...  # the current annotated split screen, BGR

    def save_snapshot_png(self) -> str: ...  # returns the path written
