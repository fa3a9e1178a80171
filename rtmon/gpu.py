"""GPU telemetry through NVML (nvidia-ml-py): the only module that talks to NVML.

Everything here answers `None` when there is no NVIDIA GPU or driver, so callers show "n/a",
never a made-up 0. NVML is initialised once per process, lazily.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass

MIB = 1024 * 1024

_lock = threading.Lock()
_state: dict[str, object] = {}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    driver: str
    memory_total_mib: float
    compute_capability: str


@dataclass(frozen=True)
class GpuSample:
    """One reading of the device. Fields NVML cannot give on this GPU are None."""

    name: str
    utilization_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    temperature_c: float | None
    power_w: float | None
    process_mem_mib: float | None
    allocator_peak_mib: float | None = None  # PyTorch's caching allocator, this process

    def to_dict(self) -> dict:
        return asdict(self)


def _nvml():
    """The initialised pynvml module, or None if there is no usable NVIDIA driver."""
    with _lock:
        if "nvml" not in _state:
            try:
                import pynvml

                pynvml.nvmlInit()
                if pynvml.nvmlDeviceGetCount() < 1:
                    raise RuntimeError("no GPU")
                _state["nvml"] = pynvml
            except Exception as exc:  # no library, no driver, no device: all mean "no GPU"
                _state["nvml"] = None
                _state["why"] = str(exc) or type(exc).__name__
        return _state["nvml"]


def unavailable_reason() -> str | None:
    """None when a GPU is usable; otherwise a short reason."""
    return None if _nvml() else f"no NVIDIA GPU visible to NVML ({_state.get('why', 'unknown')})"


def _handle(index: int):
    nvml = _nvml()
    return nvml.nvmlDeviceGetHandleByIndex(index) if nvml else None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def info(index: int = 0) -> GpuInfo | None:
    nvml = _nvml()
    if not nvml:
        return None
    h = _handle(index)
    cc = _try(nvml.nvmlDeviceGetCudaComputeCapability, h)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(h)),
        driver=_text(nvml.nvmlSystemGetDriverVersion()),
        memory_total_mib=nvml.nvmlDeviceGetMemoryInfo(h).total / MIB,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else "unknown",
    )


def cuda_driver_version() -> str | None:
    """The newest CUDA version the installed driver supports ("12.8"), or None."""
    nvml = _nvml()
    if not nvml:
        return None
    version = _try(nvml.nvmlSystemGetCudaDriverVersion_v2) or _try(nvml.nvmlSystemGetCudaDriverVersion)
    return f"{version // 1000}.{version % 1000 // 10}" if version else None


def process_memory_mib(pid: int | None = None, index: int = 0) -> float | None:
    """GPU memory NVML attributes to process `pid` (default: this one), or None."""
    nvml = _nvml()
    if not nvml:
        return None
    pid = os.getpid() if pid is None else pid
    h = _handle(index)
    procs = (_try(nvml.nvmlDeviceGetComputeRunningProcesses, h) or []) + (
        _try(nvml.nvmlDeviceGetGraphicsRunningProcesses, h) or []
    )
    used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
    # Inside containers NVML may not see our pid namespace: then the answer is unknown, not 0.
    return max(used) / MIB if used else None


def sample(index: int = 0, pid: int | None = None) -> GpuSample | None:
    nvml = _nvml()
    if not nvml:
        return None
    h = _handle(index)
    mem = _try(nvml.nvmlDeviceGetMemoryInfo, h)
    util = _try(nvml.nvmlDeviceGetUtilizationRates, h)
    temp = _try(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
    power = _try(nvml.nvmlDeviceGetPowerUsage, h)
    return GpuSample(
        name=_text(nvml.nvmlDeviceGetName(h)),
        utilization_pct=float(util.gpu) if util else None,
        memory_used_mib=mem.used / MIB if mem else None,
        memory_total_mib=mem.total / MIB if mem else None,
        temperature_c=float(temp) if temp is not None else None,
        power_w=power / 1000.0 if power is not None else None,
        process_mem_mib=process_memory_mib(pid, index),
        allocator_peak_mib=torch_peak_mib() if pid is None else None,
    )


def torch_peak_mib() -> float | None:
    """The PyTorch caching allocator's peak allocation in this process, if CUDA is in use."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / MIB
    except Exception:
        return None
    return None


def mps_active() -> bool:
    """Whether NVIDIA's Multi-Process Service runs here: then kernels of different processes
    (rtmon's engine processes) share the GPU at the same time instead of taking turns."""
    import psutil

    return any((proc.info["name"] or "").startswith("nvidia-cuda-mps") for proc in psutil.process_iter(["name"]))
