"""One engine in its own process: the one way rtmon drives an engine (live, record, bench, eval).

    main process                                   engine process (spawned)
    ────────────                                   ────────────────────────
    feed ─▶ dispatcher ─ image ─▶ FrameRing (shared memory slots) ─▶ Frame view ─▶ engine
                       ─ FrameMsg (slot, index, stream, t_capture) ─▶
    metrics ◀─ receiver ◀──── ResultsMsg (boxes, stage times, t_start, t_done) ◀─┘
                        ◀──── LoadedMsg / MemoryMsg / FailedMsg

Frames never cross the process boundary by pickling: the dispatcher copies each image into a
free slot of a shared-memory ring (or, in benchmarks, the frames are preloaded there once) and
sends a small typed message naming the slot. Results come back as small typed messages; the
main process joins them to its own `Frame` again. Engines therefore never share an interpreter
(no GIL contention between them) and each engine's GPU memory is its own process's.

What a runner takes is its subscription's business (`rtmon.sources`): the newest frame of each stream
(`latest`, the live policy) or every frame in order (`every`); how many frames it keeps in flight
(`depth`: 1 = the next frame is handed over when the previous one's boxes are back) and how the
engine process groups waiting frames into micro-batches (`engine.max_batch`,
`engine.max_delay_ms`) are the runner's.

Failures stay contained: an engine that raises, crashes (segfault, `os._exit`), runs out of
memory or hangs (a frame in flight and no result for `engine.timeout_s`) becomes FAILED with a
one-line reason and its process is ended; nothing else stops. An engine process ends itself
when the main process is gone, even after `kill -9` (parent-death signal, and a watchdog).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from rtmon.core import Detections, EngineInfo, EngineState, Frame, GpuMemory, Result, Role, StageTimes
from rtmon.errors import UserError
from rtmon.metrics import EngineMetrics
from rtmon.models import ModelRef

log = logging.getLogger(__name__)

MEMORY_REPORT_S = 1.0  # how often an engine process reports its GPU memory
_PARENT_POLL_S = 0.5


# ---- shared memory: a ring of frame slots -------------------------------------------------------


class FrameRing:
    """`slots` frame buffers of `slot_bytes` each in one shared-memory block.

    The main process creates it; an engine process attaches by name. A slot holds one BGR image
    of any shape that fits; `view()` is a NumPy array over the shared bytes (no copy).
    """

    def __init__(self, slots: int, slot_bytes: int, name: str | None = None) -> None:
        self.slots, self.slot_bytes = slots, slot_bytes
        self.owner = name is None
        size = max(slots * slot_bytes, 1)
        self.shm = shared_memory.SharedMemory(create=True, size=size) if self.owner else _attach(name)
        self.name = self.shm.name
        self._buf = np.ndarray((self.shm.size,), np.uint8, self.shm.buf)

    def view(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        start = slot * self.slot_bytes
        return self._buf[start : start + n].reshape(shape)

    def write(self, slot: int, image: np.ndarray) -> tuple[int, ...]:
        if image.nbytes > self.slot_bytes:
            raise ValueError(f"a {image.shape} frame does not fit a {self.slot_bytes}-byte slot")
        np.copyto(self.view(slot, image.shape), image)
        return tuple(image.shape)

    @property
    def address(self) -> int:
        """Where the block starts in this process (to page-lock it for the GPU)."""
        return self._buf.ctypes.data

    def close(self) -> None:
        self._buf = None  # release the exported buffer before closing the mapping
        with contextlib.suppress(BufferError, OSError):
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach without registering with the resource tracker: the creator owns (and unlinks) it."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python ≥ 3.13
    except TypeError:
        from multiprocessing import resource_tracker

        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


def slot_bytes_for(width: int, height: int) -> int:
    return int(width) * int(height) * 3


# ---- what crosses the process boundary ----------------------------------------------------------


@dataclass(frozen=True)
class EngineJob:
    """Everything an engine process needs to start."""

    engine: str
    model: ModelRef
    settings: object  # rtmon.config.Settings
    ring: str
    slots: int
    slot_bytes: int
    uses_gpu: bool
    max_batch: int = 1
    max_delay_ms: float = 0.0
    pipelined: bool = True  # may the engine keep more than one frame in flight
    log_path: str = ""
    factory: Callable | None = None  # builds the engine instead of the registry (tests, plugins)


@dataclass(frozen=True)
class FrameMsg:
    ticket: int
    slot: int
    shape: tuple[int, ...]
    index: int
    stream: int
    t_capture: float


@dataclass(frozen=True)
class StopMsg:
    pass


@dataclass(frozen=True)
class ControlMsg:
    """Change how the engine process works, between frames (the sender waits for none in flight)."""

    max_batch: int | None = None  # group up to this many waiting frames (within the engine's own limit)
    stage_times: bool | None = None  # time each stage (CUDA events), or only the whole frame


@dataclass(frozen=True)
class LoadedMsg:
    info: EngineInfo
    memory: GpuMemory
    load_s: float
    lanes: int  # frames the engine can usefully keep in flight
    max_batch: int  # the micro-batch it starts with
    engine_max_batch: int  # the largest micro-batch it accepts


@dataclass(frozen=True)
class ResultRow:
    ticket: int
    t_start: float
    t_done: float
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    stages: StageTimes


@dataclass(frozen=True)
class ResultsMsg:
    rows: tuple[ResultRow, ...]


@dataclass(frozen=True)
class MemoryMsg:
    memory: GpuMemory


@dataclass(frozen=True)
class FailedMsg:
    error: str  # one line


# ---- the engine process -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """End this process when the main process ends, however it ends."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="rtmon-parent-watch", daemon=True).start()


def _one_line(prefix: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return f"{prefix}: {text[0] if text else type(exc).__name__}"[:300]


def _gpu_memory(context_mib: float | None) -> GpuMemory:
    from rtmon import gpu

    peak = reserved = None
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_initialized():
            peak = torch.cuda.max_memory_allocated() / gpu.MIB
            reserved = torch.cuda.memory_reserved() / gpu.MIB
    return GpuMemory(gpu.process_memory_mib(), context_mib, peak, reserved)


def _start_cuda() -> float | None:
    """Start CUDA in this process and measure what the context alone costs (NVML)."""
    from rtmon import gpu

    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()  # creates the primary context, allocates nothing
            return gpu.process_memory_mib()
    return None


class _SyncAdapter:
    """submit/collect over an engine that only has `infer` (and maybe `infer_batch`)."""

    lanes = 1

    def __init__(self, engine) -> None:
        self.engine = engine

    def submit(self, frames: list[Frame]) -> list[Frame]:
        return frames

    def collect(self, frames: list[Frame]) -> list[Result]:
        if len(frames) > 1 and hasattr(self.engine, "infer_batch"):
            return self.engine.infer_batch(frames)
        return [self.engine.infer(f) for f in frames]


def engine_main(job: EngineJob, conn) -> None:
    """The engine process: load, then answer frames until told to stop (or the parent is gone)."""
    _die_with_parent()
    if job.log_path:  # engine libraries print; keep it out of the terminal UI
        fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    logging.basicConfig(level=logging.WARNING, format=f"{job.engine}: %(levelname)s %(message)s")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    ring = FrameRing(job.slots, job.slot_bytes, name=job.ring)
    engine = None
    try:
        context = _start_cuda() if job.uses_gpu else None
        from rtmon import engines as registry

        t0 = time.perf_counter()
        engine = (job.factory or registry.create)(job.engine, job.model, job.settings)
        if not job.pipelined and hasattr(engine, "pipelined"):
            engine.pipelined = False  # one frame at a time: no second lane to build (or to hold memory)
        engine.load()
        load_s = time.perf_counter() - t0
        register = getattr(engine, "register_host_memory", None)
        if register is not None:
            register(ring.address, ring.shm.size)
        lanes = getattr(engine, "lanes", 1) if job.pipelined else 1
        limit = getattr(engine, "max_batch", 1)
        max_batch = min(job.max_batch, limit)
        conn.send(LoadedMsg(engine.info, _gpu_memory(context), load_s, lanes, max_batch, limit))
    except BaseException as exc:
        conn.send(FailedMsg(_one_line("load failed", exc)))
        if engine is not None:
            with contextlib.suppress(BaseException):
                engine.close()
        os._exit(1)
    try:
        _serve(engine, job, ring, conn, context, lanes, max_batch)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the main process went away
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(FailedMsg(_one_line("inference failed", exc)))
        os._exit(1)
    finally:
        with contextlib.suppress(BaseException):
            engine.close()
        ring.close()
    os._exit(0)


def _serve(engine, job: EngineJob, ring: FrameRing, conn, context: float | None, lanes: int, max_batch: int) -> None:
    driver = engine if hasattr(engine, "submit") and hasattr(engine, "collect") else _SyncAdapter(engine)
    pending: deque[tuple[object, list[FrameMsg], float]] = deque()
    delay = job.max_delay_ms / 1e3
    next_memory = time.monotonic() + MEMORY_REPORT_S
    limit = getattr(engine, "max_batch", 1)

    def finish_oldest() -> None:
        ticket, msgs, t_start = pending.popleft()
        results = driver.collect(ticket)
        conn.send(ResultsMsg(tuple(
            ResultRow(m.ticket, t_start, r.t_done, r.detections.xyxy, r.detections.confidence, r.detections.class_id,
                      r.stages)
            for m, r in zip(msgs, results, strict=True)
        )))

    while True:
        if job.uses_gpu and time.monotonic() >= next_memory:
            conn.send(MemoryMsg(_gpu_memory(context)))
            next_memory = time.monotonic() + MEMORY_REPORT_S
        # Finish the oldest frame when every lane is busy, or when nothing new is waiting: a
        # frame is never held back waiting for the next one to arrive.
        if pending and (len(pending) >= lanes or not conn.poll(0)):
            finish_oldest()
            continue
        if not conn.poll(MEMORY_REPORT_S):
            continue
        batch, other = _take_batch(conn, conn.recv(), max_batch, delay)
        if batch:
            frames = [Frame(m.index, ring.view(m.slot, m.shape), m.t_capture, m.stream) for m in batch]
            t_start = time.perf_counter()
            pending.append((driver.submit(frames), batch, t_start))
        if isinstance(other, StopMsg):
            while pending:
                finish_oldest()
            return
        if isinstance(other, ControlMsg):
            if other.max_batch is not None:
                max_batch = max(1, min(other.max_batch, limit))
            if other.stage_times is not None and hasattr(engine, "stage_times"):
                engine.stage_times = other.stage_times


def _take_batch(conn, first, max_batch: int, delay_s: float) -> tuple[list[FrameMsg], object]:
    """`first` and the frames that arrive within `delay_s` after it, up to `max_batch` (like
    Triton's dynamic batcher: a full batch goes at once, a partial one when the delay is up);
    and the control message that ended the batch, if one did."""
    if not isinstance(first, FrameMsg):
        return [], first
    batch = [first]
    deadline = time.perf_counter() + delay_s
    while len(batch) < max_batch and conn.poll(max(deadline - time.perf_counter(), 0.0)):
        msg = conn.recv()
        if not isinstance(msg, FrameMsg):
            return batch, msg
        batch.append(msg)
    return batch, None


# ---- the main process's side ---------------------------------------------------------------------


@dataclass
class _InFlight:
    frame: Frame
    slot: int | None  # the ring slot to free when its result comes back (None: preloaded)
    skipped: int
    t_sent: float


@dataclass
class RunnerOptions:
    """How a runner drives its engine (the feed decides which frames)."""

    depth: int | None = None  # frames in flight; None = (lanes + queued_batches) × max batch
    queued_batches: int = 0  # batches waiting in the pipe beyond those the engine runs, so its
    # lanes never wait for the next batch to arrive (throughput scenarios)
    max_batch: int = 1
    max_delay_ms: float = 0.0
    pipelined: bool = True
    timeout_s: float = 10.0  # a frame in flight this long without a result: hung
    load_timeout_s: float = 900.0
    slots: int = 0  # ring slots; 0 = enough for `depth` frames in flight and one being written
    log_dir: Path | None = None
    factory: Callable | None = None  # a module-level `(name, model, settings) -> engine`, instead of the registry

    @classmethod
    def of(cls, settings, **overrides) -> RunnerOptions:
        e = settings.engine
        base = {"max_batch": e.max_batch, "max_delay_ms": e.max_delay_ms, "timeout_s": e.timeout_s,
                "load_timeout_s": e.load_timeout_s}
        return cls(**{**base, **overrides})


class EngineRunner:
    """Drives one engine in its own process. Thread-safe for one feeder and any readers.

    `candidates` are engine names tried in order until one loads (the `optimized` alias falls
    back to the next engine in the measured order, with a notice). Results go to `metrics`,
    to `latest`, and to `on_result` when given.
    """

    def __init__(
        self,
        candidates: list[str],
        model: ModelRef,
        settings,
        options: RunnerOptions,
        *,
        role: Role = Role.OPTIMIZED,
        on_result: Callable[[Result, int], None] | None = None,
        label: str | None = None,
    ) -> None:
        from rtmon import engines as registry

        self.candidates = list(candidates)
        self.name = self.candidates[0]
        self.label = label or self.name  # how the user asked for it (e.g. "optimized")
        self.model, self.settings, self.options = model, settings, options
        self.role = role
        self.on_result = on_result
        self.metrics = EngineMetrics(self.name, role=role)
        spec = registry.SPECS.get(self.name)
        self.info = EngineInfo(self.name, spec.description if spec else self.name, "", "", settings.model.imgsz)
        self.latest: Result | None = None
        self.latest_by_stream: dict[int, Result] = {}
        self.loaded = threading.Event()  # set once loaded, or failed
        self.done = threading.Event()  # set when the process is gone
        self.notice = ""
        self.load_s: float | None = None
        self.lanes = 1
        self.max_batch = 1
        self._engine_max_batch = 1
        self._cv = threading.Condition()
        self._enabled = True
        self._resumed = False  # turned back on: frames missed while off are not "skipped"
        self._stopping = False
        self._ring: FrameRing | None = None
        self._free: deque[int] = deque()
        self._in_flight: dict[int, _InFlight] = {}
        self._ticket = 0
        self._proc: mp.Process | None = None
        self._conn = None
        self._threads: list[threading.Thread] = []
        self._slot_bytes = 0
        self._preloaded = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, slot_bytes: int, preload: list[np.ndarray] | None = None) -> None:
        """Create the ring (sized for frames of `slot_bytes`, or holding `preload`) and start
        loading the engine in its process; returns at once (see `loaded`)."""
        self._preloaded = preload is not None
        if preload is not None:
            slot_bytes = max(im.nbytes for im in preload)
            slots = len(preload)
        else:
            slots = self.options.slots or self._default_slots()
        self._slot_bytes = slot_bytes
        self._ring = FrameRing(slots, slot_bytes)
        if preload is not None:
            for i, image in enumerate(preload):
                self._ring.write(i, image)
        else:
            self._free = deque(range(slots))
        thread = threading.Thread(target=self._supervise, name=f"rtmon-runner-{self.label}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _default_slots(self) -> int:
        # A pipelined engine keeps two lanes of up to max_batch frames; one more slot is written
        # while those are in flight.
        lanes = 2 if self.options.pipelined else 1
        return (self.options.depth or lanes * max(self.options.max_batch, 1)) + 1

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """True when the engine is running; False if it failed (see `metrics.error`)."""
        self.loaded.wait(timeout if timeout is not None else self.options.load_timeout_s)
        return self.metrics.state in (EngineState.RUNNING, EngineState.OFF)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the engine process (answering what is in flight first) and free the ring."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        conn, proc = self._conn, self._proc
        if conn is not None and proc is not None and proc.is_alive():
            with contextlib.suppress(Exception):
                conn.send(StopMsg())
            proc.join(timeout)
        self._kill()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(2.0)

    # -- feeding ----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.options.depth or (self.lanes + self.options.queued_batches) * self.max_batch

    def control(self, max_batch: int | None = None, stage_times: bool | None = None) -> None:
        """Change the engine process's micro-batch size or stage timing; call with nothing in flight."""
        if max_batch is not None:
            self.max_batch = max(1, min(max_batch, self._engine_max_batch))
        with contextlib.suppress(OSError, AttributeError):
            self._conn.send(ControlMsg(max_batch, stage_times))

    @property
    def in_flight(self) -> int:
        with self._cv:
            return len(self._in_flight)

    def set_enabled(self, enabled: bool) -> None:
        with self._cv:
            self._resumed = enabled and not self._enabled
            self._enabled = enabled
            self._cv.notify_all()
        if self.metrics.state in (EngineState.RUNNING, EngineState.OFF):
            self.metrics.set_state(EngineState.RUNNING if enabled else EngineState.OFF)

    @property
    def accepting(self) -> bool:
        return self._enabled and not self._stopping and self.metrics.state == EngineState.RUNNING

    def wait_room(self, timeout: float) -> bool:
        """Block until the engine can take another frame; False after `timeout` (also while it
        is loading or off), or at once when it has failed, ended or is stopping."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if self._stopping or self.metrics.state in (EngineState.FAILED, EngineState.ENDED):
                    return False
                if self.accepting and len(self._in_flight) < self.depth:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)

    def send(self, frame: Frame, skipped: int = 0, slot: int | None = None) -> bool:
        """Hand `frame` to the engine: copied into a free slot, or, for a preloaded ring, the
        preloaded `slot`. Call after `wait_room()`; False if the engine cannot take it now."""
        with self._cv:
            if not self.accepting or len(self._in_flight) >= self.depth:
                return False
            self._ticket += 1
            ticket = self._ticket
            if self._preloaded:
                if slot is None:
                    raise ValueError("a preloaded ring needs the frame's slot")
                free = None
            else:
                if not self._free:
                    return False
                free = self._free.popleft()
            self._in_flight[ticket] = _InFlight(frame, free, skipped, time.perf_counter())
        try:
            if free is not None:
                if frame.image.nbytes > self._slot_bytes:
                    raise ValueError(f"frame of {frame.image.shape} is larger than the ring's slots")
                shape = self._ring.write(free, frame.image)
            else:
                shape = tuple(frame.image.shape)
            self._conn.send(FrameMsg(ticket, slot if free is None else free, shape, frame.index, frame.stream,
                                     frame.t_capture))
        except (OSError, ValueError, AttributeError) as exc:
            with self._cv:
                entry = self._in_flight.pop(ticket, None)
                if entry is not None and entry.slot is not None:
                    self._free.append(entry.slot)
                self._cv.notify_all()
            if isinstance(exc, ValueError):
                self._fail(str(exc))
            return False
        return True

    def follow(self, sub) -> None:
        """Take frames from a `rtmon.sources.Subscription` (its policy: latest or every) in a
        thread of the main process, whenever the engine has room, until the feed ends."""
        thread = threading.Thread(target=self._follow, args=(sub,), name=f"rtmon-feed-{self.label}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _follow(self, sub) -> None:
        import queue

        self.wait_loaded()
        while not self._stopping and not self.done.is_set():
            if not self.wait_room(0.2):
                continue
            if self._resumed:
                self._resumed = False
                sub.forget()
            try:
                taken = sub.take(max(self.depth - self.in_flight, 1), timeout=0.2)
            except queue.Empty:
                continue
            if not taken:  # every stream it follows has ended
                self.drain(self.options.timeout_s)
                if self.metrics.state == EngineState.RUNNING:
                    self.metrics.set_state(EngineState.ENDED)
                return
            for frame, skipped in taken:
                self.send(frame, skipped)

    def drain(self, timeout: float) -> bool:
        """Wait until every frame handed over has been answered (or the engine failed)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._in_flight and self.metrics.state == EngineState.RUNNING:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return not self._in_flight

    # -- the engine process -----------------------------------------------------------------------
    def _supervise(self) -> None:
        """Start the process (trying the next candidate when one fails to load), then read what
        it sends until it ends."""
        while True:
            if not self._start_process():
                return
            if self._receive():
                return  # ran and ended (or was stopped)
            # failed to load: try the next candidate, if any
            failed, why = self.name, self.metrics.error
            self.candidates.pop(0)
            if not self.candidates or self._stopping:
                self.loaded.set()
                self.done.set()
                return
            self.name = self.candidates[0]
            self.notice = f"{failed} did not load ({why}); using {self.name}, next in the measured order"
            log.warning("%s: %s", self.label, self.notice)
            self.metrics = EngineMetrics(self.name, role=self.role, notice=self.notice)

    def _start_process(self) -> bool:
        from rtmon import engines as registry

        self.metrics.set_state(EngineState.LOADING)
        log_path = ""
        if self.options.log_dir is not None:
            self.options.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = str(self.options.log_dir / f"{self.name}.log")
        job = EngineJob(
            engine=self.name, model=self.model, settings=self.settings, ring=self._ring.name,
            slots=self._ring.slots, slot_bytes=self._ring.slot_bytes,
            uses_gpu=self.name in registry.SPECS and registry.uses_gpu(self.name),
            max_batch=self.options.max_batch, max_delay_ms=self.options.max_delay_ms,
            pipelined=self.options.pipelined, log_path=log_path, factory=self.options.factory,
        )
        ctx = mp.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=engine_main, args=(job, child_conn), name=f"rtmon-engine-{self.name}", daemon=True)
        try:
            proc.start()
        except Exception as exc:
            self._fail(_one_line("could not start the engine process", exc))
            self.loaded.set()
            self.done.set()
            return False
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        return True

    def _receive(self) -> bool:
        """Read the engine process's messages until it ends. False when it failed to load."""
        conn, proc = self._conn, self._proc
        loaded = False
        t_start = time.monotonic()
        try:
            while True:
                if not conn.poll(0.1):
                    if not proc.is_alive() and not conn.poll(0):
                        raise EOFError
                    self._check_timeouts(loaded, t_start)
                    if self._stopping and not proc.is_alive():
                        return True
                    continue
                msg = conn.recv()
                if isinstance(msg, ResultsMsg):
                    self._deliver(msg)
                elif isinstance(msg, MemoryMsg):
                    self.metrics.set_memory(msg.memory)
                elif isinstance(msg, LoadedMsg):
                    loaded = True
                    self.info, self.load_s = msg.info, msg.load_s
                    self.lanes, self.max_batch = msg.lanes, msg.max_batch
                    self._engine_max_batch = msg.engine_max_batch
                    self.metrics.set_memory(msg.memory)
                    self.metrics.set_state(EngineState.RUNNING if self._enabled else EngineState.OFF)
                    self.loaded.set()
                    with self._cv:
                        self._cv.notify_all()
                elif isinstance(msg, FailedMsg):
                    self._fail(msg.error)
                    if not loaded:
                        proc.join(5)
                        return False
        except (EOFError, OSError):
            proc.join(2)
            if not self._stopping and self.metrics.state != EngineState.FAILED:
                self._fail(_exit_reason(proc.exitcode))
            if not loaded and not self._stopping:
                return False
        finally:
            if loaded or self._stopping:
                self.loaded.set()
                self.done.set()
            with self._cv:
                self._cv.notify_all()
        return True

    def _check_timeouts(self, loaded: bool, t_start: float) -> None:
        now = time.monotonic()
        if not loaded:
            if now - t_start > self.options.load_timeout_s:
                self._fail(f"load failed: not loaded within {self.options.load_timeout_s:.0f} s")
                self._kill()
            return
        with self._cv:
            oldest = min((f.t_sent for f in self._in_flight.values()), default=None)
        if oldest is not None and time.perf_counter() - oldest > self.options.timeout_s:
            self._fail(f"hung: no result within {self.options.timeout_s:g} s (engine.timeout_s)")
            self._kill()

    def _deliver(self, msg: ResultsMsg) -> None:
        for row in msg.rows:
            with self._cv:
                entry = self._in_flight.pop(row.ticket, None)
                if entry is None:
                    continue
                if entry.slot is not None:
                    self._free.append(entry.slot)
                self._cv.notify_all()
            result = Result(self.name, entry.frame, Detections(row.xyxy, row.confidence, row.class_id), row.stages,
                            row.t_done, row.t_start)
            self.metrics.record(result, entry.skipped)
            self.latest = self.latest_by_stream[result.frame.stream] = result
            if self.on_result is not None:
                self.on_result(result, entry.skipped)

    def _fail(self, error: str) -> None:
        error = " ".join(error.split())[:300]
        if self.metrics.state != EngineState.FAILED:
            log.debug("engine %s failed: %s", self.name, error)
        self.metrics.set_state(EngineState.FAILED, error)
        with self._cv:
            self._cv.notify_all()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "the engine process stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"crashed: the engine process was killed by {signal.Signals(-code).name}"
        return f"crashed: the engine process was killed by signal {-code}"
    return f"crashed: the engine process exited with code {code}"


def load_or_raise(runners: list[EngineRunner]) -> None:
    """Wait for every runner to load; a UserError naming the first that could not."""
    for runner in runners:
        if not runner.wait_loaded():
            raise UserError(f"engine: {runner.name}: {runner.metrics.error or 'did not load'}")


__all__ = ["EngineRunner", "FrameRing", "RunnerOptions", "engine_main", "load_or_raise", "slot_bytes_for"]
