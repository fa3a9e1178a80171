"""`rtmon doctor`: what this machine has, and which engines can run here (or how to fix it)."""

from __future__ import annotations

import importlib.metadata
import platform

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rtmon import __version__, gpu
from rtmon import engines as registry

PACKAGES = ("torch", "torchvision", "ultralytics", "onnxruntime", "onnxruntime-gpu", "tensorrt", "pynvvideocodec",
            "opencv-python-headless", "av", "textual", "aiomqtt", "nvidia-ml-py")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(console: Console) -> int:
    versions = Table(title=f"rtmon {__version__}", show_header=False)
    versions.add_row("python", platform.python_version())
    for dist in PACKAGES:
        versions.add_row(dist, _version(dist))
    try:
        import torch

        versions.add_row("torch CUDA", f"{torch.version.cuda or 'none (CPU build)'}; available: {torch.cuda.is_available()}")
    except Exception as exc:
        versions.add_row("torch CUDA", f"cannot import torch ({exc})")
    console.print(versions)

    info = gpu.info()
    if info:
        console.print(f"GPU: {info.name}, driver {info.driver}, {gpu.fmt_mib(info.memory_total_mib)}, "
                      f"compute capability {info.compute_capability}")
    else:
        console.print(f"GPU: n/a — {gpu.unavailable_reason()}")

    table = Table(title="engines")
    table.add_column("engine")
    table.add_column("available")
    table.add_column("what it is / how to enable it")
    for name, spec in registry.SPECS.items():
        why = registry.unavailable_reason(name)
        table.add_row(name, "yes" if why is None else "no", escape(spec.description if why is None else why))
    try:
        optimized = registry.resolve_optimized()
    except Exception as exc:
        optimized = f"none ({exc})"
    table.caption = f"baseline = torch-fp32; optimized = {optimized} on this machine"
    console.print(table)
    return 0
