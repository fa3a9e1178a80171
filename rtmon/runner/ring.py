"""Frames in shared memory: a ring of slots the main process writes and an engine process reads.

The main process creates the ring; the engine process attaches by name and sees each slot as a
NumPy array over the shared bytes (no copy). A slot holds one BGR image of any shape that fits
(or, for an engine's network alone, one batch of input tensors, then its output).
"""

from __future__ import annotations

import contextlib
import math
import mmap
from multiprocessing import shared_memory

import numpy as np


class FrameRing:
    """`slots` frame buffers of `slot_bytes` each in one shared-memory block."""

    MAX_VIEWS = 4096  # views kept (a preloaded ring of a benchmark's pool: one per frame)

    def __init__(self, slots: int, slot_bytes: int, name: str | None = None) -> None:
        self.slots, self.slot_bytes = slots, slot_bytes
        self.owner = name is None
        size = max(slots * slot_bytes, 1)
        self.shm = shared_memory.SharedMemory(create=True, size=size) if self.owner else attach(name)
        self.name = self.shm.name
        self._buf = np.ndarray((self.shm.size,), np.uint8, self.shm.buf)
        self._views: dict[tuple, np.ndarray] = {}

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype = np.uint8) -> np.ndarray:
        """Slot `slot` as an array of `shape` and `dtype` (no copy). The views asked for are kept:
        an engine asks for the same few on every frame, when its caches are cold after a
        frame's work, and building one from scratch there costs tens of microseconds (NumPy's
        `prod` alone 28 µs, measured with scripts/handover_probe.py's CPU-busy engine)."""
        key = (slot, shape, dtype)
        view = self._views.get(key)
        if view is None:
            dt = np.dtype(dtype)
            if math.prod(shape) * dt.itemsize > self.slot_bytes:
                raise ValueError(f"a {tuple(shape)} {dt} array does not fit a {self.slot_bytes}-byte slot")
            if len(self._views) >= self.MAX_VIEWS:
                self._views.clear()
            view = self._views[key] = np.ndarray(shape, dt, self._buf, slot * self.slot_bytes)
        return view

    def touch(self) -> None:
        """Map every page of the block into this process now (one read per page). An engine
        process does this before it serves: otherwise the first frame through each slot pays the
        kernel for mapping its pages inside `predict` (a 1280×720 frame: 42 minor faults, as
        the kernel maps 16 pages a fault), which the plain script, its frames already in its own
        memory, never pays (the bench's faults per frame: 5-9 against 0, H100, 2026-12-07)."""
        pages = self._buf[:: mmap.PAGESIZE]
        if pages.size:
            int(pages.max())

    def write(self, slot: int, image: np.ndarray) -> tuple[int, ...]:
        if image.nbytes > self.slot_bytes:
            raise ValueError(f"a {image.shape} frame does not fit a {self.slot_bytes}-byte slot")
        np.copyto(self.view(slot, image.shape, image.dtype), image)
        return tuple(image.shape)

    @property
    def address(self) -> int:
        """Where the block starts in this process (to page-lock it for the GPU)."""
        return self._buf.ctypes.data

    def close(self) -> None:
        self._views.clear()
        self._buf = None  # release the exported buffers before closing the mapping
        with contextlib.suppress(BufferError, OSError):
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def attach(name: str) -> shared_memory.SharedMemory:
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
