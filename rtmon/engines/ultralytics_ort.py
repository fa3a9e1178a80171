"""The peer (`ultralytics-ort`): what a user does anyway to go faster than the baseline.

ultralytics' own ONNX export in FP16, run by ultralytics' own `predict` on ONNX Runtime's CUDA
provider (its AutoBackend, with its CPU pre/post-processing). rtmon's optimized engines are
measured against it in the same run, so "how much faster than what a user would do anyway" is a
measurement, not a claim. Like the baseline, this file must not be optimized.
"""

from __future__ import annotations

import time
from pathlib import Path

from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import SyncEngine, warmup_frames
from rtmon.errors import UserError
from rtmon.models import ModelRef, export_onnx, load_yolo

CUDA_PROVIDER = "CUDAExecutionProvider"


class UltralyticsOrtEngine(SyncEngine):
    def __init__(self, name: str, model: ModelRef, settings) -> None:
        self.model_ref = model
        self._m = settings.model
        self._engines_dir = Path(settings.paths.engines_dir)
        self._yolo = None
        self.class_names = dict(model.class_names)
        self.info = EngineInfo(name, "ultralytics predict + ONNX Runtime CUDA", "fp16", "cuda", self._m.imgsz)

    def load(self) -> None:
        path = export_onnx(self.model_ref, self._engines_dir, self._m.imgsz, "fp16")
        self._yolo = load_yolo(path)
        for frame in warmup_frames():
            self.infer(frame)
        session = getattr(self._yolo.predictor.model, "session", None)
        providers = session.get_providers() if session is not None else []
        if not providers or providers[0] != CUDA_PROVIDER:
            raise UserError(
                f"engine: {self.info.name}: ONNX Runtime did not attach its CUDA provider (providers: "
                f"{', '.join(providers) or 'none'}); this would be a slow CPU run labelled GPU"
            )
        import torch

        self.info = EngineInfo(self.info.name, self.info.backend, "fp16", torch.cuda.get_device_name(), self._m.imgsz)

    def infer(self, frame: Frame) -> Result:
        (res,) = self._yolo.predict(
            frame.image, imgsz=self._m.imgsz, conf=self._m.conf, iou=self._m.iou, max_det=self._m.max_det,
            rect=False, half=True, device=0, verbose=False,
        )
        detections = Detections.from_ultralytics(res.boxes)  # the boxes on the host: the engine's work
        done = time.perf_counter()
        speed = res.speed
        return Result(self.info.name, frame, detections,
                      StageTimes(speed["preprocess"], speed["inference"], speed["postprocess"]), done)

    def close(self) -> None:
        self._yolo = None
