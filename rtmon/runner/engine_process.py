"""The engine process: build and load one engine, then answer frames until told to stop.

It attaches the frame ring and the mailbox the main process created, reads request records
(frames, control, stop), groups waiting frames into micro-batches, keeps up to the engine's
`lanes` micro-batches in flight, and writes one result record per frame. Lifecycle messages
(loaded, GPU memory once a second, failed) go back over the control pipe. The process ends
itself when the main process is gone, even after `kill -9`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque

import numpy as np

from rtmon.core import Frame, GpuMemory
from rtmon.errors import one_line
from rtmon.processes import die_with_parent
from rtmon.runner.mailbox import Kind, Mailbox
from rtmon.runner.messages import EngineJob, FailedMsg, LoadedMsg, MemoryMsg, NetworkMsg
from rtmon.runner.ring import FrameRing

MEMORY_REPORT_S = 1.0  # how often an engine process reports its GPU memory
_SENDING = threading.Lock()  # the control pipe has two writers once serving: the loop (failure) and the memory reporter
_NO_BOXES = np.zeros((0, 6), np.float32)


def gpu_memory(context_mib: float | None) -> GpuMemory:
    """This process's GPU memory now (NVML), with PyTorch's allocator figures where it runs."""
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


def engine_main(job: EngineJob, conn, parent_pid: int) -> None:
    """The engine process's entry point (spawned by `rtmon.runner.supervisor`)."""
    die_with_parent(parent_pid)
    if job.log_path:  # engine libraries print; keep it out of the terminal UI
        fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    logging.basicConfig(level=logging.WARNING, format=f"{job.engine}: %(levelname)s %(message)s")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    ring = FrameRing(job.slots, job.slot_bytes, name=job.ring)
    ring.touch()  # its pages mapped here before any frame is timed
    mailbox = Mailbox.attach(job.mailbox)
    engine = None
    try:
        context = _start_cuda() if job.uses_gpu else None
        from rtmon import engines as registry

        t0 = time.perf_counter()
        engine = (job.factory or registry.create)(job.engine, job.model, job.settings)
        engine.prepare(job.pipelined, job.batch_sizes, job.frame_shape)
        engine.load()
        load_s = time.perf_counter() - t0
        engine.register_host_memory(ring.address, ring.shm.size)
        lanes = engine.lanes if job.pipelined else 1
        max_batch = min(max(job.batch_sizes), engine.max_batch)
        network = None
        if job.network_batch:
            network = engine.network(job.network_batch)
            size = job.settings.model.imgsz
            probe = network.run(np.zeros((1, 3, size, size), network.input_dtype))
            conn.send(NetworkMsg(str(network.input_dtype), tuple(probe.shape[1:]), str(probe.dtype), network.max_batch))
        conn.send(LoadedMsg(engine.info, gpu_memory(context), load_s, lanes, max_batch, engine.max_batch))
    except BaseException as exc:
        # An engine's own UserError names the engine already: said once, by the runner.
        conn.send(FailedMsg(one_line(exc, "load failed").replace(f"load failed: engine: {job.engine}: ", "load failed: ", 1)))
        if engine is not None:
            with contextlib.suppress(BaseException):
                engine.close()
        _exit(1)
    try:
        server = Server(engine, job, ring, mailbox, conn, context, lanes, max_batch)
        _profiled(lambda: server.serve(network), job.engine)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the main process went away
    except BaseException as exc:
        with contextlib.suppress(Exception), _SENDING:
            conn.send(FailedMsg(one_line(exc, "inference failed")))
        _exit(1)
    finally:
        with contextlib.suppress(BaseException):
            engine.close()
    _exit(0)


def _exit(code: int) -> None:
    """End this process now, without the interpreter's teardown (a GPU library's own can hang or
    crash at exit), but after multiprocessing's exit finalizers: a lock or queue a library made
    here (tqdm's write lock, a compile pool's queues) is a named semaphore that the resource
    tracker this process shares with the main process knows of; unreleased, the tracker warns
    of a "leaked semaphore" when the main process ends (every GPU bench with `optimized` did)."""
    with contextlib.suppress(BaseException):
        from multiprocessing import util

        util._run_finalizers(0)  # what multiprocessing runs at a normal exit (exit priority >= 0)
    os._exit(code)


def _profiled(serve, engine: str) -> None:
    """`serve()`, under cProfile when RTMON_PROFILE names a folder (a developer's tool: where an
    engine process spends its time, written to <folder>/<engine>-<pid>.prof when it stops)."""
    folder = os.environ.get("RTMON_PROFILE")
    if not folder:
        serve()
        return
    import cProfile

    profile = cProfile.Profile()
    try:
        profile.runcall(serve)
    finally:
        os.makedirs(folder, exist_ok=True)
        profile.dump_stats(os.path.join(folder, f"{engine}-{os.getpid()}.prof"))


class Server:
    """The request loop of one loaded engine."""

    def __init__(self, engine, job: EngineJob, ring: FrameRing, mailbox: Mailbox, conn, context: float | None,
                 lanes: int, max_batch: int) -> None:
        self.engine, self.job, self.ring, self.mailbox, self.conn = engine, job, ring, mailbox, conn
        self.context, self.lanes, self.max_batch = context, lanes, max_batch
        self.pending: deque[tuple[object, list[tuple], float]] = deque()  # (ticket, request records, t_start)
        self.delay_s = job.max_delay_ms / 1e3
        self.stopped = threading.Event()
        if job.uses_gpu:
            threading.Thread(target=self.report_memory, name="rtmon-engine-memory", daemon=True).start()

    def report_memory(self) -> None:
        """Every `MEMORY_REPORT_S`, this process's GPU memory to the main process, from a thread
        of its own: asked in the request loop, between two frames, NVML's process query (a call
        into the driver) held the next frame back for as long as it took."""
        while not self.stopped.wait(MEMORY_REPORT_S):
            memory = gpu_memory(self.context)
            try:
                with _SENDING:
                    self.conn.send(MemoryMsg(memory))
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
                return  # the main process went away: the request loop ends the process

    def serve(self, network=None) -> None:
        """Answer frames (or, with `network`, batches of tensors for the network alone) until stopped."""
        try:
            self._serve() if network is None else self._serve_network(network)
        finally:
            self.stopped.set()

    def _serve(self) -> None:
        requests = self.mailbox.requests
        while True:
            # Finish the oldest micro-batch when every lane is busy, or when no frame is waiting:
            # a frame is never held back waiting for the next one to arrive.
            if self.pending and len(self.pending) >= self.lanes:
                self.finish_oldest()
                continue
            taken = requests.take(0.0 if self.pending else MEMORY_REPORT_S, 0.0 if self.pending else self.job.spin_s)
            if taken is None:
                if self.pending:
                    self.finish_oldest()
                continue
            if not self.handle(taken):
                return

    def _serve_network(self, network) -> None:
        """The network alone: each request a batch of input tensors in a ring slot, answered with
        the raw head output written over them in the same slot."""
        requests, size = self.mailbox.requests, self.job.settings.model.imgsz
        while True:
            taken = requests.take(MEMORY_REPORT_S, self.job.spin_s)
            if taken is None:
                continue
            record = taken[1]
            requests.release()
            if record[0] == Kind.STOP:
                return
            if record[0] != Kind.TENSORS:
                continue
            _kind, ticket, slot, batch = record[:4]
            t_start = time.perf_counter()
            out = network.run(self.ring.view(slot, (batch, 3, size, size), network.input_dtype))
            np.copyto(self.ring.view(slot, out.shape, out.dtype), out)
            self.mailbox.put_result(ticket, t_start, time.perf_counter(), (0.0, 0.0, 0.0), _NO_BOXES)

    def handle(self, first: tuple[int, tuple]) -> bool:
        """Run `first` (and the frames waiting behind it, as one micro-batch); False on stop."""
        batch, other = self.take_batch(first)
        if batch:
            frames = [Frame(r[3], self.ring.view(r[2], (r[5], r[6], r[7])), r[8], r[4]) for r in batch]
            t_start = time.perf_counter()
            self.pending.append((self.engine.submit(frames), batch, t_start))
        if other is None:
            return True
        kind, *_rest, max_batch, stage_times = other
        if kind == Kind.STOP:
            while self.pending:
                self.finish_oldest()
            return False
        if max_batch > 0:
            self.max_batch = max(1, min(max_batch, self.engine.max_batch))
        if stage_times >= 0:
            self.engine.set_stage_timing(bool(stage_times))
        return True

    def take_batch(self, first: tuple[int, tuple]) -> tuple[list[tuple], tuple | None]:
        """`first` and the frames that are waiting (or arrive within `max_delay_ms`), up to
        `max_batch`, like Triton's dynamic batcher; and the control record that ended the batch."""
        requests = self.mailbox.requests
        batch: list[tuple] = []
        taken: tuple[int, tuple] | None = first
        deadline = time.perf_counter() + self.delay_s
        while taken is not None:
            record = taken[1]
            requests.release()
            if record[0] != Kind.FRAME:
                return batch, record
            batch.append(record)
            if len(batch) >= self.max_batch:
                break
            taken = requests.take(max(deadline - time.perf_counter(), 0.0))
        return batch, None

    def finish_oldest(self) -> None:
        ticket, records, t_start = self.pending.popleft()
        results = self.engine.collect(ticket)
        for record, result in zip(records, results, strict=True):
            s = result.stages
            self.mailbox.put_result(record[1], t_start, result.t_done, (s.preprocess, s.inference, s.postprocess),
                                    result.detections.rows())
