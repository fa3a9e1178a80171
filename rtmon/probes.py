"""The doctor's probes: each asks one runtime to do a little real work on the GPU, in a Python
process of its own under a time limit (`python -m rtmon.probes <name>`), and prints what it
found as one JSON line. `rtmon.readiness` turns the facts into verdicts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

TIMEOUT_S = {"torch": 60.0, "triton": 180.0, "onnxruntime": 60.0, "tensorrt": 60.0, "tensorrt-rtx": 60.0}


class ProbeFailed(Exception):
    """The probe process gave no answer: timed out, crashed or printed garbage."""


def error_line(text: str) -> str:
    """The first line of an error's text, for a one-line verdict."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:300] if lines else "unknown error"


def probe_torch() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
    if not facts["available"]:
        return facts
    facts["capability"] = list(torch.cuda.get_device_capability(0))
    facts["arch_list"] = torch.cuda.get_arch_list()
    try:
        x, w = torch.randn(1, 3, 64, 64), torch.randn(8, 3, 3, 3)
        xg, wg = x.cuda(), w.cuda()
        torch.nn.functional.conv2d(xg, wg)  # the first call loads cuDNN
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            y = torch.nn.functional.conv2d(xg, wg)
        torch.cuda.synchronize()
        facts["conv_ms"] = (time.perf_counter() - t0) * 1e3 / 10
        facts["conv_max_error"] = float((y.cpu() - torch.nn.functional.conv2d(x, w)).abs().max())
    except Exception as exc:
        facts["conv_error"] = error_line(f"{type(exc).__name__}: {exc}")
    return facts


def probe_triton() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {}
    try:
        import triton

        facts["triton"] = triton.__version__
    except Exception as exc:
        return {"error": error_line(f"cannot import triton: {exc}")}
    try:
        x = torch.randn(4096, device="cuda")
        compiled = torch.compile(lambda t: torch.relu(t * 2.0 + 1.0))  # pointwise: Inductor emits one Triton kernel
        t0 = time.perf_counter()
        y = compiled(x)
        torch.cuda.synchronize()
        facts["compile_s"] = time.perf_counter() - t0
        facts["max_error"] = float((y - torch.relu(x * 2.0 + 1.0)).abs().max())
    except Exception as exc:
        facts["error"] = error_line(f"{type(exc).__name__}: {exc}")
    return facts


def _tiny_weight():
    import numpy as np

    return np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)


def tiny_onnx_model() -> bytes:
    """A 3×3 convolution and a ReLU over a 1×3×32×32 input, built in memory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = _tiny_weight()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "rtmon_readiness",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime rtmon supports
    onnx.checker.check_model(model)
    return model.SerializeToString()


def probe_onnxruntime() -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    facts: dict[str, Any] = {"version": ort.__version__, "available": ort.get_available_providers()}
    if "CUDAExecutionProvider" not in facts["available"]:
        return facts
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the pip packages, as the ort-cuda engine does
    model = tiny_onnx_model()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # A node the CUDA provider does not take must fail the session, not run on the CPU.
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        session = ort.InferenceSession(model, options, providers=["CUDAExecutionProvider"])
    except Exception as exc:
        facts["session_error"] = error_line(str(exc))
        return facts
    facts["providers"] = session.get_providers()
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    try:
        session.run(None, {"x": x})
        t0 = time.perf_counter()
        for _ in range(10):
            (y,) = session.run(None, {"x": x})
        facts["run_ms"] = (time.perf_counter() - t0) * 1e3 / 10
    except Exception as exc:
        facts["run_error"] = error_line(str(exc))
        return facts
    (reference,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    facts["max_error"] = float(np.abs(y - reference).max())
    return facts


def probe_tensorrt() -> dict[str, Any]:
    import tensorrt as trt

    messages: list[str] = []

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                messages.append(error_line(msg))

    facts: dict[str, Any] = {"version": trt.__version__}
    try:
        builder = trt.Builder(Logger())
        facts["builder"] = builder is not None
    except Exception as exc:
        facts["builder"] = False
        messages.append(error_line(f"{type(exc).__name__}: {exc}"))
    facts["messages"] = messages
    return facts


def probe_tensorrt_rtx() -> dict[str, Any]:
    """Build the tiny model's engine ahead of time, ask the runtime whether it is valid on this
    GPU (its own refusal, when it refuses), then run it and compare with PyTorch."""
    import tempfile
    from pathlib import Path

    import tensorrt_rtx as trt

    from rtmon.engines.tensorrt_rtx import build_engine, collecting_logger, invalid_reasons
    from rtmon.errors import UserError

    facts: dict[str, Any] = {"version": trt.__version__}
    messages: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rtmon-readiness-") as tmp:
        (Path(tmp) / "tiny.onnx").write_bytes(tiny_onnx_model())
        try:
            built = build_engine(trt, Path(tmp) / "tiny.onnx", Path(tmp) / "tiny.engine")
        except UserError as exc:
            facts["build_error"] = error_line(str(exc))
            return facts
        blob = built.path.read_bytes()
    runtime = trt.Runtime(collecting_logger(trt, messages))
    validity, bits = runtime.get_engine_validity(blob[: runtime.engine_header_size])
    facts["validity"], facts["diagnostics"] = validity.name, invalid_reasons(trt, bits)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None or validity == trt.EngineValidity.INVALID:
        facts["refusal"] = error_line(messages[0]) if messages else ""
        if engine is None and validity != trt.EngineValidity.INVALID:
            facts["run_error"] = f"the engine did not deserialize: {facts['refusal'] or 'no reason given'}"
        return facts
    import torch

    try:
        context = engine.create_execution_context()
        x = torch.randn(1, 3, 32, 32, device="cuda")
        y = torch.empty(1, 8, 32, 32, device="cuda")
        context.set_tensor_address("x", x.data_ptr())
        context.set_tensor_address("y", y.data_ptr())
        stream = torch.cuda.Stream()
        t0 = time.perf_counter()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("execute_async_v3 returned False")
        stream.synchronize()
        facts["first_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for _ in range(10):
            context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        facts["run_ms"] = (time.perf_counter() - t0) * 1e3 / 10
    except Exception as exc:
        facts["run_error"] = error_line(f"{type(exc).__name__}: {exc}; {'; '.join(messages[:1])}")
        return facts
    reference = torch.relu(torch.nn.functional.conv2d(x.cpu(), torch.from_numpy(_tiny_weight()), padding=1))
    facts["max_error"] = float((y.cpu() - reference).abs().max())
    return facts


PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "torch": probe_torch,
    "triton": probe_triton,
    "onnxruntime": probe_onnxruntime,
    "tensorrt": probe_tensorrt,
    "tensorrt-rtx": probe_tensorrt_rtx,
}


def run_json(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run `argv` in a new process group and parse the last line of its output as a JSON object.
    On timeout the whole group is killed (torch.compile starts compile workers of its own)."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise ProbeFailed(f"could not start ({exc})") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ProbeFailed(f"timed out after {timeout_s:g} s") from None
    finally:
        # Whatever the probe started and left behind (compile workers) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
    if proc.returncode < 0:
        raise ProbeFailed(f"crashed ({signal.Signals(-proc.returncode).name}); {error_line(err[-2000:]) if err.strip() else 'no message'}")
    if proc.returncode != 0:
        raise ProbeFailed(f"exited with code {proc.returncode}: {error_line(err.strip().splitlines()[-1] if err.strip() else '')}")
    lines = out.strip().splitlines()
    try:
        facts = json.loads(lines[-1]) if lines else None
    except ValueError:
        facts = None
    if not isinstance(facts, dict):
        raise ProbeFailed("gave no answer")
    return facts


def run_probe(name: str) -> dict[str, Any]:
    return run_json([sys.executable, "-m", "rtmon.probes", name], TIMEOUT_S[name])


def _probe_main(name: str) -> None:
    try:
        facts = PROBES[name]()
    except Exception as exc:
        facts = {"error": error_line(f"{type(exc).__name__}: {exc}")}
    sys.stdout.write("\n" + json.dumps(facts) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _probe_main(sys.argv[1])
