"""Is this machine ready to run rtmon's engines on its GPU? Checks against the GPU itself.

A new GPU breaks builds that work elsewhere. A Blackwell GeForce (compute capability 12.0)
needs PyTorch built with kernels for sm_120 (CUDA 12.8 wheels or newer), a Triton that can
generate code for it, an ONNX Runtime build with kernels or PTX for it, TensorRT 10.8 or newer
and a driver for CUDA 12.8. Version numbers alone do not settle it, so each runtime is asked to
do a little real work on the GPU:

- `gpu`: NVML sees a GPU (name, compute capability);
- `driver`: the driver's version and the newest CUDA it supports, against what the GPU and the
  installed PyTorch need;
- `torch`: PyTorch's arch list covers the GPU (a cubin of the same major and lower-or-equal
  minor, or PTX of a lower-or-equal architecture to JIT-compile), and a 3×3 convolution runs;
- `triton`: `torch.compile` builds an elementwise kernel with Inductor/Triton and runs it;
- `onnxruntime`: a tiny ONNX model, built in memory, runs on the CUDA execution provider with
  CPU fallback disabled, so a provider that did not attach is an error, not a slow "GPU" run;
- `tensorrt`: its version supports this compute capability and a builder starts;
- `tensorrt-rtx`: TensorRT for RTX builds a tiny engine ahead of time, its runtime says the
  engine is valid on this GPU (or why not), and the engine runs and agrees with PyTorch. Which
  of the two TensorRTs suits the GPU is `tensorrt_fit`.

Each probe (`rtmon.probes`) runs in its own Python process under a time limit, so a hang, a
crash in a native library or a slow first compile costs at most that limit and never takes the
doctor down. A probe prints what it found as JSON; the pure `*_verdict` functions here turn
those facts into a `Check` (tests feed them fake facts).
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from rtmon import gpu
from rtmon.formatting import fmt_mib
from rtmon.gpu import GpuInfo
from rtmon.probes import ProbeFailed, error_line, run_probe

OK, FAIL, MISSING, SKIP = "ok", "fail", "missing", "skip"
# What a compute capability needs that its arch list cannot tell: the first CUDA the driver must
# support, and the first TensorRT that accepts it (Blackwell: CUDA 12.8, TensorRT 10.8).
MIN_DRIVER_CUDA = {10: (12, 8), 12: (12, 8)}
MIN_TENSORRT = {10: (10, 8), 12: (10, 8)}
# The compute capabilities rtmon runs TensorRT-RTX on: the RTX generations (Ampere GeForce and
# workstation cards 8.6, Ada 8.9, Blackwell 12.x). Its runtime refuses engines elsewhere: on an
# H200 (9.0) it answers "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0". 8.0 is
# the A100's, a datacenter GPU, which TensorRT 10/11 serves.
TENSORRT_RTX_CCS = "8.6, 8.9, 12.0, 12.x"
# Datacenter GPUs by name: TensorRT 10/11 is the TensorRT for them, whatever their compute
# capability (an L40S is an Ada 8.9, an A10 an Ampere 8.6).
DATACENTER_GPU = re.compile(
    r"\b(A2|A10G?|A16|A30|A40|A100|A800|H20|H100|H200|H800|GH200|L4|L20|L40S?|B100|B200|B300|GB200|GB300|T4|V100|P100)\b",
    re.IGNORECASE,
)
TORCH_FIX = "install a PyTorch build with kernels for sm_{cc}"
TORCH_CU128 = " (CUDA 12.8 or newer wheels: pip install --index-url https://download.pytorch.org/whl/cu128 torch torchvision)"


@dataclass(frozen=True)
class Check:
    """One line of the readiness table: ok, or what is wrong and what to install."""

    name: str
    status: str  # ok | fail | missing | skip
    detail: str
    fix: str = ""
    seconds: float | None = None  # how long the check took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Cc = tuple[int, int]


def parse_version(text: str | None) -> tuple[int, ...]:
    """'10.8.0.43' → (10, 8, 0, 43); the leading numbers only ('2.7.0+cu128' → (2, 7, 0))."""
    match = re.match(r"\d+(\.\d+)*", text or "")
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def parse_cc(text: str | None) -> Cc | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _sm(cc: Cc) -> str:
    return f"{cc[0]}{cc[1]}"


def kernels_for(arch_list: list[str], cc: Cc) -> str | None:
    """The entry of a PyTorch arch list that runs on `cc`, preferring a cubin over PTX; None if
    none does. A cubin `sm_XY` runs on the same major X with minor ≥ Y; PTX `compute_XY` is
    JIT-compiled by the driver for any architecture ≥ X.Y. The `a` variants (sm_90a) use
    features of exactly that GPU and run nowhere else."""
    cubin = ptx = None
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, major, minor, suffix = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
        if suffix == "a" and (major, minor) != cc:
            continue
        if kind == "sm" and major == cc[0] and minor <= cc[1]:
            cubin = cubin or arch
        elif kind == "compute" and (major, minor) <= cc:
            ptx = ptx or arch
    if cubin:
        return cubin
    return f"{ptx} (PTX, compiled by the driver at first use)" if ptx else None


def runs_tensorrt_rtx(cc: Cc) -> bool:
    """Whether rtmon runs TensorRT-RTX on a GPU of compute capability `cc` (see TENSORRT_RTX_CCS)."""
    return cc in {(8, 6), (8, 9)} or cc[0] == 12


def tensorrt_fit(name: str, cc: Cc | None) -> tuple[str | None, str]:
    """Which TensorRT suits this GPU, and why: `tensorrt-rtx` for GeForce/RTX and workstation
    cards it runs on, `tensorrt` (10/11) for datacenter GPUs and the rest; None without a GPU."""
    if cc is None:
        return None, "none, there is no NVIDIA GPU (`rtmon export --tensorrt-rtx` still builds engines for RTX cards here)"
    where = f"{name}, compute capability {cc[0]}.{cc[1]}"
    if DATACENTER_GPU.search(name):
        return "tensorrt", f"TensorRT 10/11: {where} is a datacenter GPU (TensorRT-RTX is for GeForce/RTX cards)"
    if runs_tensorrt_rtx(cc):
        return "tensorrt-rtx", f"TensorRT-RTX: {where} is an RTX card it runs on ({TENSORRT_RTX_CCS})"
    return "tensorrt", f"TensorRT 10/11: TensorRT-RTX does not run on {where} (it runs on {TENSORRT_RTX_CCS})"


# ---- verdicts: facts → Check (pure) ----


def gpu_verdict(info: GpuInfo | None, why: str | None) -> Check:
    if info is None:
        return Check("gpu", MISSING, why or "no NVIDIA GPU visible", "install the NVIDIA driver; `nvidia-smi` must list the GPU")
    cc = info.compute_capability
    return Check("gpu", OK, f"{info.name}, compute capability {cc} (sm_{cc.replace('.', '')}), {fmt_mib(info.memory_total_mib)}")


def driver_verdict(info: GpuInfo | None, driver_cuda: str | None, torch_cuda: str | None) -> Check:
    if info is None:
        return Check("driver", SKIP, "not checked: no NVIDIA GPU")
    detail = f"driver {info.driver}, supports CUDA {driver_cuda or 'unknown'}"
    if torch_cuda:
        detail += f"; PyTorch built with CUDA {torch_cuda}"
    cc = parse_cc(info.compute_capability)
    have = parse_version(driver_cuda)
    need = MIN_DRIVER_CUDA.get(cc[0]) if cc else None
    if need and have and have[:2] < need:
        return Check("driver", FAIL, f"{detail}; compute capability {info.compute_capability} needs CUDA {need[0]}.{need[1]}",
                     "install an NVIDIA driver that supports CUDA 12.8 or newer (R570 or later)")  # fmt: skip
    built = parse_version(torch_cuda)
    if built and have and have[0] < built[0]:
        return Check("driver", FAIL, f"{detail}: the driver is older than PyTorch's CUDA {built[0]}",
                     f"install an NVIDIA driver that supports CUDA {torch_cuda}, or a PyTorch build for CUDA {have[0]}")  # fmt: skip
    return Check("driver", OK, detail)


def torch_verdict(facts: dict[str, Any], cc: Cc | None) -> Check:
    if facts.get("error"):
        return Check("torch", FAIL, f"failed: {facts['error']}", "pip install torch torchvision (see https://pytorch.org)")
    name = f"PyTorch {facts['version']}"
    fix = (TORCH_FIX.format(cc=_sm(cc)) + (TORCH_CU128 if cc[0] >= 10 else "")) if cc else "install a CUDA build of PyTorch"
    if not facts.get("cuda"):
        return Check("torch", FAIL, f"{name} is a CPU-only build", fix)
    if not facts.get("available"):
        return Check("torch", FAIL, f"{name} (CUDA {facts['cuda']}) sees no GPU: torch.cuda.is_available() is False",
                     "check that the driver supports this CUDA version (see the driver line)")  # fmt: skip
    cc = tuple(facts.get("capability") or ()) or cc
    if cc:
        runs = kernels_for(facts.get("arch_list") or [], cc)
        if runs is None:
            archs = " ".join(facts.get("arch_list") or []) or "none"
            return Check("torch", FAIL, f"{name} (CUDA {facts['cuda']}) has no kernels for sm_{_sm(cc)}; it has: {archs}", fix)
    else:
        runs = "unknown compute capability"
    if facts.get("conv_error"):
        return Check("torch", FAIL, f"{name}: a 3×3 convolution failed on the GPU: {facts['conv_error']}", fix)
    if facts.get("conv_max_error", 0.0) > 0.05:
        return Check("torch", FAIL, f"{name}: a 3×3 convolution on the GPU disagrees with the CPU by "
                     f"{facts['conv_max_error']:.3g}", fix)  # fmt: skip
    return Check("torch", OK, f"{name}, CUDA {facts['cuda']}, kernels {runs}; 3×3 convolution {facts['conv_ms']:.3f} ms")


def triton_verdict(facts: dict[str, Any], cc: Cc | None) -> Check:
    fix = "torch-graph-compiled and torch-compile need a Triton that supports this GPU"
    fix += " (Triton 3.3 or newer, which comes with PyTorch 2.7 or newer): pip install -U torch triton" if cc and cc[0] >= 10 else \
        ": pip install -U torch triton"  # fmt: skip
    if facts.get("error"):
        return Check("triton", FAIL, f"torch.compile could not build or run a kernel: {facts['error']}", fix)
    if facts.get("max_error", 0.0) > 1e-3:
        return Check("triton", FAIL, f"the compiled kernel computed wrong values (off by {facts['max_error']:.3g})", fix)
    return Check("triton", OK, f"Triton {facts.get('triton') or 'unknown'}: torch.compile built and ran an elementwise "
                 f"kernel in {facts['compile_s']:.1f} s (first call, compile included)")  # fmt: skip


ORT_GPU = "pip uninstall -y onnxruntime && pip install 'rtmon[gpu]'  (onnxruntime-gpu)"
ORT_NO_KERNEL = ("this onnxruntime-gpu build has no kernels or PTX for sm_{cc} (1.23.0 is such a build, "
                 "microsoft/onnxruntime#26181): install another release, or build it with CMAKE_CUDA_ARCHITECTURES={cc}")  # fmt: skip
INSTALL = {"torch": "pip install torch torchvision (https://pytorch.org)", "onnxruntime": ORT_GPU,
           "tensorrt": "pip install 'rtmon[tensorrt]'"}
ORT_LIBS = "the CUDA provider did not load: check that CUDA 12 and cuDNN 9 load (pip install 'rtmon[gpu]' brings them with torch)"


def onnxruntime_verdict(facts: dict[str, Any], cc: Cc | None) -> Check:
    if facts.get("error"):
        return Check("onnxruntime", FAIL, f"failed: {facts['error']}", ORT_GPU)
    name = f"onnxruntime {facts['version']}"
    if "CUDAExecutionProvider" not in (facts.get("available") or []):
        return Check("onnxruntime", MISSING, f"{name} has no CUDAExecutionProvider "
                     f"(it has {', '.join(facts.get('available') or []) or 'none'})", ORT_GPU)  # fmt: skip
    if facts.get("session_error"):
        return Check("onnxruntime", FAIL, f"{name}: the CUDA provider did not take the model: {facts['session_error']}",
                     ORT_LIBS)  # fmt: skip
    providers = facts.get("providers") or []
    if not providers or providers[0] != "CUDAExecutionProvider":
        return Check("onnxruntime", FAIL, f"{name} fell back to {providers[0] if providers else 'no provider'}: "
                     "the CUDA provider did not attach", ORT_LIBS)  # fmt: skip
    if facts.get("run_error"):
        fix = ORT_NO_KERNEL.format(cc=_sm(cc)) if cc and "no kernel image" in facts["run_error"] else ORT_LIBS
        return Check("onnxruntime", FAIL, f"{name}: a convolution failed on the CUDA provider: {facts['run_error']}", fix)
    if facts.get("max_error", 0.0) > 0.05:
        return Check("onnxruntime", FAIL, f"{name}: the CUDA provider's result disagrees with the CPU's by "
                     f"{facts['max_error']:.3g}", ORT_GPU)  # fmt: skip
    return Check("onnxruntime", OK, f"{name}: a 3×3 convolution ran on CUDAExecutionProvider in {facts['run_ms']:.3f} ms, "
                 "no node on the CPU")  # fmt: skip


def tensorrt_verdict(facts: dict[str, Any] | None, cc: Cc | None) -> Check:
    need = MIN_TENSORRT.get(cc[0]) if cc else None
    need_text = f"TensorRT {need[0]}.{need[1]} or newer for compute capability {cc[0]}.{cc[1]}" if need and cc else ""
    if facts is None:
        fix = "pip install 'rtmon[tensorrt]'" + (f"  ({need_text})" if need_text else "")
        return Check("tensorrt", MISSING, "TensorRT is not installed (engines trt and ort-trt)", fix)
    if facts.get("error"):
        return Check("tensorrt", FAIL, f"failed: {facts['error']}", "pip install -U 'rtmon[tensorrt]'")
    version = facts["version"]
    if need and parse_version(version)[:2] < need:
        return Check("tensorrt", FAIL, f"TensorRT {version} does not support compute capability {cc[0]}.{cc[1]}",
                     f"pip install -U 'tensorrt>={need[0]}.{need[1]}'  ({need_text})")  # fmt: skip
    if not facts.get("builder"):
        said = "; ".join(facts.get("messages") or []) or "no reason given"
        return Check("tensorrt", FAIL, f"TensorRT {version} could not start a builder on this GPU: {said}",
                     "pip install -U 'rtmon[tensorrt]'" + (f"  ({need_text})" if need_text else ""))  # fmt: skip
    return Check("tensorrt", OK, f"TensorRT {version}: a builder started on this GPU")


TENSORRT_RTX_INSTALL = "pip install 'rtmon[tensorrt-rtx]'"
TENSORRT_FOR_DATACENTER = "this GPU takes TensorRT 10/11: pip install 'rtmon[tensorrt]' (engines trt and ort-trt)"


def tensorrt_rtx_verdict(facts: dict[str, Any] | None, cc: Cc | None, gpu_name: str = "") -> Check:
    name = "tensorrt-rtx"
    if facts is None:
        if tensorrt_fit(gpu_name, cc)[0] == "tensorrt-rtx":
            return Check(name, MISSING, "TensorRT-RTX is not installed (engine trt-rtx; the TensorRT for this GPU)",
                         TENSORRT_RTX_INSTALL)  # fmt: skip
        return Check(name, MISSING, "TensorRT-RTX is not installed (engine trt-rtx; it is for GeForce/RTX cards)")
    if facts.get("error"):
        return Check(name, FAIL, f"failed: {facts['error']}", "pip install -U 'rtmon[tensorrt-rtx]'")
    version = f"TensorRT-RTX {facts['version']}"
    if cc and not runs_tensorrt_rtx(cc):
        said = f"; its runtime says: {facts['refusal']}" if facts.get("refusal") else ""
        return Check(name, FAIL, f"{version} is installed but cannot run on compute capability {cc[0]}.{cc[1]} "
                     f"(it runs on {TENSORRT_RTX_CCS}){said}",
                     f"{TENSORRT_FOR_DATACENTER}; `optimized` falls back from trt-rtx to the next engine here, with a notice")  # fmt: skip
    fix = "update the NVIDIA driver (the cu13 wheels need one for CUDA 13), or pip install -U 'rtmon[tensorrt-rtx]'"
    if facts.get("build_error"):
        return Check(name, FAIL, f"{version} could not build a tiny engine ahead of time: {facts['build_error']}", fix)
    if facts.get("validity") == "INVALID":
        why = ", ".join(facts.get("diagnostics") or []) or facts.get("refusal") or "no reason given"
        return Check(name, FAIL, f"{version}: its runtime says an engine built here is not valid on this GPU ({why})", fix)
    if facts.get("run_error"):
        return Check(name, FAIL, f"{version}: a tiny engine failed to run on this GPU: {facts['run_error']}", fix)
    if facts.get("max_error", 0.0) > 1e-2:
        return Check(name, FAIL, f"{version}: a tiny engine's result disagrees with PyTorch's by {facts['max_error']:.3g}", fix)
    return Check(name, OK, f"{version}: a tiny engine built ahead of time ran on this GPU (kernels compiled and first "
                 f"run {facts['first_ms']:.0f} ms, then {facts['run_ms']:.3f} ms) and agrees with PyTorch")  # fmt: skip


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _timed(name: str, check: Callable[[], Check]) -> Check:
    """`check()`, timed; whatever goes wrong becomes a failed line, never an exception."""
    t0 = time.monotonic()
    try:
        result = check()
    except ProbeFailed as exc:
        result = Check(name, FAIL, f"failed: the check {exc}")
    except Exception as exc:
        result = Check(name, FAIL, f"failed: {error_line(f'{type(exc).__name__}: {exc}')}")
    return replace(result, seconds=round(time.monotonic() - t0, 2))


def run_checks(progress: Callable[[str], None] = lambda name: None) -> list[Check]:
    """Every readiness check for GPU 0, in order; each bounded in time."""
    info, why = gpu.info(), gpu.unavailable_reason()
    cc = parse_cc(info.compute_capability) if info else None
    checks = [_timed("gpu", lambda: gpu_verdict(info, why))]
    has = {name: installed(name) for name in ("torch", "onnxruntime", "tensorrt")}

    def probed(name: str, verdict: Callable[[dict[str, Any], Cc | None], Check], needs: str) -> Check:
        if not has[needs]:
            return Check(name, MISSING, f"{needs} is not installed", INSTALL[needs])
        if info is None:
            return Check(name, SKIP, "not checked: no NVIDIA GPU")
        progress(name)
        return verdict(run_probe(name), cc)

    torch_facts: dict[str, Any] = {}

    def torch_check() -> Check:
        nonlocal torch_facts
        if info is None or not has["torch"]:
            return probed("torch", torch_verdict, "torch")
        progress("torch")
        torch_facts = run_probe("torch")
        return torch_verdict(torch_facts, cc)

    torch_line = _timed("torch", torch_check)
    checks.append(_timed("driver", lambda: driver_verdict(info, gpu.cuda_driver_version(), torch_facts.get("cuda"))))
    checks.append(torch_line)
    if info is not None and torch_line.status != OK:
        checks.append(Check("triton", SKIP, "not checked: PyTorch does not run on this GPU (see the torch line)"))
    else:
        checks.append(_timed("triton", lambda: probed("triton", triton_verdict, "torch")))
    checks.append(_timed("onnxruntime", lambda: probed("onnxruntime", onnxruntime_verdict, "onnxruntime")))

    def tensorrt_check() -> Check:
        if not has["tensorrt"]:
            return tensorrt_verdict(None, cc)
        return probed("tensorrt", tensorrt_verdict, "tensorrt")

    checks.append(_timed("tensorrt", tensorrt_check))

    def tensorrt_rtx_check() -> Check:
        if not installed("tensorrt_rtx"):
            return tensorrt_rtx_verdict(None, cc, info.name if info else "")
        if info is None:
            return Check("tensorrt-rtx", SKIP, "not checked: no NVIDIA GPU (TensorRT-RTX is installed: "
                         "`rtmon export --tensorrt-rtx` builds engines for RTX cards on this machine)")  # fmt: skip
        progress("tensorrt-rtx")
        return tensorrt_rtx_verdict(run_probe("tensorrt-rtx"), cc, info.name)

    checks.append(_timed("tensorrt-rtx", tensorrt_rtx_check))
    return checks


def ready(checks: list[Check]) -> bool:
    """The GPU is there and nothing that is installed fails on it."""
    return any(c.name == "gpu" and c.status == OK for c in checks) and not any(c.status == FAIL for c in checks)
