"""The yardstick: ultralytics `predict` exactly as a user runs it out of the box.

PyTorch FP32, synchronous, one frame at a time, ultralytics' own CPU pre/post-processing.
The only departure from the defaults is `rect=False`, a square 640×640 letterbox, so the
baseline sees the very input geometry the optimized engines see. Do not optimize this file.
"""

from __future__ import annotations

import time

from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import SyncEngine, warmup_frames
from rtmon.models import ModelRef, load_yolo


class UltralyticsEngine(SyncEngine):
    def __init__(self, name: str, model: ModelRef, settings, device: str | None = None) -> None:
        self.model_ref = model
        self._m = settings.model
        self._device = device
        self._yolo = None
        self.class_names = dict(model.class_names)
        self.info = EngineInfo(name, "pytorch (ultralytics predict)", "fp32", device or "auto", self._m.imgsz)

    def load(self) -> None:
        self._yolo = load_yolo(self.model_ref.path)
        for frame in warmup_frames():
            self.infer(frame)
        self.info = EngineInfo(self.info.name, self.info.backend, "fp32", self._where(), self._m.imgsz)

    def _where(self) -> str:
        """Where predict really ran: the predictor's device (the YOLO object's own copy of the
        weights stays on the CPU, so asking it would say "cpu" on a GPU machine)."""
        device = self._yolo.predictor.device
        if device.type == "cuda":
            import torch

            return torch.cuda.get_device_name(device)
        return device.type

    def infer(self, frame: Frame) -> Result:
        (res,) = self._yolo.predict(
            frame.image,
            imgsz=self._m.imgsz,
            conf=self._m.conf,
            iou=self._m.iou,
            max_det=self._m.max_det,
            rect=False,
            device=self._device,
            verbose=False,
        )
        detections = Detections.from_ultralytics(res.boxes)  # the boxes on the host: the engine's work
        done = time.perf_counter()
        speed = res.speed
        stages = StageTimes(speed["preprocess"], speed["inference"], speed["postprocess"])
        return Result(self.info.name, frame, detections, stages, done)

    def close(self) -> None:
        self._yolo = None
