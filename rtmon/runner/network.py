"""An engine's network alone in its own process: what `rtmon serve` puts behind Triton and the
load test times on its own.

`NetworkRunner` starts the engine's process in network mode (`EngineJob.network_batch`): the
engine loads, then serves `Engine.network(max_batch)`. A batch of letterboxed images (n, 3, S,
S) goes into a slot of a shared-memory ring with a request record; the engine process runs it
and writes the raw head output (n, 4 + classes, anchors) over it in the same slot, then answers
with a result record. Nothing is pickled; one batch is in flight at a time (callers from
several threads take turns), as the network's static buffers require.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from rtmon.errors import UserError
from rtmon.models import ModelRef
from rtmon.runner.mailbox import Mailbox
from rtmon.runner.messages import EngineJob, FailedMsg, LoadedMsg, NetworkMsg
from rtmon.runner.ring import FrameRing
from rtmon.runner.supervisor import RunnerOptions, exit_reason, spawn


def _anchors(imgsz: int) -> int:
    """YOLO's anchor points at strides 8, 16 and 32: 8400 for 640."""
    return sum((imgsz // stride) ** 2 for stride in (8, 16, 32))


class NetworkRunner:
    """`run(x)` sends a batch to the engine's network in its process and returns its output."""

    def __init__(self, name: str, model: ModelRef, settings, max_batch: int, options: RunnerOptions) -> None:
        from rtmon import engines as registry

        self.name, self.model, self.settings, self.options = name, model, settings, options
        self.max_batch = max_batch
        self.info = None
        self.input_dtype: np.dtype = np.dtype(np.float32)
        self.output_shape: tuple[int, ...] = ()
        self.output_dtype: np.dtype = np.dtype(np.float32)
        size = settings.model.imgsz
        # A slot holds the batch's input (at most float32) and then its output, written over it.
        item = max(3 * size * size, (4 + max(len(model.class_names), 1)) * _anchors(size)) * 4
        self._ring = FrameRing(1, max_batch * item)
        self._mailbox = Mailbox.create(requests=8, results=2, max_det=1)
        job = EngineJob(engine=name, model=model, settings=settings, ring=self._ring.name, slots=1,
                        slot_bytes=self._ring.slot_bytes, mailbox=self._mailbox.spec,
                        uses_gpu=name in registry.SPECS and registry.uses_gpu(name), pipelined=False,
                        spin_s=options.spin_us / 1e6, network_batch=max_batch, factory=options.factory)
        self._proc, self._conn = spawn(job)
        self._lock = threading.Lock()
        self._ticket = 0

    def wait_loaded(self) -> None:
        """Until the network is ready; a UserError naming why when the engine failed."""
        deadline = time.monotonic() + self.options.load_timeout_s
        network = None
        while True:
            if not self._conn.poll(0.2):
                if not self._proc.is_alive():
                    raise UserError(f"engine: {self.name}: {exit_reason(self._proc.exitcode)}")
                if time.monotonic() > deadline:
                    raise UserError(f"engine: {self.name}: not loaded within {self.options.load_timeout_s:.0f} s")
                continue
            msg = self._conn.recv()
            if isinstance(msg, FailedMsg):
                raise UserError(f"engine: {self.name}: {msg.error}")
            if isinstance(msg, NetworkMsg):
                network = msg
            if isinstance(msg, LoadedMsg):
                if network is None:
                    raise UserError(f"engine: {self.name} cannot be served: it has no network of its own")
                self.info = msg.info
                self.input_dtype, self.output_dtype = np.dtype(network.input_dtype), np.dtype(network.output_dtype)
                self.output_shape, self.max_batch = network.output_shape, network.max_batch
                return

    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw head output of the batch `x` (n, 3, S, S), 1 ≤ n ≤ `max_batch`, in `input_dtype`."""
        n = len(x)
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"a batch of {n} images; the network takes 1 to {self.max_batch}")
        with self._lock:
            self._ticket += 1
            np.copyto(self._ring.view(0, x.shape, self.input_dtype), x, casting="same_kind")
            self._mailbox.put_tensors(self._ticket, 0, n, time.perf_counter())
            got = self._mailbox.take_result(self.options.timeout_s)
            if got is None:
                why = self._failure() if not self._proc.is_alive() else f"no answer within {self.options.timeout_s:g} s"
                raise UserError(f"engine: {self.name}: {why}")
            self._mailbox.boxes_of(got[0], 0)  # the answer carries no boxes: this frees its slot
            return self._ring.view(0, (n, *self.output_shape), self.output_dtype).copy()

    def _failure(self) -> str:
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll(0):
                msg = self._conn.recv()
                if isinstance(msg, FailedMsg):
                    return msg.error
        return exit_reason(self._proc.exitcode)

    def stop(self, timeout: float = 10.0) -> None:
        """End the engine's process and free the shared memory."""
        if self._proc.is_alive():
            with self._lock, contextlib.suppress(Exception):
                self._mailbox.put_stop()
            self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2)
        self._ring.close()
        self._mailbox.close()
