"""The engine registry: names, what each needs, how to install it, and how to build it.

Each backend lives in its own module and is imported only when it is used, so a missing
runtime (TensorRT, onnxruntime-gpu) costs nothing until someone asks for that engine, and then
gives a one-line error that says how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rtmon.core import Role
from rtmon.errors import UserError


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str  # rtmon.engines.<module>
    cls: str
    description: str
    needs: tuple[str, ...] = ()  # importable modules
    needs_gpu: bool = False
    gpu_if_available: bool = False  # runs on the GPU when there is one (the baseline, as users run it)
    needs_provider: str = ""  # an ONNX Runtime execution provider that must be present
    install: str = ""
    servable: bool = True  # has a network of its own that `rtmon serve` can put behind Triton
    kwargs: dict[str, Any] = field(default_factory=dict)


_GPU_HINT = "needs an NVIDIA GPU with a working driver and a CUDA build of torch"
# What every ONNX Runtime CUDA engine needs, and how to get it.
_ORT_CUDA = {
    "needs": ("onnxruntime",),
    "needs_gpu": True,
    "needs_provider": "CUDAExecutionProvider",
    "install": "pip install 'rtmon[gpu]'  (onnxruntime-gpu, replacing onnxruntime)",
}

SPECS: dict[str, EngineSpec] = {
    s.name: s
    for s in (
        EngineSpec(
            "torch-fp32",
            "baseline",
            "UltralyticsEngine",
            "ultralytics predict as users run it: PyTorch FP32, synchronous (the baseline)",
            needs=("ultralytics",),
            gpu_if_available=True,
            servable=False,
        ),
        EngineSpec(
            "ultralytics-ort",
            "ultralytics_ort",
            "UltralyticsOrtEngine",
            "ultralytics' own ONNX export (FP16) run by its own predict on ONNX Runtime CUDA: what a user picks to go faster",
            **_ORT_CUDA,
            servable=False,
        ),
        EngineSpec(
            "ort-cpu",
            "onnxruntime",
            "OnnxRuntimeEngine",
            "ONNX export on ONNX Runtime, CPU execution provider",
            needs=("onnxruntime",),
            install="pip install 'rtmon[cpu]'  (or onnxruntime-gpu, which includes the CPU provider)",
            kwargs={"provider": "cpu"},
        ),
        EngineSpec(
            "ort-cpu-int8",
            "onnxruntime",
            "OnnxRuntimeEngine",
            "ONNX export quantized to INT8 (QDQ, per-channel weights, calibrated on synthetic scenes or int8.calibration_dir), "
            "integer convolutions on ONNX Runtime's CPU provider; cached in engines/int8",
            needs=("onnxruntime",),
            install="pip install 'rtmon[cpu]'  (or onnxruntime-gpu, which includes the CPU provider)",
            kwargs={"provider": "cpu", "precision": "int8"},
        ),
        EngineSpec(
            "torch-fp16",
            "torch_gpu",
            "TorchGpuEngine",
            "PyTorch FP16 eager network between a GPU letterbox graph and a GPU NMS graph",
            needs_gpu=True,
            kwargs={"mode": "eager"},
        ),
        EngineSpec(
            "torch-graph",
            "torch_gpu",
            "TorchGpuEngine",
            "PyTorch FP16: letterbox, network and NMS as one CUDA graph, one small copy back; 2 frames in flight",
            needs_gpu=True,
            kwargs={"mode": "graph"},
        ),
        EngineSpec(
            "torch-graph-compiled",
            "torch_gpu",
            "TorchGpuEngine",
            "PyTorch FP16 compiled by Inductor (no cudagraphs of its own), recorded "
            "in our one CUDA graph with the letterbox and NMS; cached in engines/inductor",
            needs_gpu=True,
            kwargs={"mode": "graph-compiled"},
        ),
        EngineSpec(
            "torch-fp16-cpu",
            "torch_gpu",
            "TorchCpuPrePostEngine",
            "ladder rung: PyTorch FP16 eager on the GPU, CPU letterbox and NMS, one frame at a time",
            needs_gpu=True,
            kwargs={"mode": "eager"},
        ),
        EngineSpec(
            "torch-graph-cpu",
            "torch_gpu",
            "TorchCpuPrePostEngine",
            "ladder rung: PyTorch FP16 network as a CUDA graph, CPU letterbox and NMS, one frame at a time",
            needs_gpu=True,
            kwargs={"mode": "graph"},
        ),
        EngineSpec(
            "torch-graph-sync",
            "torch_gpu",
            "TorchGpuEngine",
            "ladder rung: torch-graph (letterbox + network + NMS in one CUDA graph), one frame at a time",
            needs_gpu=True,
            kwargs={"mode": "graph", "pipelined": False},
        ),
        EngineSpec(
            "torch-compile",
            "torch_gpu",
            "TorchGpuEngine",
            "torch.compile (Inductor, reduce-overhead) FP16; compiles at start, cached in engines/inductor",
            needs_gpu=True,
            kwargs={"mode": "compile"},
        ),
        EngineSpec(
            "ort-cuda",
            "ort_cuda",
            "OrtCudaEngine",
            "ONNX Runtime CUDA provider FP16, IO binding, CUDA graph, between GPU letterbox and GPU NMS graphs",
            **_ORT_CUDA,
            kwargs={"precision": "fp16", "provider": "cuda"},
        ),
        EngineSpec(
            "ort-cuda-fp32",
            "ort_cuda",
            "OrtCudaEngine",
            "ONNX Runtime CUDA provider FP32 (the precision reference), IO binding, CUDA graph",
            **_ORT_CUDA,
            kwargs={"precision": "fp32", "provider": "cuda"},
        ),
        EngineSpec(
            "ort-trt",
            "ort_cuda",
            "OrtCudaEngine",
            "ONNX Runtime TensorRT provider FP16, engine and timing caches in engines/ort-trt",
            needs=("onnxruntime", "tensorrt"),
            needs_gpu=True,
            needs_provider="TensorrtExecutionProvider",
            install="pip install 'rtmon[gpu]' 'rtmon[tensorrt]'  (onnxruntime-gpu and TensorRT 10; needs internet)",
            kwargs={"precision": "fp16", "provider": "tensorrt"},
        ),
        EngineSpec(
            "trt",
            "tensorrt",
            "TensorRtEngine",
            "native TensorRT FP16 plan (cached per GPU/TensorRT version), device buffers on a CUDA stream; "
            "engine.precision=int8: INT8 plan from the calibrated Q/DQ ONNX (explicit quantization)",
            needs=("tensorrt",),
            needs_gpu=True,
            install="pip install 'rtmon[tensorrt]'  (TensorRT 10 fetches NVIDIA's libraries at install, so it needs internet)",
        ),
        EngineSpec(
            "trt-rtx",
            "tensorrt_rtx",
            "TensorRtxEngine",
            "TensorRT for RTX: FP16 engine built ahead of time (strongly typed from the FP16 ONNX), kernels compiled "
            "on the card and kept in a runtime cache, built-in CUDA graph; engine and cache in engines/trt-rtx",
            needs=("tensorrt_rtx",),
            needs_gpu=True,
            install="pip install 'rtmon[tensorrt-rtx]'  (TensorRT for RTX: GeForce/RTX cards of compute capability 8.6, 8.9, 12.x)",
        ),
        EngineSpec(
            "null",
            "null",
            "NullEngine",
            "does nothing: no model, no boxes; measures what handing a frame to an engine process and its boxes "
            "back costs",
            servable=False,
        ),
        EngineSpec(
            "triton",
            "triton",
            "TritonEngine",
            "remote: the network on a Triton Inference Server over gRPC (triton.url, triton.model; `rtmon serve` "
            "starts one), rtmon's letterbox and NMS here; latency includes the network",
            needs=("tritonclient", "grpc"),
            install="pip install 'rtmon[serve]'  (tritonclient)",
            servable=False,
        ),
    )
}

ALIASES = {"baseline": "torch-fp32"}

# Fastest first; `optimized` is the first one available. Measured with `rtmon bench` on an H200
# (2026-11-21, demo yolo11n, 1280x720, batch 1; docs/benchmarks/h200-2026-11-21/bench.md):
# torch-graph-compiled 1123 FPS, torch-graph 840, ort-cuda 725, torch-compile 350, torch-fp16
# 135. trt and ort-trt could not be run (no TensorRT there), so they follow the measured
# engines. trt-rtx comes first although it has never been measured (no RTX GPU was at hand):
# TensorRT for RTX is NVIDIA's inference engine for exactly the RTX cards it runs on, and on
# any other GPU it refuses at once, so `optimized` goes on to the next engine with a notice.
# The ladder rungs (-cpu, -sync) are not candidates.
OPTIMIZED_ORDER = ["trt-rtx", "torch-graph-compiled", "torch-graph", "ort-cuda", "trt", "ort-trt", "torch-compile", "torch-fp16", "ort-cpu"]


ROLES = {"torch-fp32": Role.BASELINE, "ultralytics-ort": Role.PEER, "null": Role.PROBE}


def role(name: str) -> Role:
    """BASELINE for the yardstick, PEER for ultralytics' own faster path, OPTIMIZED for rtmon's engines."""
    return ROLES.get(name, Role.OPTIMIZED)


def is_baseline(name: str) -> bool:
    """The one answer to "is this engine the yardstick?": its role (aliases resolved)."""
    return role(ALIASES.get(name, name)) == Role.BASELINE


BASELINE = next(name for name, r in ROLES.items() if r == Role.BASELINE)  # the engine `baseline` names


def uses_gpu(name: str) -> bool:
    """Whether the engine's process starts CUDA (and so has a CUDA context to account for)."""
    spec = SPECS[name]
    return spec.needs_gpu or (spec.gpu_if_available and _cuda_available())


def servable_names() -> list[str]:
    return [name for name, spec in SPECS.items() if spec.servable]


def known_names() -> list[str]:
    return [*ALIASES, "optimized", *SPECS]


@cache
def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@cache
def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())
    except Exception:
        return ()


def unavailable_reason(name: str) -> str | None:
    """None if the engine can run here; else why not and how to fix it (one line)."""
    spec = SPECS[canonical(name)]
    for module in spec.needs:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed; {spec.install or 'pip install ' + module}"
    if spec.needs_gpu and not _cuda_available():
        return _GPU_HINT
    if spec.needs_provider and spec.needs_provider not in _ort_providers():
        return f"ONNX Runtime has no {spec.needs_provider} here; {spec.install}"
    return None


def canonical(name: str) -> str:
    """`baseline` → `torch-fp32`, `optimized` → the fastest available; unknown → UserError."""
    name = ALIASES.get(name, name)
    if name == "optimized":
        return resolve_optimized()
    if name not in SPECS:
        raise UserError(f"engine: unknown engine '{name}' (known: {', '.join(known_names())})")
    return name


def optimized_candidates() -> list[str]:
    """The engines `optimized` may be, fastest first, among those that can run here."""
    return [name for name in OPTIMIZED_ORDER if name in SPECS and unavailable_reason(name) is None]


def resolve_optimized() -> str:
    candidates = optimized_candidates()
    if not candidates:
        raise UserError("engine: no optimized engine is available here; pip install 'rtmon[cpu]' for ort-cpu")
    return candidates[0]


def candidates_for(name: str) -> list[str]:
    """The engines to try for `name`, in order: for `optimized`, every available one in the
    measured order (a runner falls back to the next when one fails to load); else just one."""
    if ALIASES.get(name, name) == "optimized":
        resolve_optimized()  # a UserError when there is none
        return optimized_candidates()
    return [canonical(name)]


def resolve_engines(names: list[str]) -> list[list[str]]:
    """For each engine asked for (in order, de-duplicated), the engines to try: one name, or for
    `optimized` the available ones in the measured order. Each must be runnable here."""
    out: list[list[str]] = []
    for raw in names:
        candidates = candidates_for(raw.strip())
        why = unavailable_reason(candidates[0])
        if why:
            raise UserError(f"engine: {candidates[0]} is not available: {why}")
        if all(c[0] != candidates[0] for c in out):
            out.append(candidates)
    if not out:
        raise UserError("engine: no engine given")
    return out


def resolve_names(names: list[str]) -> list[str]:
    """Canonical, de-duplicated engine names in the order given; each must be runnable here."""
    return [candidates[0] for candidates in resolve_engines(names)]


def create(name: str, model, settings):
    """Build (but do not load) the engine `name` for `model` (a ModelRef) and `settings`."""
    spec = SPECS[canonical(name)]
    why = unavailable_reason(spec.name)
    if why:
        raise UserError(f"engine: {spec.name} is not available: {why}")
    module = importlib.import_module(f"rtmon.engines.{spec.module}")
    return getattr(module, spec.cls)(spec.name, model, settings, **spec.kwargs)
