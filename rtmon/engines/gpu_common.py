"""What every GPU engine shares: frame upload, letterbox and NMS on the GPU inside CUDA graphs,
plans for the micro-batch sizes a run uses, timing, and pipelining.

A GPU engine only says how to run the network on a device tensor (`_build(batch)` returns a
callable `x -> raw head output`), or, if the network can be recorded inside a torch CUDA graph,
gives its plain forward (`_capturable_forward`). `GpuEngine` does the rest of a frame's journey:

    host frame ─DMA─▶ device uint8 ─letterbox─▶ network ─NMS (fixed shapes)─▶ boxes ─copy─▶ host
                upload stream    └────────────── one CUDA graph, compute stream ──────────────┘

When the network is a torch module the whole frame — letterbox, network, candidate selection,
class-aware NMS, rescaling and the copy of at most `max_det` boxes to pinned host memory — is
one graph replay (`rtmon.engines.prepost.fixed_shape_nms`). A runtime with its own CUDA graph
(ONNX Runtime, TensorRT) runs between a letterbox graph and an NMS graph. A frame whose NMS
cannot be decided with fixed shapes (more candidates than `CANDIDATES`, or an unusually long
chain of suppressions) is flagged by the graph and redone with the shared device NMS, so the
boxes never depend on those limits.

Plans. A plan is everything one micro-batch of one size needs in flight: static buffers and the
graph(s). The engine builds plans only for the sizes the run uses (`prepare`), before the first
frame. Graph memory comes from pools. From batch 2 up one micro-batch fills the GPU, so every
plan of batch > 1 replays on the engine stream, one after another, and they all share one pool —
the memory of the largest, not the sum (the largest is captured first, so the smaller ones fit
in the blocks it freed). Lane 0's batch-1 plan joins them; every other lane's batch-1 plan has
a stream and a pool of its own, so two single frames in flight overlap on the GPU (a batch-1
graph leaves most of it idle). A lane's plans of every size share one set of static buffers for
what outlives a replay (the head output, the boxes on the host), sized for the largest batch: a
lane has one micro-batch in flight at a time. The full-resolution frames are read only by the
letterbox at the start of a graph, so the plans on the engine stream share one device copy of
them: the next upload waits for an event the graph records once its letterbox has read them.
NVML's figure before and after each plan, and the allocator's reserved memory at each step of
loading, are in the engine's notes.

Frames already on the device (NVDEC) are copied device to device. Frames in host memory the
runner has page-locked for the GPU (its shared-memory ring, `register_host_memory`) are uploaded
straight from there, without a staging copy. Work runs on the engine's own streams, never the
legacy default stream: CUDA graphs cannot be captured on it, and ONNX Runtime and TensorRT are
told to use the same stream.

The runner drives an engine through `submit(frames)` (queue the work, return at once) and
`collect(ticket)` (wait for that work's boxes), keeping `lanes` micro-batches in flight: the
host uploads one while the GPU runs the other. A micro-batch of n frames runs on the plan for
the smallest prepared size ≥ n: static shapes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rtmon.core import EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import Network, warmup_frames
from rtmon.engines.prepost import (
    Letterbox,
    Thresholds,
    detections_from_fixed,
    fixed_shape_nms,
    postprocess,
    preprocess_torch,
)
from rtmon.errors import UserError
from rtmon.formatting import fmt_mib
from rtmon.models import ModelRef

Runner = Callable[[torch.Tensor], torch.Tensor]

# Candidates per image the graph's NMS considers. Any k gives the same boxes (an image with more
# candidates over the threshold is redone on the shared device NMS); k sets how rarely that
# happens and the size of the IoU matrix (k × k per image). The demo detector has at most 114
# candidates over 0.25 on the sample clip (measured on the CPU, 2026-12-01); COCO models on busy
# street scenes a few hundred.
CANDIDATES = 512
# Frames (or micro-batches) in flight: the host prepares frame N+1 while the GPU runs frame N.
LANES = 2
# cuBLAS keeps a workspace per stream, 32 MiB each by default on Hopper, and every captured graph
# has its own stream. yolo11n's few small matmuls (its attention block) need far less; a small
# workspace keeps the engine's memory near the baseline's. Read by PyTorch at the first GEMM of
# the process, so it is set before loading (each engine has its own process).
CUBLAS_WORKSPACE = ":1024:2"
DEFAULT_FRAME = (720, 1280, 3)  # the frame shape plans are built for when the run does not say
PINNED_FRAMES_KEPT = 4096  # ring frames whose page-locked tensor is kept (a benchmark pool: one per frame)


def require_cuda(engine: str) -> torch.device:
    """The CUDA device, or a one-line UserError that says why there is none."""
    if not torch.cuda.is_available():
        raise UserError(f"engine: {engine} needs an NVIDIA GPU with a working driver and a CUDA build of torch")
    return torch.device("cuda", torch.cuda.current_device())


def capture(fn: Callable[[], object], stream: torch.cuda.Stream, pool=None, warmup: int = 3
            ) -> tuple[torch.cuda.CUDAGraph, object]:
    """`fn()` recorded as a CUDA graph on `stream`, its memory from `pool` (a graph pool handle
    shared by graphs that never run at the same time; None: a pool of its own); returns (graph,
    its static outputs). The warm-up runs let cuDNN pick its algorithms before they are frozen."""
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, pool=pool):
        out = fn()
    return graph, out


def letterbox_batch(src: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W, 3) uint8 BGR frames → (B, 3, S, S) network input, one image at a time so the
    full-resolution float intermediates of one image are all the memory it needs."""
    out = torch.empty(src.shape[0], 3, size, size, dtype=dtype, device=src.device)
    for i in range(src.shape[0]):
        out[i : i + 1] = preprocess_torch(src[i], size, dtype)[0]
    return out


@dataclass
class Plan:
    """Everything one micro-batch of one size needs in flight, for one source size.

    `src` is the static uint8 input of the graph(s), `pred` the static raw head output (kept for
    the fallback NMS) and `out_host` the pinned (B, max_det + 1, 6) boxes the graph copies back.
    A plan is reused only after its previous micro-batch has been finished.
    """

    lane: int
    stream: torch.cuda.Stream
    box: Letterbox
    src: torch.Tensor  # (B, H, W, 3) uint8, device
    pred: torch.Tensor  # (B, 4+nc, N), device
    out_host: torch.Tensor  # (B, max_det + 1, 6) float32, pinned
    launch: Callable[[], None]  # replays the graph(s), the copy back included
    events: list[torch.cuda.Event]  # upload begin, uploaded, compute begin, boxes on the host
    src_owner: tuple[int, int, int]  # whose `src` buffer this plan reads (shared by the engine stream's plans)
    read: torch.cuda.Event | None  # recorded once the letterbox has read `src` (None: src is the lane's own)
    added_mib: float | None = None  # NVML: what building this plan added to the process
    src_host: torch.Tensor | None = field(default=None, repr=False)  # pinned staging, made when needed

    _src_rows: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def batch(self) -> int:
        return self.src.shape[0]

    def src_rows(self) -> list[torch.Tensor]:
        """`src[i]` for every image of the batch, made once (indexing a tensor on every frame
        costs microseconds)."""
        if self._src_rows is None:
            self._src_rows = list(self.src.unbind(0))
        return self._src_rows


class GpuEngine:
    """Base of the GPU engines. Subclasses set `backend`/`precision` and implement `_build`
    (and `_capturable_forward` when the network can live inside a torch CUDA graph)."""

    backend = "gpu"
    precision = "fp16"
    # Pipelined engines keep LANES micro-batches in flight when frames wait; False for ladder
    # rungs that show one frame at a time.
    pipelined = True
    uses_plans = True  # False for the ladder rungs that keep pre/post-processing on the CPU

    def __init__(self, name: str, model: ModelRef, settings, pipelined: bool | None = None) -> None:
        self.model_ref = model
        self.class_names = dict(model.class_names)
        self._imgsz = settings.model.imgsz
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        self._engines_dir = Path(settings.paths.engines_dir)
        self._thresholds = Thresholds.of(settings.model)
        if pipelined is not None:
            self.pipelined = pipelined
        self._sizes: tuple[int, ...] = (1,)
        self._frame_shape: tuple[int, ...] = DEFAULT_FRAME
        self._runners: dict[int, Runner] = {}
        self._plans: dict[tuple[int, int, int, int], Plan] = {}
        self._notes: list[str] = []
        self._device: torch.device | None = None
        self._stream: torch.cuda.Stream | None = None  # runtimes' stream, and every plan of batch > 1
        self._upload_stream: torch.cuda.Stream | None = None
        self._lane_streams: list[torch.cuda.Stream] = []
        self._lane_pools: list = []
        self._shared_pool = None
        self._copier: ThreadPoolExecutor | None = None
        self._next_lane = 0
        self._registered: list[tuple[int, int]] = []  # page-locked host ranges (address, size)
        self._pinned_frames: dict[int, tuple[np.ndarray, torch.Tensor]] = {}  # id(image) → (image, its tensor)
        self._memory_steps: list[tuple[str, float | None, float]] = []
        self._lane_buffers: dict[tuple[int, int, int], dict[str, torch.Tensor]] = {}
        self._src_readers: dict[tuple[int, int, int], torch.cuda.Event] = {}  # last graph to read a shared src
        self.stage_times = settings.engine.stage_times  # CUDA events per stage, or only the frame's end
        self.overflows = 0  # frames the graph's NMS could not decide (redone on the device NMS)
        self.info = EngineInfo(name, self.backend, self.precision, "cuda", self._imgsz)

    # --- the Engine protocol: capabilities -------------------------------------------------------
    @property
    def lanes(self) -> int:
        """Micro-batches this engine usefully keeps in flight."""
        return LANES if self.pipelined else 1

    @property
    def max_batch(self) -> int:
        return max(self._sizes)

    def prepare(self, pipelined: bool, batch_sizes: Sequence[int], frame_shape: tuple[int, ...] | None = None) -> None:
        """Plans for exactly these micro-batch sizes (and frames of `frame_shape`), built at load."""
        self.pipelined = self.pipelined and pipelined
        self._sizes = tuple(sorted({int(b) for b in batch_sizes if b >= 1})) or (1,)
        if frame_shape:
            self._frame_shape = tuple(frame_shape)

    def set_stage_timing(self, on: bool) -> None:
        self.stage_times = on

    def register_host_memory(self, address: int, size: int) -> bool:
        """Page-lock `size` bytes at `address` (the runner's frame ring) so frames there upload
        with one DMA and no staging copy; False (and the staging path) if the driver refuses."""
        code = torch.cuda.cudart().cudaHostRegister(address, size, 0)
        if int(code) != 0:
            self.note(f"frame ring not page-locked (cudaHostRegister returned {int(code)}); frames are staged")
            return False
        self._registered.append((address, size))
        return True

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

    def _plan_nms(self, batch: int) -> Callable[..., torch.Tensor]:
        """The fixed-shape NMS a plan of `batch` images records (`fixed_shape_nms`'s signature);
        an engine that compiles its kernels may compile this too."""
        return fixed_shape_nms

    def _release(self) -> None:
        """Drop runtime objects (sessions, contexts); the base drops runners and buffers."""

    def note(self, text: str) -> None:
        """A fact worth reporting about this run (compile time, a rebuilt cache)."""
        self._notes.append(text)

    # --- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        self._device = require_cuda(self.info.name)
        self._measure("CUDA context")
        self._stream = torch.cuda.Stream(self._device)
        self._upload_stream = torch.cuda.Stream(self._device)
        self._copier = ThreadPoolExecutor(4, thread_name_prefix="rtmon-upload")
        if self._capturable_forward() is not None:
            # Batch-1 plans of lanes 1…: a stream and a pool each, so two frames in flight overlap;
            # lane 0 replays on the engine stream, in the shared pool, with the batched plans.
            self._lane_streams = [self._stream] + [torch.cuda.Stream(self._device) for _ in range(self.lanes - 1)]
            self._lane_pools = [None] + [torch.cuda.graph_pool_handle() for _ in range(self.lanes - 1)]
        else:
            # One runtime session per batch size, with its own static buffers: one stream for all.
            self._lane_streams = [self._stream] * self.lanes
            self._lane_pools = [None] * self.lanes
        self._shared_pool = torch.cuda.graph_pool_handle()
        h, w = self._frame_shape[:2]
        # The largest plan first: the smaller ones' captures then fit in the blocks it freed in
        # the shared pool (built smallest first, each larger one needed new segments: the pool
        # grew to about the sum of the plans, H200 2026-12-03).
        for size in sorted(self._sizes, reverse=True):
            for lane in range(self.lanes if self.uses_plans else 0):
                self._plan(lane, size, self._frame_shape)
        for size in self._sizes:
            frames = warmup_frames((w, h), count=size)
            for _ in range(2):  # every lane, back to back
                tickets = [self.submit(frames) for _ in range(self.lanes)]
                for ticket in tickets:
                    self.collect(ticket)
        torch.cuda.empty_cache()  # the warm-up runs' blocks; the graphs keep their pools
        self._measure("after emptying the allocator's cache")
        if self._plans:
            plans = ", ".join(f"batch {p.batch} lane {p.lane} +{fmt_mib(p.added_mib)}" for p in self._plans.values())
            self.note(f"plans built (NVML before → after each): {plans}")
        self.note("GPU memory while loading (NVML, this process; in brackets PyTorch's allocator reserved): "
                  + ", ".join(f"{step} {fmt_mib(mib)} ({fmt_mib(reserved)})" for step, mib, reserved in self._memory_steps))
        self.note("stages: preprocess = the frame's upload; inference = the graph(s): letterbox, network, NMS, "
                  "boxes copied back; postprocess = boxes to Detections on the host")
        self.info = EngineInfo(
            self.info.name, f"{self.backend} + GPU NMS", self.precision, torch.cuda.get_device_name(self._device),
            self._imgsz, tuple(self._notes),
        )

    def _measure(self, step: str) -> None:
        mib = self._process_mib()
        self._memory_steps.append((step, mib, torch.cuda.memory_reserved(self._device) / 2**20))

    def _process_mib(self) -> float | None:
        """This process's GPU memory (NVML), once the device is idle."""
        from rtmon import gpu

        torch.cuda.synchronize(self._device)
        return gpu.process_memory_mib()

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
        from rtmon.runner import batch_sizes

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

    # --- the Engine protocol: frames ------------------------------------------------------------
    def infer(self, frame: Frame) -> Result:
        (result,) = self.collect(self.submit([frame]))
        return result

    def submit(self, frames: list[Frame]) -> tuple[Plan | None, list[Frame], list[Result]]:
        """Queue `frames` (one micro-batch) on the next lane and return at once; `collect` the
        ticket for the results. The runner keeps at most `lanes` tickets open and collects them
        in order, so a lane's plan is never overwritten while its frames are in flight."""
        if len(frames) > self.max_batch:
            raise ValueError(f"{self.info.name}: a batch of {len(frames)} frames; the largest prepared is {self.max_batch}")
        if len({tuple(f.image.shape) for f in frames}) > 1:
            # Streams of different sizes cannot share one static input: one frame at a time.
            return None, frames, [self.infer(f) for f in frames]
        lane, self._next_lane = self._next_lane, (self._next_lane + 1) % self.lanes
        size = next(b for b in self._sizes if b >= len(frames))
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
        self._lane_buffers.clear()
        self._src_readers.clear()
        self._pinned_frames.clear()
        self._release()
        self._runners.clear()
        if self._copier is not None:
            self._copier.shutdown()
            self._copier = None
        self._lane_streams, self._lane_pools, self._shared_pool = [], [], None
        self._stream = self._upload_stream = None
        for address, _ in self._registered:
            torch.cuda.cudart().cudaHostUnregister(address)
        self._registered.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- one micro-batch's journey ---------------------------------------------------------------
    def _launch(self, plan: Plan, frames: list[Frame]) -> None:
        """Queue the upload and the graph(s), the copy of the boxes included; returns at once."""
        begin, uploaded, compute, done = plan.events
        up = self._upload_stream
        # Host frames are staged into a pinned buffer, unless they already lie in page-locked
        # memory (the runner's ring), whence they are uploaded directly.
        on_device = [_on_device(f.image) for f in frames]
        pinned = [None if dev else self._pinned_tensor(f.image) for f, dev in zip(frames, on_device, strict=True)]
        staged = [i for i, dev in enumerate(on_device) if not dev and pinned[i] is None]
        if staged:
            if plan.src_host is None:
                h, w = plan.src.shape[1:3]
                plan.src_host = self._lane_buffer(plan.lane, h, w, "staging", (h, w, 3), torch.uint8,
                                                  pinned=True)[:plan.batch]
            images = [np.asarray(frames[i].image) for i in staged]
            targets = [plan.src_host[i].numpy() for i in staged]
            if len(staged) > 1:  # NumPy copies without the GIL: spread a batch over threads
                list(self._copier.map(np.copyto, targets, images))
            else:
                np.copyto(targets[0], images[0])
        with torch.cuda.stream(up):
            if self.stage_times:
                begin.record()
            reader = self._src_readers.get(plan.src_owner)
            if reader is not None:  # a shared src: the graph before must have letterboxed it
                up.wait_event(reader)
            if any(on_device):
                up.wait_stream(torch.cuda.current_stream())  # device frames were made on the caller's stream
            rows = plan.src_rows()
            for i, f in enumerate(frames):
                if pinned[i] is not None:
                    rows[i].copy_(pinned[i], non_blocking=True)
                elif on_device[i]:
                    rows[i].copy_(f.image)
                    f.image.record_stream(up)
                else:
                    rows[i].copy_(plan.src_host[i], non_blocking=True)
            uploaded.record()
        with torch.cuda.stream(plan.stream):
            plan.stream.wait_event(uploaded)
            if self.stage_times:
                compute.record()
            plan.launch()
            done.record()
        if plan.read is not None:
            self._src_readers[plan.src_owner] = plan.read

    def _finish(self, plan: Plan, frames: list[Frame]) -> list[Result]:
        """Wait for the plan's boxes; redo on the device NMS any image the graph could not decide."""
        begin, uploaded, compute, done = plan.events
        done.synchronize()
        t0 = time.perf_counter()
        rows = plan.out_host.numpy()
        detections = []
        for i in range(len(frames)):
            found = detections_from_fixed(rows[i])
            if found is None:
                self.overflows += 1
                with torch.cuda.stream(plan.stream):
                    found = postprocess(plan.pred[i], plan.box, self._thresholds)
            detections.append(found)
        t_done = time.perf_counter()
        n = len(frames)
        host_ms = (t_done - t0) * 1e3
        if self.stage_times:
            stages = StageTimes(begin.elapsed_time(uploaded) / n, compute.elapsed_time(done) / n, host_ms / n)
        else:
            stages = StageTimes(0.0, 0.0, host_ms / n)  # untimed: only the host's own work is known
        return [Result(self.info.name, f, d, stages, t_done) for f, d in zip(frames, detections, strict=True)]

    def _registered_image(self, image: np.ndarray) -> bool:
        address = image.__array_interface__["data"][0]
        return any(start <= address and address + image.nbytes <= start + size for start, size in self._registered)

    def _pinned_tensor(self, image: np.ndarray) -> torch.Tensor | None:
        """A host `image` as a CPU tensor when it lies in page-locked memory (the runner's ring),
        whence it uploads with one DMA; None when it must be staged. Kept per image object: the
        ring hands over the same view of a slot every time, and wrapping it afresh (its address,
        `torch.from_numpy`) costs tens of microseconds on a frame's cold path."""
        hit = self._pinned_frames.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        if not self._registered or not self._registered_image(image):
            return None
        if len(self._pinned_frames) >= PINNED_FRAMES_KEPT:
            self._pinned_frames.clear()
        tensor = torch.from_numpy(image)
        self._pinned_frames[id(image)] = (image, tensor)  # holding the image keeps its id unique
        return tensor

    # --- building the plans ----------------------------------------------------------------------
    def _plan(self, lane: int, batch: int, shape: tuple[int, ...]) -> Plan:
        h, w = int(shape[0]), int(shape[1])
        key = (lane, batch, h, w)
        if key not in self._plans:
            before = self._process_mib()
            plan = self._make_plan(lane, batch, h, w)
            after = self._process_mib()
            plan.added_mib = None if before is None or after is None else after - before
            self._plans[key] = plan
        return self._plans[key]

    def _lane_buffer(self, lane: int, h: int, w: int, name: str, row_shape: tuple[int, ...], dtype: torch.dtype,
                     pinned: bool = False, fill: int | None = None, rows: int | None = None) -> torch.Tensor:
        """The lane's buffer `name` for frames of h × w: `rows` rows (default: the largest
        prepared batch), shared by the lane's plans of every size (a plan takes the first `batch`
        rows). A lane has one micro-batch in flight at a time, so its plans never use it at once;
        one buffer per lane instead of one per plan halves what the static inputs and outputs
        cost. `lane` SHARED: the engine stream's src, shared by every plan replaying there."""
        key = (lane, h, w)
        buffers = self._lane_buffers.setdefault(key, {})
        if name not in buffers:
            shape = (rows or self.max_batch, *row_shape)
            if pinned:
                buffers[name] = torch.zeros(shape, dtype=dtype, pin_memory=True)
            elif fill is not None:
                buffers[name] = torch.full(shape, fill, dtype=dtype, device=self._device)
            else:
                buffers[name] = torch.empty(shape, dtype=dtype, device=self._device)
        return buffers[name]

    def _make_plan(self, lane: int, batch: int, h: int, w: int) -> Plan:
        th = self._thresholds
        box = Letterbox.fit(w, h, self._imgsz)
        forward = self._capturable_forward()
        own_stream = batch == 1 and forward is not None and lane > 0
        if own_stream:
            stream, pool = self._lane_streams[lane], self._lane_pools[lane]
        else:
            stream, pool = self._stream, self._shared_pool
        # The engine stream's plans replay one after another, so they can share one src, each
        # upload waiting for the graph before to have read it (`read`); a plan on its own
        # stream may run beside them and keeps its own. Without graph-recordable events (an
        # older torch) every lane keeps its own.
        read = None if own_stream else _read_event(recorded_in_graph=forward is not None)
        owner = (lane if read is None else SHARED, h, w)
        src = self._lane_buffer(owner[0], h, w, "src", (h, w, 3), torch.uint8, fill=114,
                                rows=batch if own_stream else None)[:batch]
        out_host = self._lane_buffer(lane, h, w, "boxes", (th.max_det + 1, 6), torch.float32, pinned=True)[:batch]
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        nms = self._plan_nms(batch)

        def boxes_back(pred: torch.Tensor) -> None:
            out_host.copy_(nms(pred, box, th, CANDIDATES), non_blocking=True)

        def held_like(pred: torch.Tensor) -> torch.Tensor:
            """The lane's copy of the head output (for the fallback NMS), outside every pool: a
            later capture's intermediates may not land on it (graphs sharing a pool only keep
            what is alive). Made at the first warm-up run, before capture: the plain allocator."""
            return self._lane_buffer(lane, h, w, "pred", tuple(pred.shape[1:]), pred.dtype)[:batch]

        if forward is not None:
            held: dict[str, torch.Tensor] = {}

            def whole() -> None:
                x = letterbox_batch(src, self._imgsz, self.input_dtype)
                if read is not None:  # in the warm-ups too: the event exists before the capture records it
                    read.record()  # in the graph, a node of its own: src has been read
                pred = forward(x)
                if "pred" not in held:
                    held["pred"] = held_like(pred)
                held["pred"].copy_(pred)
                boxes_back(held["pred"])

            graph, _ = capture(whole, stream, pool)
            pred, launch = held["pred"], graph.replay
        else:
            run = self.runner(batch)
            pre_graph, x = capture(lambda: letterbox_batch(src, self._imgsz, self.input_dtype), stream, pool)
            with torch.cuda.stream(stream):
                first = run(x)
                pred = held_like(first)
                pred.copy_(first)
            post_graph, _ = capture(lambda: boxes_back(pred), stream, pool)

            def launch() -> None:
                pre_graph.replay()
                if read is not None:
                    read.record()
                pred.copy_(run(x))
                post_graph.replay()

        stream.synchronize()
        return Plan(lane, stream, box, src, pred, out_host, launch, events, owner, read)


SHARED = -1  # the lane number under which the engine stream's plans keep their shared src


def _read_event(recorded_in_graph: bool) -> torch.cuda.Event | None:
    """An event a plan records once its letterbox has read the frames: a node of the CUDA graph
    (an external event) when recorded inside one; None where this torch cannot record one there."""
    if not recorded_in_graph:
        return torch.cuda.Event()
    try:
        return torch.cuda.Event(external=True)
    except TypeError:
        return None


def _on_device(image: object) -> bool:
    return isinstance(image, torch.Tensor) and image.is_cuda
