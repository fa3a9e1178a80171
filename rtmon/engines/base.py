"""The contract every engine keeps: a Frame goes in, one Result comes out.

`Detections` is the single detections type of rtmon (boxes in source-pixel xyxy, confidence,
class id), `StageTimes` the per-stage timing breakdown, and `Result` ties both to the frame
they came from. Engines are adapters at the edge: whatever their runtime returns becomes
these types before it leaves the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a source.

    `image` is BGR uint8, HxWx3, as OpenCV decodes it. `t_capture` is the monotonic
    `time.perf_counter()` instant the frame became available (decoded, or handed to the
    engine in a benchmark); latency is always measured from it.
    """

    index: int
    image: np.ndarray
    t_capture: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


@dataclass
class Detections:
    """Boxes in source-image pixels: xyxy (n,4) float32, confidence (n,), class_id (n,) int."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        n = len(self.xyxy)
        if len(self.confidence) != n or len(self.class_id) != n:
            raise ValueError(
                f"detections disagree in length: xyxy {n}, confidence {len(self.confidence)}, "
                f"class_id {len(self.class_id)}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_array(cls, rows: np.ndarray) -> Detections:
        """From an (n, 6) array of x1, y1, x2, y2, confidence, class id (NMS output layout)."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5].round().astype(np.int32))

    def class_counts(self) -> dict[int, int]:
        ids, counts = np.unique(self.class_id, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent per stage for one frame (host wall clock, GPU synchronized)."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


@dataclass(frozen=True)
class Result:
    """What an engine returns for one frame."""

    engine: str
    frame: Frame
    detections: Detections
    stages: StageTimes
    t_done: float = field(default_factory=time.perf_counter)

    @property
    def latency_ms(self) -> float:
        """End to end: the frame's capture instant to boxes on the host."""
        return (self.t_done - self.frame.t_capture) * 1e3


@dataclass(frozen=True)
class EngineInfo:
    """Static facts an engine states about itself, for panels and reports."""

    name: str
    backend: str
    precision: str
    device: str
    input_size: int
    notes: tuple[str, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """Load and warm up, infer one frame at a time, close.

    `infer` must be called from one thread at a time; it returns when the boxes are on the
    host. Engines that can overlap work may also implement `infer_batch`.
    """

    info: EngineInfo
    class_names: dict[int, str]

    def load(self) -> None: ...

    def infer(self, frame: Frame) -> Result: ...

    def close(self) -> None: ...


class Stopwatch:
    """Accumulates named stage durations with the host clock: `with sw("inference"): ...`."""

    def __init__(self, sync: Any = None) -> None:
        # `sync` is called before each reading (e.g. torch.cuda.synchronize) so a stage's time
        # covers the device work it launched, not just the launch.
        self._sync = sync
        self.ms: dict[str, float] = {}
        self._name = ""
        self._t0 = 0.0

    def __call__(self, name: str) -> Stopwatch:
        self._name = name
        return self

    def __enter__(self) -> Stopwatch:
        if self._sync:
            self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sync:
            self._sync()
        self.ms[self._name] = self.ms.get(self._name, 0.0) + (time.perf_counter() - self._t0) * 1e3

    def stages(self) -> StageTimes:
        return StageTimes(
            preprocess=self.ms.get("preprocess", 0.0),
            inference=self.ms.get("inference", 0.0),
            postprocess=self.ms.get("postprocess", 0.0),
        )


def warmup_frames(size: tuple[int, int] = (1280, 720), count: int = 3) -> list[Frame]:
    """Deterministic noise frames for warm-up, so warm-up never depends on the source."""
    rng = np.random.default_rng(0)
    w, h = size
    return [
        Frame(index=-1 - i, image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), t_capture=0.0)
        for i in range(count)
    ]
