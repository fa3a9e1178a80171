"""What every GPU engine shares: frame upload, GPU pre/post-processing in CUDA graphs, timing,
batching and pipelining.

A GPU engine only says how to run the network on a device tensor (`_build(batch)` returns a
callable `x -> raw head output`), or, if the network can be recorded inside a torch CUDA graph,
gives its plain forward (`_capturable_forward`). `GpuEngine` does the rest of a frame's journey:

    host frame ─pinned─▶ device uint8 ─letterbox─▶ network ─top-k candidates─▶ (k, 6) rows ─▶ host NMS
                 upload stream        └──────────── CUDA graph(s), compute stream ──────────┘

Everything between the uploaded uint8 frame and the candidate rows is replayed from CUDA graphs
over static buffers: one graph when the network is a torch module, otherwise a letterbox graph,
the runtime's own graph (ONNX Runtime, TensorRT) and a candidate graph. Only k rows (x1 y1 x2 y2
score class, best first) leave the device; class-aware NMS on those few rows runs on the host.
If more than k candidates pass the confidence threshold, the frame falls back to the full
device NMS on the graph's static head output, so results never depend on k.

Frames already on the device (NVDEC, see `rtmon/nvdec.py`) are copied device to device. Frames in
host memory the runner has page-locked for the GPU (its shared-memory ring, see
`register_host_memory`) are uploaded straight from there, without a staging copy.
Work runs on the engine's own streams, never the legacy default stream: CUDA graphs cannot be
captured on it, and ONNX Runtime and TensorRT are told to use the same stream.

The runner drives an engine through `submit(frames)` (queue the work, return at once) and
`collect(ticket)` (wait for that work's boxes), so it can keep `lanes` frames or micro-batches in
flight: the host uploads one while the GPU runs the other. A micro-batch of n frames runs on the
plan for the smallest captured batch size ≥ n (1, 2, 4, … `engine.max_batch`): static shapes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rtmon.core import EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import Network, warmup_frames
from rtmon.engines.prepost import (
    Letterbox,
    Thresholds,
    detections_from_candidates,
    postprocess,
    preprocess_torch,
    top_candidates,
)
from rtmon.errors import UserError
from rtmon.models import ModelRef

Runner = Callable[[torch.Tensor], torch.Tensor]

# Rows of candidates that leave the device per image. Any k gives the same boxes (more
# candidates than k over the threshold fall back to full device NMS); k only sets how rarely
# that slower path is taken. A trained yolo11n has tens to a few hundred candidates over 0.25.
CANDIDATES = 1024
# Frames (or micro-batches) in flight: the host prepares frame N+1 while the GPU runs frame N.
LANES = 2
# cuBLAS keeps a workspace per stream, 32 MiB each by default on Hopper, and every captured graph
# has its own stream. yolo11n's few small matmuls (its attention block) need far less; a small
# workspace keeps the engine's memory near the baseline's. Read by PyTorch at the first GEMM of
# the process, so it is set before loading (each engine has its own process).
CUBLAS_WORKSPACE = ":1024:2"


def batch_sizes(max_batch: int) -> list[int]:
    """The micro-batch sizes that get a captured plan (or a served runner): powers of two below
    `max_batch`, and it. A batch of n runs on the smallest that holds it."""
    return [*(1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch), max_batch]


def require_cuda(engine: str) -> torch.device:
    """The CUDA device, or a one-line UserError that says why there is none."""
    if not torch.cuda.is_available():
        raise UserError(f"engine: {engine} needs an NVIDIA GPU with a working driver and a CUDA build of torch")
    return torch.device("cuda", torch.cuda.current_device())


def capture(fn: Callable[[], object], warmup: int = 3) -> tuple[torch.cuda.CUDAGraph, object]:
    """`fn()` recorded as a CUDA graph on a fresh side stream; returns (graph, its static outputs).

    The warm-up runs let cuDNN pick its algorithms before they are frozen in the graph. Each
    capture gets its own stream, so cuBLAS workspaces (keyed by stream) are never shared by
    graphs that may replay concurrently.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        out = fn()
    return graph, out


@dataclass
class Plan:
    """Everything one frame (or one micro-batch) needs in flight, for one source size.

    `src` is the static uint8 input of the graph(s), `rows` their static candidate output and
    `pred` the static raw head output (kept for the overflow fallback). A plan is reused only
    after its previous frame has been finished, so its buffers are never overwritten in flight.
    """

    stream: torch.cuda.Stream
    box: Letterbox
    src: torch.Tensor  # (B, H, W, 3) uint8, device
    src_host: torch.Tensor  # the same, pinned
    pred: torch.Tensor  # (B, 4+nc, N), device
    rows: torch.Tensor  # (B, k, 6) float32, device
    rows_host: torch.Tensor  # the same, pinned
    launch: Callable[[list[torch.cuda.Event] | None], None]  # replays the graphs (recording the stage events)
    events: list[torch.cuda.Event]  # upload begin/end, letterbox end, network end, candidates end, copied

    @property
    def batch(self) -> int:
        return self.src.shape[0]


class GpuEngine:
    """Base of the GPU engines. Subclasses set `backend`/`precision` and implement `_build`
    (and `_capturable_forward` when the network can live inside a torch CUDA graph)."""

    backend = "gpu"
    precision = "fp16"
    # Pipelined engines keep LANES frames in flight when frames wait; False for ladder rungs
    # that show one frame at a time.
    pipelined = True

    def __init__(self, name: str, model: ModelRef, settings, pipelined: bool | None = None) -> None:
        self.model_ref = model
        self.class_names = dict(model.class_names)
        self._imgsz = settings.model.imgsz
        self.max_batch = settings.engine.max_batch
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        self._engines_dir = Path(settings.paths.engines_dir)
        self._thresholds = Thresholds.of(settings.model)
        if pipelined is not None:
            self.pipelined = pipelined
        self._runners: dict[int, Runner] = {}
        self._plans: dict[tuple[int, int, int, int], Plan] = {}
        self._notes: list[str] = []
        self._device: torch.device | None = None
        self._stream: torch.cuda.Stream | None = None
        self._upload_stream: torch.cuda.Stream | None = None
        self._lane_streams: list[torch.cuda.Stream] = []
        self._copier: ThreadPoolExecutor | None = None
        self._next_lane = 0
        self._registered: list[tuple[int, int]] = []  # page-locked host ranges (address, size)
        self._memory_steps: list[tuple[str, float | None]] = []
        self.stage_times = settings.engine.stage_times  # CUDA events per stage, or only the frame's end
        self.overflows = 0  # frames that took the full-NMS fallback
        self.info = EngineInfo(name, self.backend, self.precision, "cuda", self._imgsz)

    @property
    def lanes(self) -> int:
        """Frames (or micro-batches) this engine usefully keeps in flight."""
        return LANES if self.pipelined else 1

    def batch_sizes(self) -> list[int]:
        return batch_sizes(self.max_batch)

    # --- what a backend provides -------------------------------------------------------------
    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32

    def _build(self, batch: int) -> Runner:
        """A callable running the network on a (batch, 3, S, S) device tensor on the current
        stream; its output may be a static buffer, valid until the next call."""
        raise NotImplementedError

    def _capturable_forward(self) -> Runner | None:
        """The network as a plain function that a torch CUDA graph may record, or None when the
        runtime records its own graph (ONNX Runtime, TensorRT) or must not be recorded."""
        return None

    def _release(self) -> None:
        """Drop runtime objects (sessions, contexts); the base drops runners and buffers."""

    def note(self, text: str) -> None:
        """A fact worth reporting about this run (compile time, a rebuilt cache)."""
        self._notes.append(text)

    # --- the Engine protocol ---------------------------------------------------------------------
    def load(self) -> None:
        self._device = require_cuda(self.info.name)
        self._measure("CUDA context")
        self._stream = torch.cuda.Stream(self._device)
        self._upload_stream = torch.cuda.Stream(self._device)
        # Lanes replay concurrently on their own streams only when the whole frame is one torch
        # graph; a runtime with its own static buffers (one session) keeps one stream.
        concurrent = self._capturable_forward() is not None
        self._lane_streams = [self._stream] + [
            torch.cuda.Stream(self._device) if concurrent else self._stream for _ in range(LANES - 1)
        ]
        self._copier = ThreadPoolExecutor(4, thread_name_prefix="rtmon-upload")
        frames = warmup_frames()
        for frame in frames:
            self.infer(frame)
        self._measure("first frames (graphs captured, cuDNN/cuBLAS kernels loaded, workspaces)")
        if self.lanes > 1:
            for _ in range(2):  # both lanes, back to back
                tickets = [self.submit([f]) for f in frames[: self.lanes]]
                for ticket in tickets:
                    self.collect(ticket)
            self._measure("second lane")
        for size in self.batch_sizes()[1:]:
            for _ in range(self.lanes):
                tickets = [self.submit(warmup_frames(count=size)) for _ in range(self.lanes)]
                for ticket in tickets:
                    self.collect(ticket)
        if self.max_batch > 1:
            self._measure(f"batch plans {self.batch_sizes()[1:]}")
        torch.cuda.empty_cache()  # the warm-up runs' blocks; the graphs keep their own pools
        self._measure("after emptying the allocator's cache")
        self.note("GPU memory while loading (NVML, this process): "
                  + ", ".join(f"{step} {_mib(mib)}" for step, mib in self._memory_steps))
        self.info = EngineInfo(
            self.info.name, self.backend, self.precision, torch.cuda.get_device_name(self._device),
            self._imgsz, tuple(self._notes),
        )

    def _measure(self, step: str) -> None:
        from rtmon import gpu

        torch.cuda.synchronize(self._device)
        self._memory_steps.append((step, gpu.process_memory_mib()))

    def register_host_memory(self, address: int, size: int) -> bool:
        """Page-lock `size` bytes at `address` (the runner's frame ring) so frames there upload
        with one DMA and no staging copy; False (and the staging path) if the driver refuses."""
        code = torch.cuda.cudart().cudaHostRegister(address, size, 0)
        if int(code) != 0:
            self.note(f"frame ring not page-locked (cudaHostRegister returned {int(code)}); frames are staged")
            return False
        self._registered.append((address, size))
        return True

    def _registered_image(self, image: np.ndarray) -> bool:
        address = image.ctypes.data
        return any(start <= address and address + image.nbytes <= start + size for start, size in self._registered)

    def runner(self, batch: int) -> Runner:
        """The network alone on a device tensor (built once per batch size, on the engine stream)."""
        if batch not in self._runners:
            with torch.cuda.stream(self._stream):
                self._runners[batch] = self._build(batch)
        return self._runners[batch]

    def network(self, max_batch: int) -> Network:
        """The network alone on host arrays, for `rtmon serve`: a batch of n runs on the runner of
        the smallest built size that holds it (powers of two up to `max_batch`), the rows past n
        left as the last batch wrote them and ignored. Fixed sizes keep the runtimes' CUDA
        graphs and plans; a few sizes keep padding cheap without a graph per size."""
        sizes = batch_sizes(max_batch)
        inputs = {}
        for size in sizes:
            self.runner(size)
            inputs[size] = torch.zeros(size, 3, self._imgsz, self._imgsz, dtype=self.input_dtype, device=self._device)

        def run(x: np.ndarray) -> np.ndarray:
            n = len(x)
            size = next(s for s in sizes if s >= n)
            with torch.cuda.stream(self._stream):
                static = inputs[size]
                static[:n].copy_(torch.from_numpy(x))
                return self.runner(size)(static)[:n].cpu().numpy()  # waits for the network

        return Network(run, np.dtype(np.float16 if self.input_dtype == torch.float16 else np.float32), max_batch)

    def infer(self, frame: Frame) -> Result:
        (result,) = self.collect(self.submit([frame]))
        return result

    def infer_batch(self, frames: list[Frame]) -> list[Result]:
        """Frames → results in one graph replay (a micro-batch); stage times are per frame."""
        return self.collect(self.submit(frames))

    def submit(self, frames: list[Frame]) -> tuple[Plan | None, list[Frame], list[Result]]:
        """Queue `frames` (one micro-batch) on the next lane and return at once; `collect` the
        ticket for the results. The runner keeps at most `lanes` tickets open and collects them
        in order, so a lane's plan is never overwritten while its frames are in flight."""
        if len(frames) > self.max_batch:
            raise ValueError(f"{self.info.name}: a batch of {len(frames)} frames; engine.max_batch is {self.max_batch}")
        if len({tuple(f.image.shape) for f in frames}) > 1:
            # Streams of different sizes cannot share one static input: one frame at a time.
            return None, frames, [self.infer(f) for f in frames]
        lane, self._next_lane = self._next_lane, (self._next_lane + 1) % self.lanes
        size = next(b for b in self.batch_sizes() if b >= len(frames))
        plan = self._plan(lane, size, frames[0].image.shape)
        self._launch(plan, frames)
        return plan, frames, []

    def collect(self, ticket: tuple[Plan | None, list[Frame], list[Result]]) -> list[Result]:
        plan, frames, done = ticket
        return done if plan is None else self._finish(plan, frames)

    def close(self) -> None:
        if self._stream is not None:
            torch.cuda.synchronize(self._device)  # nothing in flight reads what is freed below
        self._plans.clear()
        self._release()
        self._runners.clear()
        if self._copier is not None:
            self._copier.shutdown()
            self._copier = None
        self._lane_streams = []
        self._stream = self._upload_stream = None
        for address, _ in self._registered:
            torch.cuda.cudart().cudaHostUnregister(address)
        self._registered.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- one frame's journey ---------------------------------------------------------------------
    def _launch(self, plan: Plan, frames: list[Frame]) -> None:
        """Queue upload, graphs and the copy of the candidate rows; returns without waiting."""
        begin, uploaded = plan.events[0], plan.events[1]
        up = self._upload_stream
        # Host frames are staged into the plan's pinned buffer, unless they already lie in
        # page-locked memory (the runner's ring), whence they are uploaded directly.
        staged = [i for i, f in enumerate(frames) if not _on_device(f.image) and not self._registered_image(f.image)]
        if staged:
            images = [np.asarray(frames[i].image) for i in staged]
            targets = [plan.src_host[i].numpy() for i in staged]
            if len(staged) > 1:  # NumPy copies without the GIL: spread a batch over threads
                list(self._copier.map(np.copyto, targets, images))
            else:
                np.copyto(targets[0], images[0])
        with torch.cuda.stream(up):
            if self.stage_times:
                begin.record()
            if any(_on_device(f.image) for f in frames):
                up.wait_stream(torch.cuda.current_stream())  # device frames were made on the caller's stream
            if len(staged) == len(frames):
                plan.src[: len(frames)].copy_(plan.src_host[: len(frames)], non_blocking=True)
            else:
                for i, f in enumerate(frames):
                    if i in staged:
                        plan.src[i].copy_(plan.src_host[i], non_blocking=True)
                    elif _on_device(f.image):
                        plan.src[i].copy_(f.image)
                        f.image.record_stream(up)
                    else:
                        plan.src[i].copy_(torch.from_numpy(f.image), non_blocking=True)
            uploaded.record()
        with torch.cuda.stream(plan.stream):
            plan.stream.wait_event(uploaded)
            plan.launch(plan.events if self.stage_times else None)
            plan.rows_host.copy_(plan.rows, non_blocking=True)
            plan.events[-1].record()

    def _finish(self, plan: Plan, frames: list[Frame]) -> list[Result]:
        """Wait for the plan's rows, then NMS on the host; the fallback when rows overflowed."""
        ev = plan.events
        ev[-1].synchronize()
        t0 = time.perf_counter()
        rows = plan.rows_host.numpy()
        detections = []
        for i in range(len(frames)):
            found = detections_from_candidates(rows[i], plan.box, self._thresholds, plan.pred.shape[-1])
            if found is None:
                self.overflows += 1
                with torch.cuda.stream(plan.stream):
                    found = postprocess(plan.pred[i], plan.box, self._thresholds)
            detections.append(found)
        done = time.perf_counter()
        n = len(frames)
        host_ms = (done - t0) * 1e3
        if self.stage_times:
            stages = StageTimes(
                (ev[0].elapsed_time(ev[1]) + ev[2].elapsed_time(ev[3])) / n,
                ev[3].elapsed_time(ev[4]) / n,
                (ev[4].elapsed_time(ev[6]) + host_ms) / n,
            )
        else:
            stages = StageTimes(0.0, 0.0, host_ms / n)  # untimed: only the host's own work is known
        return [Result(self.info.name, f, d, stages, done) for f, d in zip(frames, detections, strict=True)]

    # --- building the graphs -------------------------------------------------------------------
    def _plan(self, lane: int, batch: int, shape: tuple[int, ...]) -> Plan:
        h, w = int(shape[0]), int(shape[1])
        key = (lane, batch, h, w)
        if key not in self._plans:
            with torch.cuda.stream(self._lane_streams[lane]):
                self._plans[key] = self._make_plan(batch, h, w)
        return self._plans[key]

    def _make_plan(self, batch: int, h: int, w: int) -> Plan:
        device = self._device
        box = Letterbox.fit(w, h, self._imgsz)
        src = torch.full((batch, h, w, 3), 114, dtype=torch.uint8, device=device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(7)]
        # events: 0 upload begin, 1 uploaded (upload stream); 2 compute begin, 3 letterboxed,
        # 4 network done (= candidates begin), 5 candidates done, 6 rows copied (compute stream)

        def letterbox() -> torch.Tensor:
            return preprocess_torch(src, self._imgsz, self.input_dtype)[0]

        forward = self._capturable_forward()
        if forward is not None:
            def whole() -> tuple[torch.Tensor, torch.Tensor]:
                pred = forward(letterbox())
                return pred, top_candidates(pred, CANDIDATES)

            graph, (pred, rows) = capture(whole)

            def launch(ev: list[torch.cuda.Event] | None) -> None:
                if ev:
                    ev[2].record()
                    ev[3].record()  # the letterbox is inside the one graph: counted as inference
                graph.replay()
                if ev:
                    ev[4].record()
                    ev[5].record()
        else:
            run = self.runner(batch)
            letterbox_graph, x = capture(letterbox)
            pred = run(x).clone()
            candidates_graph, rows = capture(lambda: top_candidates(pred, CANDIDATES))

            def launch(ev: list[torch.cuda.Event] | None) -> None:
                marks = ev[2:6] if ev else [None] * 4
                for mark, step in zip(marks, (letterbox_graph.replay, lambda: pred.copy_(run(x)),
                                               candidates_graph.replay, None), strict=True):
                    if mark is not None:
                        mark.record()
                    if step is not None:
                        step()

        torch.cuda.current_stream().synchronize()
        return Plan(
            stream=torch.cuda.current_stream(), box=box, src=src,
            src_host=torch.empty(src.shape, dtype=torch.uint8, pin_memory=True), pred=pred, rows=rows,
            rows_host=torch.empty(rows.shape, dtype=torch.float32, pin_memory=True), launch=launch, events=events,
        )


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def _on_device(image: object) -> bool:
    return isinstance(image, torch.Tensor) and image.is_cuda

