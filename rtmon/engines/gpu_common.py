"""What every GPU engine shares: frame upload, GPU pre/post-processing, timing, batching.

A GPU engine only says how to run the network on a device tensor (`_build(batch)` returns a
callable `x -> raw head output`); `GpuEngine` does the rest of the frame's journey:

    host frame ──pinned buffer──▶ device uint8 ──letterbox/normalize──▶ network ──NMS──▶ boxes
                                                                                         (one copy to the host)

Frames that are already on the device (NVDEC, see `rtmon/nvdec.py`) skip the upload.
Everything runs on the engine's own CUDA stream, never the legacy default stream: CUDA graphs
cannot be captured on it, and ONNX Runtime and TensorRT are told to use the same stream so
work stays ordered without extra synchronization.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from rtmon.engines.base import EngineInfo, Frame, Result, StageTimes, warmup_frames
from rtmon.engines.prepost import Letterbox, Thresholds, postprocess_batch, preprocess_torch
from rtmon.errors import UserError
from rtmon.models import ModelRef

Runner = Callable[[torch.Tensor], torch.Tensor]


def require_cuda(engine: str) -> torch.device:
    """The CUDA device, or a one-line UserError that says why there is none."""
    if not torch.cuda.is_available():
        raise UserError(f"engine: {engine} needs an NVIDIA GPU with a working driver and a CUDA build of torch")
    return torch.device("cuda", torch.cuda.current_device())


class PinnedUploader:
    """Host BGR frames → device uint8 tensors through a ring of pinned staging buffers.

    Pinned memory lets the copy run asynchronously on the engine's stream; each buffer is
    reused only after the copy that last read it has finished (its event), so the host can
    stage frame N+1 while frame N is still being copied or processed.
    """

    def __init__(self, device: torch.device, slots: int = 2) -> None:
        self._device = device
        self._slots: list[tuple[torch.Tensor, torch.cuda.Event] | None] = [None] * slots
        self._next = 0

    def upload(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor) and image.is_cuda:
            return image  # already decoded into device memory
        host = image.numpy() if isinstance(image, torch.Tensor) else np.ascontiguousarray(image)
        slot = self._slots[self._next]
        if slot is None or tuple(slot[0].shape) != host.shape:
            slot = (torch.empty(host.shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
            self._slots[self._next] = slot
        else:
            slot[1].synchronize()
        pinned, done = slot
        pinned.numpy()[...] = host
        device = pinned.to(self._device, non_blocking=True)
        done.record()
        self._next = (self._next + 1) % len(self._slots)
        return device


class EventTimer:
    """Per-stage GPU time measured with CUDA events; read once the stream has passed them."""

    def __init__(self, names: Iterable[str]) -> None:
        self._events = {n: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for n in names}

    def start(self, name: str) -> None:
        self._events[name][0].record()

    def stop(self, name: str) -> None:
        self._events[name][1].record()

    def ms(self, name: str) -> float:
        begin, end = self._events[name]
        end.synchronize()
        return begin.elapsed_time(end)


class GpuEngine:
    """Base of the GPU engines. Subclasses set `backend`/`precision` and implement `_build`."""

    backend = "gpu"
    precision = "fp16"

    def __init__(self, name: str, model: ModelRef, settings) -> None:
        self.model_ref = model
        self.class_names = dict(model.class_names)
        self._imgsz = settings.model.imgsz
        self._batch = settings.engines.batch
        self._engines_dir = Path(settings.paths.engines_dir)
        self._thresholds = Thresholds(settings.model.conf, settings.model.iou, settings.model.max_det)
        self._runners: dict[int, Runner] = {}
        self._notes: list[str] = []
        self._device: torch.device | None = None
        self._stream: torch.cuda.Stream | None = None
        self._uploader: PinnedUploader | None = None
        self.info = EngineInfo(name, self.backend, self.precision, "cuda", self._imgsz)

    # --- what a backend provides -------------------------------------------------------------
    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32

    def _build(self, batch: int) -> Runner:
        """A callable running the network on a (batch, 3, S, S) device tensor on the current
        stream; its output may be a static buffer, valid until the next call."""
        raise NotImplementedError

    def _release(self) -> None:
        """Drop runtime objects (sessions, contexts); the base drops runners and buffers."""

    def note(self, text: str) -> None:
        """A fact worth reporting about this run (compile time, a rebuilt cache)."""
        self._notes.append(text)

    # --- the Engine protocol ---------------------------------------------------------------------
    def load(self) -> None:
        self._device = require_cuda(self.info.name)
        self._stream = torch.cuda.Stream(self._device)
        self._uploader = PinnedUploader(self._device)
        with torch.cuda.stream(self._stream):
            self.runner(1)
            for frame in warmup_frames():
                self.infer(frame)
            if self._batch > 1:
                self.infer_batch(warmup_frames(count=self._batch))
        self.info = EngineInfo(
            self.info.name, self.backend, self.precision, torch.cuda.get_device_name(self._device),
            self._imgsz, tuple(self._notes),
        )

    def runner(self, batch: int) -> Runner:
        if batch not in self._runners:
            self._runners[batch] = self._build(batch)
        return self._runners[batch]

    def infer(self, frame: Frame) -> Result:
        (result,) = self.infer_batch([frame])
        return result

    def infer_batch(self, frames: list[Frame]) -> list[Result]:
        """Frames → results in one network call (a micro-batch); stage times are per frame.

        A batch smaller than the engine's fixed batch size is padded by repeating its last
        frame, since fixed-shape runtimes (CUDA graphs, TensorRT plans) take only that shape.
        """
        with torch.cuda.stream(self._stream):
            timer = EventTimer(("preprocess", "inference", "postprocess"))
            x, boxes = self._prepare(frames, timer)
            timer.start("inference")
            pred = self.runner(x.shape[0])(x)
            timer.stop("inference")
            timer.start("postprocess")
            detections = postprocess_batch(pred, boxes, self._thresholds)  # syncs: boxes on the host
            timer.stop("postprocess")
            done = time.perf_counter()
            n = len(frames)
            stages = StageTimes(*(timer.ms(s) / n for s in ("preprocess", "inference", "postprocess")))
        return [Result(self.info.name, f, d, stages, done) for f, d in zip(frames, detections, strict=True)]

    def infer_stream(self, frames: Iterable[Frame]) -> Iterator[Result]:
        """Results for a stream of frames with frame N+1's upload and preprocessing queued
        while frame N's network runs, so the GPU never waits on the host between frames."""
        pending: tuple[Frame, torch.Tensor, Letterbox, EventTimer] | None = None
        with torch.cuda.stream(self._stream):
            for frame in frames:
                timer = EventTimer(("preprocess", "inference", "postprocess"))
                x, boxes = self._prepare([frame], timer)
                if pending is not None:
                    yield self._finish(*pending)
                timer.start("inference")
                pred = self.runner(1)(x)
                timer.stop("inference")
                pending = (frame, pred, boxes[0], timer)
            if pending is not None:
                yield self._finish(*pending)

    def _finish(self, frame: Frame, pred: torch.Tensor, box: Letterbox, timer: EventTimer) -> Result:
        timer.start("postprocess")
        (detections,) = postprocess_batch(pred, [box], self._thresholds)
        timer.stop("postprocess")
        done = time.perf_counter()
        stages = StageTimes(timer.ms("preprocess"), timer.ms("inference"), timer.ms("postprocess"))
        return Result(self.info.name, frame, detections, stages, done)

    def _prepare(self, frames: list[Frame], timer: EventTimer) -> tuple[torch.Tensor, list[Letterbox]]:
        fixed = self._batch if len(frames) > 1 else 1
        if len(frames) > fixed:
            raise ValueError(f"{self.info.name}: batch of {len(frames)} frames, engine batch is {fixed}")
        timer.start("preprocess")
        tensors, boxes = [], []
        for frame in frames:
            image = self._uploader.upload(frame.image)
            x, box = preprocess_torch(image, self._imgsz, self.input_dtype)
            tensors.append(x)
            boxes.append(box)
        tensors += tensors[-1:] * (fixed - len(frames))
        x = tensors[0] if fixed == 1 else torch.cat(tensors)
        timer.stop("preprocess")
        return x, boxes

    def close(self) -> None:
        self._release()
        self._runners.clear()
        self._uploader = None
        self._stream = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
