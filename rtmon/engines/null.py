"""`null`: an engine that does nothing. It answers every frame at once with no boxes, so a run
of it measures rtmon itself: a frame's hand-over to the engine's process and its (empty) boxes'
way back (`rtmon bench --engines null`). Never chosen by `optimized`, never in a headline."""

from __future__ import annotations

import time

from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import SyncEngine
from rtmon.models import ModelRef


class NullEngine(SyncEngine):
    def __init__(self, name: str, model: ModelRef, settings) -> None:
        self.class_names = dict(model.class_names)
        self.info = EngineInfo(name, "none: no model, no boxes (measures the hand-over)", "n/a", "cpu",
                               settings.model.imgsz)

    def load(self) -> None:
        """Nothing to load."""

    def infer(self, frame: Frame) -> Result:
        now = time.perf_counter()
        return Result(self.info.name, frame, Detections.empty(), StageTimes(), now, now)
