"""rtmon's shared vocabulary: what a frame, a detection, a result, an engine's state and its GPU
memory are. Sources, engines, the runner, metrics, rendering, MQTT and the TUI all import these
types from here, and this module imports nothing of rtmon, so reading a frame never loads an
engine.

Times are `time.perf_counter()` seconds. On Linux that is CLOCK_MONOTONIC, one clock for every
process of the machine, so an instant taken in an engine's process (`Result.t_done`) and one
taken in the main process (`Frame.t_capture`) can be subtracted.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class EngineState(str, enum.Enum):
    """Every state an engine runner can be in; the TUI styles each one."""

    STARTING = "starting"  # the runner exists, its process is starting
    LOADING = "loading"  # building/loading the model and warming up
    RUNNING = "running"  # taking frames
    OFF = "off"  # turned off by the user: no frames, no GPU work
    FAILED = "failed"  # raised, crashed, hung or could not load; `error` says why
    ENDED = "ended"  # the source ended and every frame was answered

    def __str__(self) -> str:
        return self.value


class BenchPhase(str, enum.Enum):
    """Where `rtmon bench` is with one engine (what its MQTT topics say while it runs)."""

    WAITING = "waiting"  # another engine is being measured
    LOADING = "loading"  # its process is loading it
    MEASURING = "measuring"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


class SourceState(str, enum.Enum):
    """Every state a source (camera, file, stream) can be in; the TUI styles each one."""

    STARTING = "starting"  # opening, before the first frame
    RUNNING = "running"  # delivering frames
    PAUSED = "paused"  # paused by the user
    RECONNECTING = "reconnecting"  # a camera or stream was lost and is being reopened (with back-off)
    ENDED = "ended"  # a file reached its end (and does not loop)
    FAILED = "failed"  # could not be read; `error` says why

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in (SourceState.ENDED, SourceState.FAILED)


class Role(str, enum.Enum):
    """What an engine stands for in the comparison."""

    BASELINE = "baseline"  # ultralytics predict, PyTorch FP32: the yardstick
    PEER = "peer"  # what a user would do anyway to go faster (ultralytics' own ONNX Runtime path)
    OPTIMIZED = "optimized"  # rtmon's optimized engines
    PROBE = "probe"  # measures rtmon itself, not a detector (the `null` engine): in no headline

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a source.

    `image` is BGR uint8, HxWx3, as OpenCV decodes it. `t_capture` is the instant the frame
    became available (decoded, or its scheduled arrival in a benchmark); latency is always
    measured from it. `stream` numbers the source when there are several.
    """

    index: int
    image: Any  # np.ndarray on the host, or a CUDA tensor for frames decoded on the GPU
    t_capture: float
    stream: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class Handed:
    """A frame on its way to an engine runner: how many frames of its stream the runner skipped
    before it (it took a newer one), and, for a ring preloaded with every frame (benchmarks),
    the slot that already holds its pixels."""

    frame: Frame
    skipped: int = 0
    slot: int | None = None


@dataclass
class Detections:
    """Boxes in source-image pixels: xyxy (n,4) float32, confidence (n,), class_id (n,) int."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    # The same boxes as (n, 6) float32 rows x1 y1 x2 y2 confidence class, when they were made from
    # such rows (NMS output, ultralytics' `boxes.data`): `rows()` hands them on without packing.
    _rows: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

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

    def rows(self) -> np.ndarray:
        """(n, 6) float32 rows x1 y1 x2 y2 confidence class: the NMS output layout, the one the
        runner's mailbox carries. No copy when the detections were made from such rows."""
        if self._rows is None:
            rows = np.empty((len(self), 6), np.float32)
            rows[:, :4], rows[:, 4], rows[:, 5] = self.xyxy, self.confidence, self.class_id
            self._rows = rows
        return self._rows

    @classmethod
    def _of_rows(cls, rows: np.ndarray, class_id: np.ndarray) -> Detections:
        """Views of (n, 6) float32 `rows` and the int32 `class_id` made from them, as they are:
        the checks of `__post_init__` (six NumPy calls, tens of microseconds on a frame's cold
        path) hold by construction."""
        det = cls.__new__(cls)
        det.xyxy, det.confidence, det.class_id, det._rows = rows[:, :4], rows[:, 4], class_id, rows
        return det

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_array(cls, rows: np.ndarray) -> Detections:
        """From an (n, 6) array of x1, y1, x2, y2, confidence, class id (NMS output layout),
        copied: the rows often live in a buffer the next frame overwrites (pinned host memory,
        shared memory)."""
        rows = np.array(rows, dtype=np.float32, copy=True).reshape(-1, 6)
        return cls._of_rows(rows, rows[:, 5].round().astype(np.int32))

    @classmethod
    def from_ultralytics(cls, boxes: Any) -> Detections:
        """From an ultralytics `Results.boxes` (on whatever device it lives), with one copy to the
        host: its rows are x1 y1 x2 y2 [track id] score class."""
        data = boxes.data.cpu().numpy()
        if data.shape[1] == 6 and data.dtype == np.float32:
            return cls._of_rows(data, data[:, 5].astype(np.int32))
        return cls(data[:, :4], data[:, -2], data[:, -1])

    def above(self, conf: float) -> Detections:
        """The detections scoring more than `conf`."""
        keep = self.confidence > conf
        return Detections(self.xyxy[keep], self.confidence[keep], self.class_id[keep])

    def class_counts(self) -> dict[int, int]:
        ids, counts = np.unique(self.class_id, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent per stage for one frame.

    The engine measures the first three (CUDA events on GPU engines, the host clock elsewhere);
    the runner adds `handover`: the time the frame spent crossing to the engine's process and its
    boxes crossing back (see `Result.handover_ms`).
    """

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    handover: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess + self.handover

    def as_dict(self) -> dict[str, float]:
        return {"handover": self.handover, "preprocess": self.preprocess, "inference": self.inference,
                "postprocess": self.postprocess}


@dataclass(frozen=True)
class Result:
    """What an engine returns for one frame, and when each step of its journey happened.

    Four instants, all `time.perf_counter()`:

    - `t_handed`: the main process handed the frame over (before copying it into the ring);
    - `t_start`: the engine's process took it (for a micro-batch: took the batch);
    - `t_done`: the engine had the boxes on its host;
    - `t_received`: the main process held the boxes.

    An engine fills in `t_start`/`t_done`; the runner adds `t_handed`/`t_received`. Latency
    runs from the frame's capture (in a benchmark: its hand-over) to `t_received`, where a user
    gets the boxes; the hand-over both ways is a stage of its own.
    """

    engine: str
    frame: Frame
    detections: Detections
    stages: StageTimes
    t_done: float = field(default_factory=time.perf_counter)
    t_start: float | None = None
    t_handed: float | None = None
    t_received: float | None = None

    @property
    def t_boxes(self) -> float:
        """When the boxes were where the user reads them: in the main process (or, for a result
        that has not crossed a process boundary, in the engine's)."""
        return self.t_received if self.t_received is not None else self.t_done

    @property
    def latency_ms(self) -> float:
        """End to end: the frame's capture instant to its boxes in the main process."""
        return (self.t_boxes - self.frame.t_capture) * 1e3

    @property
    def handover_ms(self) -> float:
        """The frame's way into the engine's process plus its boxes' way back."""
        if self.t_handed is None or self.t_received is None:
            return 0.0
        t_start = self.t_done if self.t_start is None else self.t_start
        return ((t_start - self.t_handed) + (self.t_received - self.t_done)) * 1e3


@dataclass(frozen=True)
class EngineInfo:
    """Static facts an engine states about itself, for panels and reports."""

    name: str
    backend: str
    precision: str
    device: str  # where it really runs: "cpu", or the GPU's name
    input_size: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuMemory:
    """One engine's GPU memory, measured in its own process; None where a counter can't tell.

    - `process_mib`: NVML's figure for the engine's process (what `nvidia-smi` shows);
    - `context_mib`: NVML's figure for the same process right after CUDA started, before the
      engine loaded: the CUDA context and the runtime's own modules;
    - `engine_mib`: the difference, what the engine itself holds (weights, graphs, buffers);
    - `allocator_peak_mib` / `allocator_reserved_mib`: PyTorch's caching allocator, peak bytes
      allocated and bytes reserved from the driver now (a part of `engine_mib`).
    """

    process_mib: float | None = None
    context_mib: float | None = None
    allocator_peak_mib: float | None = None
    allocator_reserved_mib: float | None = None

    @property
    def engine_mib(self) -> float | None:
        if self.process_mib is None or self.context_mib is None:
            return None
        return self.process_mib - self.context_mib

    def as_dict(self) -> dict[str, float | None]:
        """The report/MQTT shape: every counter, named."""
        return {
            "process_mib": self.process_mib,
            "context_mib": self.context_mib,
            "engine_mib": self.engine_mib,
            "allocator_peak_mib": self.allocator_peak_mib,
            "allocator_reserved_mib": self.allocator_reserved_mib,
        }
