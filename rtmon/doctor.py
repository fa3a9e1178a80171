"""`rtmon doctor`: what this machine has, whether its GPU is ready for each runtime (and what to
install when it is not), and which engines can run here. `rtmon doctor --json` prints the same
as one JSON object for scripts (its shape is in docs/doctor.md)."""

from __future__ import annotations

import json
import platform
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rtmon import __version__, gpu, readiness
from rtmon import engines as registry
from rtmon.formatting import fmt_mib
from rtmon.provenance import package_versions

SCHEMA = 1
PACKAGES = ("torch", "torchvision", "triton", "ultralytics", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "tensorrt-rtx-cu13", "pynvvideocodec", "opencv-python-headless", "av", "textual", "aiomqtt",
            "prometheus-client", "nvidia-ml-py")
_STYLE = {readiness.OK: "green", readiness.FAIL: "bold red", readiness.MISSING: "yellow", readiness.SKIP: "dim"}


def _runtime_checks(spec: registry.EngineSpec) -> tuple[str, ...]:
    """The readiness checks an engine's runtime depends on (GPU engines all use PyTorch for
    their pre- and post-processing; the baseline runs on the GPU when there is one)."""
    needs = {"baseline": ("torch",), "torch_gpu": ("torch",), "ort_cuda": ("torch", "onnxruntime"),
             "tensorrt": ("torch", "tensorrt"), "tensorrt_rtx": ("torch", "tensorrt-rtx")}.get(spec.module, ())  # fmt: skip
    if spec.kwargs.get("mode") in {"compile", "graph-compiled"}:
        needs += ("triton",)
    if spec.kwargs.get("provider") == "tensorrt":
        needs += ("tensorrt",)
    return needs


def _engines(checks: list[readiness.Check]) -> tuple[list[dict[str, Any]], str | None]:
    """Every engine and whether it runs here: the registry's answer, overruled by a failed
    readiness check of its runtime (an installed runtime that cannot run on this GPU)."""
    failed = {c.name: c for c in checks if c.status == readiness.FAIL}
    rows = []
    for name, spec in registry.SPECS.items():
        why = registry.unavailable_reason(name)
        broken = next((failed[c] for c in _runtime_checks(spec) if c in failed), None)
        if why is None and broken is not None:
            why = f"{broken.name} does not work on this GPU: {broken.fix or broken.detail}"
        rows.append({"name": name, "available": why is None, "detail": spec.description if why is None else why})
    available = {row["name"] for row in rows if row["available"]}
    optimized = next((n for n in registry.OPTIMIZED_ORDER if n in available), None)
    return rows, optimized


_STATE = {readiness.OK: "installed and runs here", readiness.FAIL: "installed but does not run here",
          readiness.MISSING: "not installed", readiness.SKIP: "not checked"}


def _tensorrt_fit(info: gpu.GpuInfo | None, checks: list[readiness.Check]) -> dict[str, Any]:
    """Which TensorRT suits this GPU (TensorRT-RTX for GeForce/RTX cards, TensorRT 10/11 for
    datacenter GPUs), and whether it is installed and runs here (its readiness line)."""
    cc = readiness.parse_cc(info.compute_capability) if info else None
    runtime, why = readiness.tensorrt_fit(info.name if info else "", cc)
    check = next((c for c in checks if c.name == runtime), None)
    state = "" if check is None else _STATE[check.status] + (f": {check.fix}" if check.status == readiness.MISSING and check.fix else "")
    return {"runtime": runtime, "detail": why, "status": None if check is None else check.status, "state": state}


def collect(progress=lambda name: None) -> dict[str, Any]:
    """Everything the doctor knows, in the `--json` shape."""
    info = gpu.info()
    checks = readiness.run_checks(progress)
    engines, optimized = _engines(checks)
    return {
        "schema": SCHEMA,
        "rtmon": __version__,
        "python": platform.python_version(),
        "gpu": None if info is None else {
            "name": info.name,
            "compute_capability": info.compute_capability,
            "driver": info.driver,
            "cuda_driver": gpu.cuda_driver_version(),
            "memory_total_mib": round(info.memory_total_mib, 1),
        },
        "packages": package_versions(PACKAGES),
        "checks": [c.to_dict() for c in checks],
        "tensorrt_fit": _tensorrt_fit(info, checks),
        "ready": readiness.ready(checks),
        "engines": engines,
        "optimized": optimized,
    }


def report_json(console: Console) -> int:
    console.out(json.dumps(collect(), indent=2), highlight=False)
    return 0


def report(console: Console) -> int:
    with console.status("checking the GPU …") as status:
        data = collect(lambda name: status.update(f"checking {name} on the GPU …"))
    versions = Table(title=f"rtmon {__version__}", show_header=False)
    versions.add_row("python", data["python"])
    for dist, version in data["packages"].items():
        versions.add_row(dist, version or "not installed")
    console.print(versions)

    info = data["gpu"]
    if info:
        console.print(f"GPU: {info['name']}, driver {info['driver']} (CUDA {info['cuda_driver'] or 'unknown'}), "
                      f"{fmt_mib(info['memory_total_mib'])}, compute capability {info['compute_capability']}")
    else:
        console.print(f"GPU: n/a — {gpu.unavailable_reason()}")
    fit = data["tensorrt_fit"]
    console.print(f"TensorRT for this GPU: {escape(fit['detail'])}" + (f" — {escape(fit['state'])}" if fit["state"] else ""),
                  highlight=False)

    checks = Table(title="readiness on this GPU")
    for column in ("check", "status", "what was found / what to install", "s"):
        checks.add_column(column, justify="right" if column == "s" else "left")
    for c in data["checks"]:
        text = escape(c["detail"]) + (f"\n[bold]→ {escape(c['fix'])}[/]" if c["fix"] else "")
        seconds = "" if c["seconds"] is None else f"{c['seconds']:.1f}"
        checks.add_row(c["name"], f"[{_STYLE[c['status']]}]{c['status']}[/]", text, seconds)
    checks.caption = "ready" if data["ready"] else "not ready: see the lines above"
    console.print(checks)

    table = Table(title="engines")
    table.add_column("engine")
    table.add_column("available")
    table.add_column("what it is / how to enable it")
    for row in data["engines"]:
        table.add_row(row["name"], "yes" if row["available"] else "no", escape(row["detail"]))
    table.caption = f"baseline = torch-fp32; optimized = {data['optimized'] or 'none'} on this machine"
    console.print(table)
    return 0
