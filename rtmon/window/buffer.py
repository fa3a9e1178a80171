"""The picture in shared memory, from the monitor process to the window process."""

from __future__ import annotations

import contextlib
from multiprocessing.shared_memory import SharedMemory

import numpy as np


class FrameBuffer:
    """Two BGR picture slots in shared memory: one process writes, another reads the latest.

    The header holds the number of pictures written, the slot of the latest one, and per slot a
    sequence number, width and height. A slot's sequence number is odd while it is being written
    (a seqlock), so the reader never shows a torn picture and neither side ever waits on a lock
    the other could die holding. The writer fills the slot the reader is not being pointed at.
    """

    _HEADER = 8  # int64s: pictures written, latest slot, (sequence, width, height) x 2

    def __init__(self, shm: SharedMemory) -> None:
        self._shm = shm
        self._header = np.ndarray((self._HEADER,), np.int64, shm.buf)
        self.capacity = (shm.size - self._HEADER * 8) // 2

    @classmethod
    def create(cls, capacity: int) -> FrameBuffer:
        buffer = cls(SharedMemory(create=True, size=cls._HEADER * 8 + 2 * capacity))
        buffer._header[:] = 0
        return buffer

    @classmethod
    def attach(cls, name: str) -> FrameBuffer:
        return cls(SharedMemory(name=name))

    @property
    def name(self) -> str:
        return self._shm.name

    def _slot(self, slot: int, nbytes: int) -> np.ndarray:
        start = self._HEADER * 8 + slot * self.capacity
        return np.ndarray((nbytes,), np.uint8, self._shm.buf, start)

    def write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(f"expected a BGR uint8 picture, got {image.dtype} {image.shape}")
        if image.nbytes > self.capacity:
            raise ValueError(f"a {width}x{height} picture does not fit in {self.capacity} bytes")
        header = self._header
        slot = 1 - int(header[1]) if header[0] else 0
        seq = 2 + 3 * slot
        header[seq] += 1  # odd: being written
        header[seq + 1], header[seq + 2] = width, height
        self._slot(slot, image.nbytes)[:] = image.reshape(-1)
        header[seq] += 1  # even: complete
        header[1] = slot
        header[0] += 1

    def read(self, after: int = 0) -> tuple[int, np.ndarray] | None:
        """(picture number, a copy of the latest picture) if one newer than `after` is complete."""
        header = self._header
        number = int(header[0])
        if number <= after:
            return None
        seq = 2 + 3 * int(header[1])
        before = int(header[seq])
        width, height = int(header[seq + 1]), int(header[seq + 2])
        if before % 2 or width * height * 3 > self.capacity:
            return None
        image = self._slot((seq - 2) // 3, width * height * 3).copy().reshape(height, width, 3)
        if int(header[seq]) != before:  # rewritten while copying: take the next one
            return None
        return number, image

    def close(self) -> None:
        self._header = None  # release the view before the mapping goes away
        self._shm.close()

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()
