"""The hot path between the main process and an engine process: fixed-size records in shared
memory and a semaphore per direction. Nothing on this path is pickled.

    main ──Request records──▶ engine   frame: ticket, ring slot, shape, index, stream, instants
                                        control: micro-batch size, stage timing · stop
    main ◀──Result records─── engine   ticket, engine instants, stage times, box count + boxes

Each direction is a single-producer single-consumer ring of records with a counting semaphore:
the producer writes a record, advances `tail`, then posts the semaphore once; the consumer
acquires once per record, reads it, then advances `head`. The semaphore is the doorbell *and*
the memory barrier: POSIX `sem_post`/`sem_wait` order the record's bytes before the count on
every architecture, and `sem_post` makes a system call only when the other side sleeps in
`sem_wait`. A consumer that expects a record soon spins on `sem_trywait` for a bounded time
(`spin_s`) before it sleeps, so it is awake when the record comes and neither side pays a
kernel wake-up (measured per machine in `rtmon bench --engines null`). The main process, which
waits a whole frame's time for each result, sleeps until the fastest recent answer is due
(`spin_at`, from the engine's recent latencies) and spins from then, yielding the GIL between
tries (`let_others_run`): a process woken after a long sleep pays more than one woken after a
short one (`scripts/handover_probe.py` measures the ways).

Boxes come back as (max_det, 6) float32 rows (x1 y1 x2 y2 score class) beside each result
record; an engine never returns more than `max_det` boxes (NMS keeps at most that many).
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtmon.runner.ring import attach


class Kind(enum.IntEnum):
    """What a request record asks for."""

    FRAME = 0  # run the frame in ring slot `slot`
    CONTROL = 1  # arg0: micro-batch size (0: unchanged); arg1: stage timing (-1 unchanged, 0 off, 1 on)
    STOP = 2  # answer what is in flight, then end
    TENSORS = 3  # network alone: run the `index` input images in ring slot `slot`, the output into the same slot


REQUEST = np.dtype([
    ("kind", "<i8"), ("ticket", "<i8"), ("slot", "<i8"), ("index", "<i8"), ("stream", "<i8"),
    ("h", "<i8"), ("w", "<i8"), ("c", "<i8"), ("t_capture", "<f8"), ("t_handed", "<f8"),
    ("arg0", "<i8"), ("arg1", "<i8"),
])
RESULT = np.dtype([
    ("ticket", "<i8"), ("t_start", "<f8"), ("t_done", "<f8"), ("preprocess", "<f8"), ("inference", "<f8"),
    ("postprocess", "<f8"), ("count", "<i8"),
])
BOX_COLUMNS = 6
_HEADER = 64  # two (head, tail) counter pairs, padded


def let_others_run() -> None:
    """Between a waiting main process's tries: hand the GIL to its other threads (the feed, the
    other engines' receivers, the UI) for a moment. `sched_yield` drops it for a system call's
    time; `time.sleep(0)` would sleep for the thread's timer slack (50 µs by default), and an
    answer that comes meanwhile waits for it. Measured with scripts/handover_probe.py (H200,
    2026-12-03, an engine busy 8 ms a frame): the way back 0.065 ms mean with `sched_yield`,
    0.095 with `sleep(0)`, 0.120 asleep; a neighbouring thread's 2 ms waits as late with either
    (0.10 ms mean), 0.66 ms when the GIL is never dropped."""
    os.sched_yield()


def _record_struct(dtype: np.dtype) -> struct.Struct:
    """The `struct` layout of a record dtype whose fields are all 8-byte little-endian scalars
    (so there is no padding): one C call reads or writes a whole record."""
    codes = {np.dtype("<i8"): "q", np.dtype("<f8"): "d"}
    layout = struct.Struct("<" + "".join(codes[dtype.fields[name][0]] for name in dtype.names))
    assert layout.size == dtype.itemsize
    return layout


class RecordQueue:
    """One direction: `capacity` records over shared memory, a semaphore counting the unread ones.
    Records are read and written with `struct` straight on the shared buffer: a few hundred
    nanoseconds, and little memory touched, on a path that runs when its caches are cold (after
    a frame's worth of waiting)."""

    def __init__(self, buf: memoryview, counters_at: int, records_at: int, dtype: np.dtype, capacity: int,
                 sem) -> None:
        self._counters = buf[counters_at:counters_at + 16].cast("q")  # int64 [head, tail] in shared memory
        self._buf, self._at, self._layout = buf, records_at, _record_struct(dtype)
        self.capacity = capacity
        self._sem = sem
        self._head = self._counters[0]  # the consumer's own copy
        self._tail = self._counters[1]  # the producer's own copy

    # -- producer ---------------------------------------------------------------------------------
    def reserve(self) -> int:
        """The position of the next record to write; raises when the consumer is `capacity` behind."""
        if self._tail - self._counters[0] >= self.capacity:
            raise OverflowError("record queue full: the consumer stopped reading")
        return self._tail % self.capacity

    def write(self, position: int, values: tuple) -> None:
        self._layout.pack_into(self._buf, self._at + position * self._layout.size, *values)

    def commit(self) -> None:
        """Publish the record written at `reserve()`'s position and ring the doorbell."""
        self._tail += 1
        self._counters[1] = self._tail
        self._sem.release()

    def put(self, values: tuple) -> None:
        self.write(self.reserve(), values)
        self.commit()

    # -- consumer ---------------------------------------------------------------------------------
    def take(self, timeout: float | None, spin_s: float = 0.0, spin_at: float | None = None) -> tuple[int, tuple] | None:
        """(position, record) of the next record, waiting up to `timeout` s; None when none came.
        It spins `spin_s` before it sleeps, or, with `spin_at` (a `perf_counter` instant: when the
        record is expected, less a margin), sleeps until then, spins `spin_s` (letting other
        threads run between tries), then sleeps again. Call `release()` once the position is read."""
        if not self._acquire(timeout, spin_s, spin_at):
            return None
        position = self._head % self.capacity
        return position, self._layout.unpack_from(self._buf, self._at + position * self._layout.size)

    def take_nowait(self) -> tuple[int, tuple] | None:
        return self.take(0.0)

    def release(self) -> None:
        """The record last taken is read: its position may be written again."""
        self._head += 1
        self._counters[0] = self._head

    def close(self) -> None:
        self._counters.release()
        self._buf = None

    def _acquire(self, timeout: float | None, spin_s: float, spin_at: float | None = None) -> bool:
        if self._sem.acquire(False):
            return True
        if spin_s > 0 and spin_at is not None:
            wait = spin_at - time.perf_counter()
            if wait > 0:
                if timeout is not None and wait >= timeout:
                    return bool(self._sem.acquire(True, timeout))
                if self._sem.acquire(True, wait):
                    return True
                if timeout is not None:
                    timeout = max(timeout - wait, 0.0)
        if spin_s > 0:
            end = time.perf_counter() + spin_s
            while time.perf_counter() < end:
                if self._sem.acquire(False):
                    return True
                if spin_at is not None:
                    let_others_run()
            if timeout is not None:
                timeout = max(timeout - spin_s, 0.0)
        if timeout == 0.0:
            return False
        return bool(self._sem.acquire(True, timeout))


@dataclass(frozen=True)
class MailboxSpec:
    """What an engine process needs to attach (sent with its job at spawn: semaphores travel
    only that way)."""

    name: str
    requests: int
    results: int
    max_det: int
    request_sem: Any
    result_sem: Any


class Mailbox:
    """Both directions in one shared-memory block. The main process creates it (`create`), the
    engine process attaches (`attach`)."""

    def __init__(self, spec: MailboxSpec, owner: bool) -> None:
        from multiprocessing import shared_memory

        self.spec, self.owner = spec, owner
        size = _HEADER + spec.requests * REQUEST.itemsize + spec.results * (RESULT.itemsize + spec.max_det * BOX_COLUMNS * 4)
        self.shm = shared_memory.SharedMemory(name=spec.name, create=True, size=size) if owner else attach(spec.name)
        buf = self.shm.buf
        if owner:
            buf[:_HEADER] = bytes(_HEADER)
        requests_at = _HEADER
        results_at = requests_at + spec.requests * REQUEST.itemsize
        boxes_at = results_at + spec.results * RESULT.itemsize
        self.boxes = np.ndarray((spec.results, spec.max_det, BOX_COLUMNS), np.float32, buf, boxes_at)
        self.requests = RecordQueue(buf, 0, requests_at, REQUEST, spec.requests, spec.request_sem)
        self.results = RecordQueue(buf, 16, results_at, RESULT, spec.results, spec.result_sem)

    @classmethod
    def create(cls, requests: int, results: int, max_det: int) -> Mailbox:
        import multiprocessing as mp
        import secrets

        ctx = mp.get_context("spawn")
        spec = MailboxSpec(f"rtmon-mb-{secrets.token_hex(6)}", requests, results, max_det, ctx.Semaphore(0),
                           ctx.Semaphore(0))
        return cls(spec, owner=True)

    @classmethod
    def attach(cls, spec: MailboxSpec) -> Mailbox:
        return cls(spec, owner=False)

    # -- the engine process's side ------------------------------------------------------------------
    def put_result(self, ticket: int, t_start: float, t_done: float, stages: tuple[float, float, float],
                   rows: np.ndarray) -> None:
        """One frame's answer: its (n, 6) float32 box rows (x1 y1 x2 y2 score class,
        `Detections.rows()`), at most `max_det` of them, copied into the result's slot in one step."""
        position = self.results.reserve()
        n = min(len(rows), self.spec.max_det)
        if n:
            self.boxes[position, :n] = rows[:n]
        self.results.write(position, (ticket, t_start, t_done, *stages, n))
        self.results.commit()

    # -- the main process's side --------------------------------------------------------------------
    def put_frame(self, ticket: int, slot: int, shape: tuple[int, ...], index: int, stream: int, t_capture: float,
                  t_handed: float) -> None:
        h, w, c = ((*tuple(shape), 1))[:3]
        self.requests.put((Kind.FRAME, ticket, slot, index, stream, h, w, c, t_capture, t_handed, 0, 0))

    def put_control(self, max_batch: int = 0, stage_times: int = -1) -> None:
        self.requests.put((Kind.CONTROL, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, max_batch, stage_times))

    def put_tensors(self, ticket: int, slot: int, batch: int, t_handed: float) -> None:
        self.requests.put((Kind.TENSORS, ticket, slot, batch, 0, 0, 0, 0, t_handed, t_handed, 0, 0))

    def put_stop(self) -> None:
        self.requests.put((Kind.STOP, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0))

    def take_result(self, timeout: float | None, spin_s: float = 0.0,
                    spin_at: float | None = None) -> tuple[int, tuple] | None:
        """(position, result record) of the next answer, or None after `timeout`
        (`RecordQueue.take`). Its boxes stay in the result's slot, readable, until `boxes_of`
        copies them out and frees it; take the next answer only after that."""
        return self.results.take(timeout, spin_s, spin_at)

    def boxes_of(self, position: int, count: int) -> np.ndarray:
        """The boxes of the answer taken at `position` (count rows, copied), freeing its slot."""
        rows = self.boxes[position, :count].copy()
        self.results.release()
        return rows

    def close(self) -> None:
        self.boxes = None
        for queue in (self.requests, self.results):
            if queue is not None:
                queue.close()
        self.requests = self.results = None
        with contextlib.suppress(BufferError, OSError):
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()
