"""The main process's side of an engine: `EngineRunner` starts the engine's process, hands it
frames, and turns what comes back into `Result`s for metrics and the picture.

    main process                                          engine process (spawned)
    ────────────                                          ────────────────────────
    Feed ─▶ pump ─ pixels ─▶ FrameRing (shared memory slots) ─▶ Frame view ─▶ engine
                 ─ request record (slot, index, instants) ─▶ Mailbox ─▶
    metrics ◀─ receiver ◀── result record + boxes ◀──────────── Mailbox ◀─┘
                        ◀── LoadedMsg / MemoryMsg / FailedMsg (control pipe)

The runner pulls frames from its feed whenever the engine has room: from the receiving thread
right after a result (so the next frame goes without another thread waking up), and from a
feeding thread when the feed says a new frame arrived. `depth` frames may be in flight: 1 hands
frame N+1 over when frame N's boxes are back; more let the engine overlap frames
(`lanes`) and group waiting ones into micro-batches (`engine.max_batch`).

Every result carries four instants (see `rtmon.core.Result`): handed over and received here,
taken and finished in the engine's process. Latency is measured here, where the boxes arrive.

Failures stay contained: an engine that raises, crashes (segfault, `os._exit`), runs out of
memory or hangs (a frame in flight and no result for `engine.timeout_s`) becomes FAILED with a
one-line reason and its process is ended; nothing else stops. `candidates` are tried in order
until one loads (the `optimized` alias falls back to the next engine, with a notice).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtmon.core import Detections, EngineInfo, EngineState, Frame, Handed, Result, Role, StageTimes
from rtmon.errors import UserError, one_line
from rtmon.metrics import EngineMetrics
from rtmon.models import ModelRef
from rtmon.processes import children_on
from rtmon.runner.engine_process import engine_main
from rtmon.runner.feed import Feed
from rtmon.runner.mailbox import Mailbox
from rtmon.runner.messages import EngineJob, FailedMsg, LoadedMsg, MemoryMsg
from rtmon.runner.ring import FrameRing

log = logging.getLogger(__name__)

RECENT = 64  # latencies the receive window is drawn from
SPIN_SHARE = 0.1  # the receive window's most width, a share of the median recent latency
_CHECK_S = 0.05  # how often the receiver looks at the control pipe, the process and the clock


def receive_window(recent: Iterable[float], spin: float, share: float = SPIN_SHARE) -> tuple[float, float]:
    """When the main process is awake for an answer, in seconds after the frame's hand-over:
    the range the recent answers came in (the fastest less `spin` to the slowest plus `spin`),
    at most `share` of their median wide (or 2 × `spin`, whichever is more), centred on that
    median. A wake-up (0.1-0.3 ms) matters to a 1 ms engine, whose answers nearly all fall
    within ± `spin` of its median; a 12 ms engine whose answers spread over milliseconds (the
    baseline's P95 is 1.5 × its P50) would otherwise have a core spinning beside it for a fifth
    of every frame (`scripts/spin_replay.py` over the H100 reports of 2026-12-07), a load the
    plain script it is measured against never has. `share=math.inf`: the whole range."""
    recent = list(recent)
    low, high = min(recent) - spin, max(recent) + spin
    median = statistics.median(recent)
    width = max(2 * spin, share * median)
    if high - low > width:
        low = max(low, median - width / 2)
        high = low + width
    return low, high


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The micro-batch sizes an engine prepares for a run batching up to `max_batch`: powers of
    two below it, and it. A batch of n runs on the smallest that holds it."""
    return (*(1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch), max_batch)


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner drives its engine (the feed decides which frames)."""

    depth: int | None = None  # frames in flight; None = (lanes + queued_batches) × max batch
    queued_batches: int = 0  # batches waiting beyond those the engine runs, so its lanes never
    # wait for the next batch to arrive (throughput scenarios)
    max_batch: int = 1
    sizes: tuple[int, ...] | None = None  # micro-batch sizes to prepare; None = batch_sizes(max_batch)
    max_delay_ms: float = 0.0
    pipelined: bool = True
    timeout_s: float = 10.0  # a frame in flight this long without a result: hung
    load_timeout_s: float = 900.0
    spin_us: float = 0.0  # the engine process spins this long for the next frame before it sleeps
    receive_spin_us: float = 0.0  # spin around the instant a result is due, at least this long (settings: 300)
    slots: int = 0  # ring slots; 0 = enough for `depth` frames in flight and one being written
    log_dir: Path | None = None
    factory: Callable | None = None  # a module-level `(name, model, settings) -> engine`, instead of the registry
    cpus: tuple[int, ...] | None = None  # the CPUs the engine process runs on (None: wherever the main process may)

    @classmethod
    def of(cls, settings, **overrides) -> RunnerOptions:
        e = settings.engine
        base = {"max_batch": e.max_batch, "max_delay_ms": e.max_delay_ms, "timeout_s": e.timeout_s,
                "load_timeout_s": e.load_timeout_s, "spin_us": e.spin_us, "receive_spin_us": e.receive_spin_us}
        return cls(**{**base, **overrides})

    @property
    def prepared_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.sizes))) if self.sizes else batch_sizes(max(self.max_batch, 1))


@dataclass
class _InFlight:
    frame: Frame
    slot: int | None  # the ring slot to free when its result comes back (None: preloaded)
    skipped: int
    t_handed: float


class EngineRunner:
    """Drives one engine in its own process. Thread-safe for one feed and any readers.

    Results go to `metrics`, to `latest` (and `latest_by_stream`), and to `on_result`, which is
    called on the receiving thread: keep it short.
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
        self.engine_max_batch = 1
        self._cv = threading.Condition()  # in-flight bookkeeping and state changes
        self._send_lock = threading.Lock()  # one producer of request records at a time
        self._enabled = True
        self._resumed = False  # turned back on: frames missed while off are not "skipped"
        self._stopping = False
        self._ring: FrameRing | None = None
        self._mailbox: Mailbox | None = None
        self._free: list[int] = []
        self._in_flight: dict[int, _InFlight] = {}  # in hand-over order (tickets increase)
        self._undelivered = 0  # answers taken off `_in_flight` (room for the next frame) not yet delivered
        self._recent: deque[float] = deque(maxlen=RECENT)  # the last answers' hand-over → boxes (s)
        self._ticket = 0
        self._proc: mp.Process | None = None
        self._conn = None
        self._threads: list[threading.Thread] = []
        self._preloaded = False
        self._frame_shape: tuple[int, ...] | None = None
        self._feed: Feed | None = None
        self._feed_ended = False
        self._ends_run = True
        self._generation = 0  # one per `follow`: an older feeding thread stops
        self.fed = threading.Event()  # set when the feed has ended and all it handed over is answered
        self._room_freed = threading.Event()  # the feed's thread waits on it while the engine has no room

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, slot_bytes: int, preload: list[np.ndarray] | None = None,
              frame_shape: tuple[int, ...] | None = None) -> None:
        """Create the ring (sized for frames of `slot_bytes`, or holding `preload`) and start
        loading the engine in its process; returns at once (see `wait_loaded`). `frame_shape`:
        the frames' (H, W, 3) when known, so the engine prepares for exactly those."""
        self._preloaded = preload is not None
        self._frame_shape = tuple(preload[0].shape) if preload else frame_shape
        if preload is not None:
            slot_bytes = max(im.nbytes for im in preload)
            slots = len(preload)
        else:
            slots = self.options.slots or self._default_slots()
        self._ring = FrameRing(slots, slot_bytes)
        if preload is not None:
            for i, image in enumerate(preload):
                self._ring.write(i, image)
        else:
            self._free = list(range(slots))
        most = self._most_in_flight()
        self._mailbox = Mailbox.create(requests=most + 16, results=most + 1, max_det=self.settings.model.max_det)
        thread = threading.Thread(target=self._supervise, name=f"rtmon-runner-{self.label}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _most_in_flight(self) -> int:
        """An upper bound of `depth` whatever the engine says when it loads."""
        if self.options.depth:
            return self.options.depth
        lanes = 2 if self.options.pipelined else 1
        return (lanes + self.options.queued_batches) * max(self.options.max_batch, 1)

    def _default_slots(self) -> int:
        return self._most_in_flight() + 1  # one more is written while the others are in flight

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """True when the engine is running; False if it failed (see `metrics.error`)."""
        self.loaded.wait(timeout if timeout is not None else self.options.load_timeout_s)
        return self.metrics.state in (EngineState.RUNNING, EngineState.OFF)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the engine process (answering what is in flight first) and free the ring."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._room_freed.set()
        proc = self._proc
        if proc is not None and proc.is_alive() and self._mailbox is not None:
            with self._send_lock, contextlib.suppress(Exception):
                self._mailbox.put_stop()
            proc.join(timeout)
        self._kill()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        for shared in (self._ring, self._mailbox):
            if shared is not None:
                shared.close()
        self._ring = self._mailbox = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(2.0)

    # -- feeding ----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.options.depth or (self.lanes + self.options.queued_batches) * self.max_batch

    @property
    def pid(self) -> int | None:
        """The engine process's pid (None before it starts)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def in_flight(self) -> int:
        with self._cv:
            return len(self._in_flight)

    @property
    def accepting(self) -> bool:
        return self._enabled and not self._stopping and self.metrics.state == EngineState.RUNNING

    def control(self, max_batch: int | None = None, stage_times: bool | None = None) -> None:
        """Change the engine process's micro-batch size or stage timing; call with nothing in flight."""
        if max_batch is not None:
            self.max_batch = max(1, min(max_batch, self.engine_max_batch))
        with self._send_lock, contextlib.suppress(AttributeError, OverflowError):
            self._mailbox.put_control(self.max_batch if max_batch is not None else 0,
                                      -1 if stage_times is None else int(stage_times))

    def set_enabled(self, enabled: bool) -> None:
        with self._cv:
            self._resumed = enabled and not self._enabled
            self._enabled = enabled
            self._cv.notify_all()
        if self.metrics.state in (EngineState.RUNNING, EngineState.OFF):
            self.metrics.set_state(EngineState.RUNNING if enabled else EngineState.OFF)
        if enabled:
            self._pump()
        self._room_freed.set()

    def wait_room(self, timeout: float) -> bool:
        """Block until the engine can take another frame; False after `timeout` (also while it
        is loading or off), or at once when it has failed, ended or is stopping."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if self._stopping or self.metrics.state in (EngineState.FAILED, EngineState.ENDED):
                    return False
                if self.accepting and self._room() > 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)

    def _room(self) -> int:
        room = self.depth - len(self._in_flight)
        return room if self._preloaded else min(room, len(self._free))

    def send(self, frame: Frame, skipped: int = 0, slot: int | None = None) -> bool:
        """Hand `frame` over now: copied into a free slot, or, for a preloaded ring, the
        preloaded `slot`. Call after `wait_room()`; False if the engine cannot take it now."""
        with self._send_lock:
            return self._hand_over(Handed(frame, skipped, slot), time.perf_counter())

    def follow(self, feed: Feed, ends_run: bool = True) -> None:
        """Pull frames from `feed` whenever the engine has room, until the feed ends; then `fed`
        is set once every frame it handed over is answered, and, with `ends_run`, the runner
        becomes ENDED (a benchmark follows one feed after another instead)."""
        with self._send_lock, self._cv:  # `_end_if_drained` sees the old feed or the new one, never a mix
            self._generation += 1
            self._feed, self._feed_ended, self._ends_run = feed, False, ends_run
            self.fed.clear()
        self._room_freed.set()  # a feed's thread still waiting for room sees its feed replaced
        thread = threading.Thread(target=self._follow, args=(self._generation,), name=f"rtmon-feed-{self.label}",
                                  daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _follow(self, generation: int) -> None:
        """The feed's own thread: hands frames over when the engine has room and the feed has
        something new (the receiving thread hands over the next frame itself after each answer).
        With no room it waits for room, not for the feed: a feed with a frame ready (or one that
        was stopped) answers `wait` at once, and polling it in a loop held the GIL while the
        receiving thread spun for the answer (2026-12-04: the last answer of every bench segment
        came 4-9 ms late, after `stop()`)."""
        self.wait_loaded()
        feed = self._feed
        while not self._stopping and not self.done.is_set() and generation == self._generation:
            if self._resumed:
                self._resumed = False
                feed.forget()
            self._pump()
            if self._feed_ended:
                return
            self._room_freed.clear()
            if self._has_room():
                feed.wait(0.2)
            elif not self._feed_ended:
                self._room_freed.wait(0.2)  # set by the receiver when room is left after its hand-over

    def _has_room(self) -> bool:
        with self._cv:
            return self.accepting and self._room() > 0

    def _pump(self, now: float | None = None) -> None:
        """Hand over what the feed has ready, up to the room the engine has. `now`: the instant
        the hand-over began (the receiving thread passes the instant the last result arrived)."""
        with self._send_lock:  # the feed and its end are read as `follow()` sets them: both old or both new
            feed = self._feed
            if feed is None or self._feed_ended:
                return
            t_handed = time.perf_counter() if now is None else now
            while self.accepting:
                with self._cv:
                    room = self._room()
                if room <= 0:
                    return
                taken = feed.take(room, t_handed)
                if taken is None:
                    self._feed_ended = True
                    break
                if not taken:
                    return
                for handed in taken:
                    if not self._hand_over(handed, t_handed):
                        return
        self._end_if_drained()

    def _end_if_drained(self) -> None:
        """Set `fed` once the feed has ended and every answer is delivered (not only taken off
        `_in_flight`: a benchmark reads its results the moment `fed` is set). The check and the
        setting are one step under `_cv`, as `follow()`'s reset is: a thread late from the last feed
        cannot set `fed` for the next one (CI: a segment that ended at once, with no frames)."""
        with self._cv:
            if not self._feed_ended or self._in_flight or self._undelivered or self.fed.is_set():
                return
            if self._ends_run and self.metrics.state == EngineState.RUNNING:
                self.metrics.set_state(EngineState.ENDED)
            self.fed.set()
            self._cv.notify_all()

    def _hand_over(self, handed: Handed, t_handed: float) -> bool:
        """One frame into the ring and a request record to the engine (holding `_send_lock`)."""
        frame = handed.frame
        with self._cv:
            if not self.accepting or self._room() <= 0:
                return False
            if self._preloaded:
                if handed.slot is None:
                    raise ValueError("a preloaded ring needs the frame's slot")
                slot, free = handed.slot, None
            else:
                slot = free = self._free.pop()
            self._ticket += 1
            ticket = self._ticket
            self._in_flight[ticket] = _InFlight(frame, free, handed.skipped, t_handed)
        try:
            shape = tuple(frame.image.shape)
            if free is not None:
                self._ring.write(free, frame.image)
            self._mailbox.put_frame(ticket, slot, shape, frame.index, frame.stream, frame.t_capture, t_handed)
        except (OSError, ValueError, AttributeError, OverflowError) as exc:
            with self._cv:
                entry = self._in_flight.pop(ticket, None)
                if entry is not None and entry.slot is not None:
                    self._free.append(entry.slot)
                self._cv.notify_all()
            if isinstance(exc, ValueError):
                self._fail(str(exc))
            return False
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every frame handed over has been answered and delivered (or the engine failed)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while (self._in_flight or self._undelivered) and self.metrics.state == EngineState.RUNNING:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
            return not self._in_flight and not self._undelivered

    # -- the engine process -----------------------------------------------------------------------
    def _supervise(self) -> None:
        """Start the process (trying the next candidate when one fails to load), then read what
        it sends until it ends."""
        try:
            while True:
                if not self._start_process():
                    return
                if self._receive():
                    return  # ran and ended (or was stopped)
                failed, why = self.name, self.metrics.error
                self.candidates.pop(0)
                if not self.candidates or self._stopping:
                    return
                self.name = self.candidates[0]
                self.notice = f"{failed} did not load ({why}); using {self.name}, next in the measured order"
                log.warning("%s: %s", self.label, self.notice)
                self.metrics = EngineMetrics(self.name, role=self.role, notice=self.notice)
        finally:
            self.loaded.set()
            self.done.set()
            with self._cv:
                self._cv.notify_all()

    def _start_process(self) -> bool:
        from rtmon import engines as registry

        self.metrics.set_state(EngineState.LOADING)
        log_path = ""
        if self.options.log_dir is not None:
            self.options.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = str(self.options.log_dir / f"{self.name}.log")
        o = self.options
        job = EngineJob(
            engine=self.name, model=self.model, settings=self.settings, ring=self._ring.name,
            slots=self._ring.slots, slot_bytes=self._ring.slot_bytes, mailbox=self._mailbox.spec,
            uses_gpu=self.name in registry.SPECS and registry.uses_gpu(self.name),
            batch_sizes=o.prepared_sizes, frame_shape=self._frame_shape, max_delay_ms=o.max_delay_ms,
            pipelined=o.pipelined,
            spin_s=o.spin_us / 1e6, log_path=log_path, factory=o.factory,
        )
        try:
            with children_on(o.cpus):
                self._proc, self._conn = spawn(job)
        except Exception as exc:
            self._fail(one_line(exc, "could not start the engine process"))
            return False
        return True

    def _receive(self) -> bool:
        """Read the engine process's results and messages until it ends. False when it failed to load."""
        conn, proc, mailbox = self._conn, self._proc, self._mailbox
        spin = self.options.receive_spin_us / 1e6
        state = {"loaded": False}
        t_start = time.monotonic()
        next_check = 0.0
        try:
            while True:
                got = mailbox.take_result(_CHECK_S, *self._receive_spin(spin))
                if got is not None:
                    first = self._arrived(got[1])
                    self._pump(first[-1])  # the next frames go before anything else is done, the boxes' copy too
                    arrived = [(got[1], mailbox.boxes_of(got[0], got[1][-1]), *first)]
                    while (more := mailbox.take_result(0.0)) is not None:
                        arrived.append((more[1], mailbox.boxes_of(more[0], more[1][-1]), *self._arrived(more[1])))
                    if len(arrived) > 1:
                        self._pump(arrived[-1][-1])
                    for item in arrived:
                        self._deliver(*item)
                    self._end_if_drained()
                    if self._feed_ended or self._has_room():
                        self._room_freed.set()  # the feed's thread: room is left (or the feed ended)
                now = time.monotonic()
                if got is not None and now < next_check:
                    continue
                next_check = now + _CHECK_S
                while conn.poll(0):
                    if not self._on_message(conn.recv(), state) and not state["loaded"]:
                        proc.join(5)
                        return False
                if not proc.is_alive() and not conn.poll(0):
                    while (last := mailbox.take_result(0.0)) is not None:
                        self._deliver(last[1], mailbox.boxes_of(last[0], last[1][-1]), *self._arrived(last[1]))
                    raise EOFError
                self._check_timeouts(state["loaded"], t_start)
                if self._stopping and not proc.is_alive():
                    return True
        except (EOFError, OSError):
            proc.join(2)
            if not self._stopping and self.metrics.state != EngineState.FAILED:
                self._fail(exit_reason(proc.exitcode))
            if not state["loaded"] and not self._stopping:
                return False
        return True

    def _on_message(self, msg, state: dict) -> bool:
        """Apply one control-pipe message; False for a failure."""
        if isinstance(msg, MemoryMsg):
            self.metrics.set_memory(msg.memory)
        elif isinstance(msg, LoadedMsg):
            state["loaded"] = True
            self.info, self.load_s = msg.info, msg.load_s
            self.lanes, self.max_batch, self.engine_max_batch = msg.lanes, msg.max_batch, msg.engine_max_batch
            self.metrics.set_memory(msg.memory)
            self.metrics.set_state(EngineState.RUNNING if self._enabled else EngineState.OFF)
            self.loaded.set()
            with self._cv:
                self._cv.notify_all()
            self._pump()
        elif isinstance(msg, FailedMsg):
            self._fail(msg.error)
            return False
        return True

    def _check_timeouts(self, loaded: bool, t_start: float) -> None:
        if not loaded:
            if time.monotonic() - t_start > self.options.load_timeout_s:
                self._fail(f"load failed: not loaded within {self.options.load_timeout_s:.0f} s")
                self._kill()
            return
        with self._cv:
            oldest = min((f.t_handed for f in self._in_flight.values()), default=None)
        if oldest is not None and time.perf_counter() - oldest > self.options.timeout_s:
            self._fail(f"hung: no result within {self.options.timeout_s:g} s (engine.timeout_s)")
            self._kill()

    def _receive_spin(self, spin: float) -> tuple[float, float | None]:
        """(spin_s, spin_at) for the next wait: with frames in flight, spin across
        `receive_window` of the recent latencies from the oldest frame's hand-over, asleep
        before it; asleep after it (a late answer is rare, and an engine that stalls must not
        cost the main process a core). No spin when nothing is in flight."""
        if spin <= 0:
            return 0.0, None
        with self._cv:
            oldest = next(iter(self._in_flight.values()), None)
        if oldest is None:
            return 0.0, None
        if not self._recent:
            return spin, None
        low, high = receive_window(self._recent, spin)
        start, end = oldest.t_handed + low, oldest.t_handed + high
        now = time.perf_counter()
        if now > end:
            return 0.0, None
        return end - max(start, now), start

    def _arrived(self, record: tuple) -> tuple[_InFlight | None, float]:
        """A result record just taken: the instant it arrived (its boxes readable here, in the
        result's slot), and its frame, no longer in flight."""
        t_received = time.perf_counter()
        with self._cv:
            entry = self._in_flight.pop(record[0], None)
            if entry is not None:
                self._undelivered += 1
                if entry.slot is not None:
                    self._free.append(entry.slot)
            self._cv.notify_all()
        return entry, t_received

    def _deliver(self, record: tuple, rows: np.ndarray, entry: _InFlight | None, t_received: float) -> None:
        if entry is None:
            return
        try:
            _ticket, t_start, t_done, pre, inf, post, _count = record
            handover = ((t_start - entry.t_handed) + (t_received - t_done)) * 1e3
            self._recent.append(t_received - entry.t_handed)  # when the next answers are due (_receive_spin)
            result = Result(self.name, entry.frame, Detections.from_array(rows),
                            StageTimes(pre, inf, post, handover), t_done, t_start, entry.t_handed, t_received)
            self.metrics.record(result, entry.skipped)
            self.latest = self.latest_by_stream[result.frame.stream] = result
            if self.on_result is not None:
                self.on_result(result, entry.skipped)
        finally:
            with self._cv:
                self._undelivered -= 1
                if not self._undelivered and not self._in_flight:
                    self._cv.notify_all()  # `drain()`

    def _fail(self, error: str) -> None:
        error = " ".join(error.split())[:300]
        if self.metrics.state != EngineState.FAILED:
            log.debug("engine %s failed: %s", self.name, error)
        self.metrics.set_state(EngineState.FAILED, error)
        with self._cv:
            self._cv.notify_all()


def spawn(job: EngineJob) -> tuple[mp.Process, object]:
    """Start `job`'s engine process (spawned: a fresh interpreter, no inherited threads or CUDA
    state); returns it and the main process's end of its control pipe."""
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=engine_main, args=(job, child_conn, os.getpid()), name=f"rtmon-engine-{job.engine}",
                       daemon=True)
    proc.start()
    child_conn.close()
    return proc, parent_conn


def exit_reason(code: int | None) -> str:
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
