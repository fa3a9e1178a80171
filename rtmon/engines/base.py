"""The contract every engine keeps: a Frame goes in, one Result comes out.

The types themselves (`Frame`, `Detections`, `StageTimes`, `Result`, `EngineInfo`) live in
`rtmon.core`. Engines are adapters at the edge: whatever their runtime returns becomes these
types before it leaves the engine. Engines never run in the main process: `rtmon.runner`
drives each one in its own process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtmon.core import EngineInfo, Frame, Result, StageTimes


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


@dataclass(frozen=True)
class Network:
    """An engine's network alone, the part `rtmon serve` puts behind Triton Inference Server.

    `run` takes a batch of letterboxed images (n, 3, S, S), RGB in [0, 1], in `input_dtype`,
    with 1 ≤ n ≤ `max_batch`, and returns the raw head output (n, 4+nc, anchors) on the host:
    the interface of the model's ONNX export, so a client cannot tell the two servers apart.
    Engines that can be served implement `network(max_batch) -> Network`, called after `load()`
    and then from one thread at a time.
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
