"""What crosses the process boundary besides the hot path (`rtmon.runner.mailbox`): the job an
engine process starts with, and the few typed messages it sends back over its control pipe
(pickled; a handful per run, plus one memory reading a second)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rtmon.core import EngineInfo, GpuMemory
from rtmon.models import ModelRef
from rtmon.runner.mailbox import MailboxSpec


@dataclass(frozen=True)
class EngineJob:
    """Everything an engine process needs to start."""

    engine: str
    model: ModelRef
    settings: object  # rtmon.config.Settings
    ring: str
    slots: int
    slot_bytes: int
    mailbox: MailboxSpec
    uses_gpu: bool
    batch_sizes: tuple[int, ...] = (1,)  # the micro-batch sizes this run will use
    frame_shape: tuple[int, ...] | None = None  # (H, W, 3) of the frames, when known before the first
    max_delay_ms: float = 0.0
    pipelined: bool = True  # may the engine keep more than one frame in flight
    spin_s: float = 0.0  # how long the engine process spins for the next frame before it sleeps
    network_batch: int = 0  # > 0: serve the engine's network alone (`Engine.network`) up to this batch
    log_path: str = ""
    factory: Callable | None = None  # builds the engine instead of the registry (tests, plugins)


@dataclass(frozen=True)
class LoadedMsg:
    info: EngineInfo
    memory: GpuMemory
    load_s: float
    lanes: int  # frames the engine can usefully keep in flight
    max_batch: int  # the micro-batch it starts with
    engine_max_batch: int  # the largest micro-batch it accepts


@dataclass(frozen=True)
class NetworkMsg:
    """The network alone is ready: what it takes and gives (for batches of up to `max_batch`)."""

    input_dtype: str
    output_shape: tuple[int, ...]  # per image: (4 + classes, anchors)
    output_dtype: str
    max_batch: int


@dataclass(frozen=True)
class MemoryMsg:
    memory: GpuMemory


@dataclass(frozen=True)
class FailedMsg:
    error: str  # one line
