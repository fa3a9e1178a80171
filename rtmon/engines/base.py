"""The contract every engine keeps: frames go in, one Result per frame comes out.

The types themselves (`Frame`, `Detections`, `StageTimes`, `Result`, `EngineInfo`) live in
`rtmon.core`. Engines are adapters at the edge: whatever their runtime returns becomes these
types before it leaves the engine. Engines never run in the main process: `rtmon.runner`
builds and drives each one in its own process, and uses only what `Engine` declares.

`SyncEngine` is the base of engines that answer one frame at a time (`infer`); it fills in
every capability the runner uses with the plain choice (one lane, batch 1, no host-memory
registration, stage timing always on). GPU engines that overlap work (`GpuEngine`) implement
the same protocol themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtmon.core import EngineInfo, Frame, Result, StageTimes
from rtmon.errors import UserError


@runtime_checkable
class Engine(Protocol):
    """What the engine process calls, in this order: `prepare`, `load`, then `submit`/`collect`
    (and the setters) from one thread, then `close`.

    - `prepare(pipelined, batch_sizes, frame_shape)`: before `load`, how the run will use the
      engine: whether it may keep more than one frame in flight, the micro-batch sizes it will
      be given and the frames' (H, W, 3) shape when known (an engine with fixed-shape plans
      builds exactly these).
    - `lanes`: frames (or micro-batches) it usefully keeps in flight after `load` (1: one at a time).
    - `max_batch`: the largest micro-batch `submit` accepts after `load`.
    - `submit(frames)` queues one micro-batch and returns a ticket; `collect(ticket)` waits for
      its results, one per frame, in order. The runner collects tickets in submission order and
      keeps at most `lanes` open.
    - `set_stage_timing(on)`: time each stage (e.g. CUDA events), or only what is free.
    - `register_host_memory(address, size)`: the runner's frame ring, for engines that can
      upload from it directly (page-locked); False when the engine does not.
    - `network(max_batch)`: the network alone, for `rtmon serve`; a UserError when the engine
      cannot be served that way.
    """

    info: EngineInfo
    class_names: dict[int, str]
    lanes: int
    max_batch: int

    def prepare(self, pipelined: bool, batch_sizes: Sequence[int], frame_shape: tuple[int, ...] | None = None) -> None: ...

    def load(self) -> None: ...

    def submit(self, frames: list[Frame]) -> Any: ...

    def collect(self, ticket: Any) -> list[Result]: ...

    def set_stage_timing(self, on: bool) -> None: ...

    def register_host_memory(self, address: int, size: int) -> bool: ...

    def network(self, max_batch: int) -> Network: ...

    def close(self) -> None: ...


class SyncEngine:
    """Base of engines that answer one frame at a time: subclasses implement `load`, `infer`
    and `close`, and set `info` and `class_names`."""

    info: EngineInfo
    class_names: dict[int, str]
    lanes = 1
    max_batch = 1

    def prepare(self, pipelined: bool, batch_sizes: Sequence[int], frame_shape: tuple[int, ...] | None = None) -> None:
        """One frame at a time whatever the run wants: nothing to prepare."""

    def load(self) -> None:
        raise NotImplementedError

    def infer(self, frame: Frame) -> Result:
        raise NotImplementedError

    def submit(self, frames: list[Frame]) -> list[Frame]:
        return frames

    def collect(self, ticket: list[Frame]) -> list[Result]:
        return [self.infer(frame) for frame in ticket]

    def set_stage_timing(self, on: bool) -> None:
        """Host-clock stage times cost nothing worth switching off."""

    def register_host_memory(self, address: int, size: int) -> bool:
        return False

    def network(self, max_batch: int) -> Network:
        raise UserError(f"engine: {self.info.name} cannot be served: it has no network to put behind Triton")

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class Network:
    """An engine's network alone, the part `rtmon serve` puts behind Triton Inference Server.

    `run` takes a batch of letterboxed images (n, 3, S, S), RGB in [0, 1], in `input_dtype`,
    with 1 ≤ n ≤ `max_batch`, and returns the raw head output (n, 4+nc, anchors) on the host:
    the interface of the model's ONNX export, so a client cannot tell the two servers apart.
    """

    run: Callable[[np.ndarray], np.ndarray]
    input_dtype: np.dtype
    max_batch: int


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
