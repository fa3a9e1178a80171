"""ONNX Runtime on the CPU: the model's ONNX export, shared CPU pre/post-processing.

`precision="int8"` (`ort-cpu-int8`) runs the export quantized by `rtmon.quantize` instead: INT8
convolutions (QLinearConv) on the CPU, the letterboxed frame's bytes as its input.

The GPU variants (CUDA execution provider with IO binding and CUDA graphs, and ONNX Runtime's
TensorRT provider) live in `ort_cuda.py`; this file is the portable one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rtmon.core import EngineInfo, Frame, Result
from rtmon.engines.base import Network, Stopwatch, SyncEngine, warmup_frames
from rtmon.engines.prepost import Thresholds, postprocess, preprocess_cpu
from rtmon.errors import UserError
from rtmon.models import ModelRef, export_onnx


class OnnxRuntimeEngine(SyncEngine):
    def __init__(self, name: str, model: ModelRef, settings, provider: str = "cpu", precision: str = "fp32") -> None:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"unknown precision {precision!r}")
        self.model_ref = model
        self.class_names = dict(model.class_names)
        self._imgsz = settings.model.imgsz
        self._threads = settings.engine.ort_threads
        self._engines_dir = Path(settings.paths.engines_dir)
        self._int8 = settings.int8
        self._thresholds = Thresholds.of(settings.model)
        self._session = None
        self._dtype = np.dtype(np.float32)
        self.info = EngineInfo(name, "onnxruntime", precision, "cpu", self._imgsz)

    def _model_file(self) -> Path:
        if self.info.precision == "fp32":
            return export_onnx(self.model_ref, self._engines_dir, self._imgsz, "fp32")
        from rtmon.quantize import quantized_onnx

        quantized = quantized_onnx(self.model_ref, self._engines_dir, self._imgsz, self._int8, "cpu")
        self.info = replace(self.info, notes=self.info.notes + quantized.notes)
        return quantized.path

    def load(self) -> None:
        import onnxruntime as ort

        path = self._model_file()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads:
            options.intra_op_num_threads = self._threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"engine: {self.info.name}: ONNX Runtime cannot load {path} ({exc}); delete it to rebuild") from None
        self._input = self._session.get_inputs()[0].name
        # The INT8 model takes the image's bytes unless its first layer was kept in FP32.
        self._dtype = np.dtype(np.uint8 if self._session.get_inputs()[0].type == "tensor(uint8)" else np.float32)
        for frame in warmup_frames():
            self.infer(frame)

    def infer(self, frame: Frame) -> Result:
        sw = Stopwatch()
        with sw("preprocess"):
            blob, box = preprocess_cpu(frame.image, self._imgsz, self._dtype)
        with sw("inference"):
            (pred,) = self._session.run(None, {self._input: blob})
        with sw("postprocess"):
            detections = postprocess(torch.from_numpy(pred), box, self._thresholds)
        return Result(self.info.name, frame, detections, sw.stages())

    def network(self, max_batch: int) -> Network:
        """The network alone, for `rtmon serve`: the session's export takes one image, so a
        batch runs image by image (on the CPU a batch would not run faster). It takes float
        input in [0, 1] whatever the precision, so clients need not know; the INT8 network gets
        the pixel values back (x · 255, rounded), which is what it would have quantized them to."""

        def run(x: np.ndarray) -> np.ndarray:
            if self._dtype == np.uint8:
                x = np.rint(x * 255).clip(0, 255).astype(np.uint8)
            return np.concatenate([self._session.run(None, {self._input: x[i : i + 1]})[0] for i in range(len(x))])

        return Network(run, np.dtype(np.float32), max_batch)

    def close(self) -> None:
        self._session = None
