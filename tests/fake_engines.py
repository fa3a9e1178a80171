"""Engines for tests of the runner: built in the engine process from their name.

    fast | slow | echo | sleep-after-MS | fail-load | mp-lock | raise-after-N | exit-after-N | segv-after-N | hang-after-N

`sleep-after-MS` sleeps MS milliseconds per frame (a known engine time).

`echo` reports what it saw: one box whose confidence is the frame's mean pixel / 255, whose class
is the frame's stream, and whose x1 says whether the image was a view of shared memory (1) or a
copy (0), so a test can check which frame arrived, intact, and how.

`mp-lock` creates a multiprocessing lock when it loads and keeps it, as libraries in an engine
process do (tqdm's write lock, a compile pool's queues): a named semaphore the resource tracker
the main process shares with its engine processes knows about.
"""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np

from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.engines.base import SyncEngine


class FakeEngine(SyncEngine):
    def __init__(self, name: str) -> None:
        self.info = EngineInfo(name, "fake", "fp32", "cpu", 640)
        self.class_names = {0: "thing"}
        kind, _, n = name.partition("-after-")
        self.kind, self.after = kind, int(n) if n else None
        self.delay = {"slow": 0.2, "fast": 0.002, "sleep": float(n or 0) / 1e3}.get(kind, 0.005)
        if kind == "sleep":
            self.after = None
        self.calls = 0

    def prepare(self, pipelined: bool, batch_sizes, frame_shape=None) -> None:
        """Say what the run asked for, in the engine's notes (the runner reports them)."""
        notes = (f"pipelined={pipelined}", f"plans={','.join(map(str, batch_sizes))}", f"frame_shape={frame_shape}")
        self.info = EngineInfo(self.info.name, "fake", "fp32", "cpu", 640, notes)

    def load(self) -> None:
        if self.kind == "fail-load":
            raise RuntimeError("weights are gone")
        if self.kind == "mp-lock":
            import multiprocessing

            self.lock = multiprocessing.get_context("spawn").Lock()

    def infer(self, frame: Frame) -> Result:
        self.calls += 1
        if self.after is not None and self.calls > self.after:
            if self.kind == "raise":
                raise RuntimeError("CUDA error: an illegal memory access")
            if self.kind == "exit":
                os._exit(3)
            if self.kind == "segv":
                ctypes.string_at(0)  # reads address 0: SIGSEGV
            if self.kind == "hang":
                time.sleep(3600)
        time.sleep(self.delay)
        image = frame.image
        shared = 0.0 if image.flags.owndata else 1.0
        det = Detections(np.array([[shared, 10, 60, 60]]), np.array([float(image.mean()) / 255]), np.array([frame.stream]))
        return Result(self.info.name, frame, det, StageTimes(0.1, self.delay * 1e3, 0.1), time.perf_counter())

    def close(self) -> None:
        pass


def make(name: str, model, settings) -> FakeEngine:
    return FakeEngine(name)
