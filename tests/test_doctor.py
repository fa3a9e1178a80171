"""`rtmon doctor`: the readiness verdicts on faked answers (a GPU the installed builds do not
know, an ONNX Runtime session on the CPU only, TensorRT too old, no GPU), the bounded probe
runner, the engines' own no-silent-CPU rule, and the real command's JSON."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from rtmon import doctor, probes, readiness
from rtmon.engines.ort_cuda import require_providers
from rtmon.errors import UserError
from rtmon.gpu import GpuInfo
from rtmon.readiness import FAIL, MISSING, OK, SKIP, Check, ProbeFailed, kernels_for
from tests.cli_helpers import run_rtmon

RTX_5070 = GpuInfo(0, "NVIDIA GeForce RTX 5070", "575.64.03", 12227.0, "12.0")
CU124_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128_ARCHS = [*CU124_ARCHS, "sm_100", "sm_120", "compute_120"]


# ---- which kernels run on which GPU ----


@pytest.mark.parametrize(
    ("archs", "cc", "runs"),
    [
        (CU128_ARCHS, (12, 0), "sm_120"),
        (CU124_ARCHS, (12, 0), None),  # the RTX 50 series on a CUDA 12.4 build
        ([*CU124_ARCHS, "compute_90"], (12, 0), "compute_90 (PTX, compiled by the driver at first use)"),
        (["sm_90a", "compute_90a"], (12, 0), None),  # arch-specific code runs on exactly 9.0
        (["sm_90a"], (9, 0), "sm_90a"),
        (["sm_80", "sm_86"], (8, 9), "sm_80"),  # same major, lower minor
        (["sm_86"], (8, 0), None),  # a higher minor does not run on a lower one
        (["sm_120"], (12, 1), "sm_120"),
        (["compute_120"], (10, 0), None),  # PTX is compiled forward, never back
    ],
)
def test_kernels_for(archs: list[str], cc: tuple[int, int], runs: str | None) -> None:
    assert kernels_for(archs, cc) == runs


# ---- verdicts on faked facts ----

TORCH_OK = {"version": "2.7.1+cu128", "cuda": "12.8", "available": True, "capability": [12, 0],
            "arch_list": CU128_ARCHS, "conv_ms": 0.05, "conv_max_error": 1e-4}  # fmt: skip


def test_torch_without_kernels_for_the_gpu_says_which_build_to_install() -> None:
    facts = {**TORCH_OK, "version": "2.6.0+cu124", "cuda": "12.4", "arch_list": CU124_ARCHS}
    check = readiness.torch_verdict(facts, (12, 0))
    assert check.status == FAIL
    assert "no kernels for sm_120" in check.detail and "sm_90" in check.detail
    assert "sm_120" in check.fix and "whl/cu128" in check.fix


def test_torch_lines() -> None:
    ok = readiness.torch_verdict(TORCH_OK, (12, 0))
    assert ok.status == OK and "sm_120" in ok.detail and "convolution 0.050 ms" in ok.detail and not ok.fix
    cpu = readiness.torch_verdict({"version": "2.7.1+cpu", "cuda": None, "available": False}, (12, 0))
    assert cpu.status == FAIL and "CPU-only" in cpu.detail
    broken = readiness.torch_verdict({**TORCH_OK, "conv_error": "RuntimeError: CUDA error: no kernel image is available"},
                                     (12, 0))  # fmt: skip
    assert broken.status == FAIL and "no kernel image" in broken.detail and "cu128" in broken.fix
    wrong = readiness.torch_verdict({**TORCH_OK, "conv_max_error": 3.0}, (12, 0))
    assert wrong.status == FAIL and "disagrees" in wrong.detail


ORT_OK = {"version": "1.22.0", "available": ["CUDAExecutionProvider", "CPUExecutionProvider"],
          "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "run_ms": 0.08, "max_error": 1e-5}  # fmt: skip


def test_an_onnxruntime_session_on_the_cpu_provider_only_is_a_failure() -> None:
    check = readiness.onnxruntime_verdict({**ORT_OK, "providers": ["CPUExecutionProvider"]}, (12, 0))
    assert check.status == FAIL
    assert "fell back to CPUExecutionProvider" in check.detail and "did not attach" in check.detail
    assert "cuDNN" in check.fix


def test_onnxruntime_lines() -> None:
    assert readiness.onnxruntime_verdict(ORT_OK, (12, 0)).status == OK
    cpu_build = readiness.onnxruntime_verdict({"version": "1.22.0", "available": ["CPUExecutionProvider"]}, (12, 0))
    assert cpu_build.status == MISSING and "onnxruntime-gpu" in cpu_build.fix
    refused = readiness.onnxruntime_verdict(
        {**ORT_OK, "session_error": "This session contains graph nodes that are assigned to the default CPU EP, "
                                    "but fallback to CPU EP has been explicitly disabled by the user."}, (12, 0))  # fmt: skip
    assert refused.status == FAIL and "default CPU EP" in refused.detail
    no_kernel = readiness.onnxruntime_verdict(
        {**ORT_OK, "run_error": "CUDA error cudaErrorNoKernelImageForDevice:no kernel image is available"}, (12, 0))
    assert no_kernel.status == FAIL and "sm_120" in no_kernel.fix and "26181" in no_kernel.fix


def test_tensorrt_too_old_for_blackwell() -> None:
    check = readiness.tensorrt_verdict({"version": "10.3.0.26", "builder": True, "messages": []}, (12, 0))
    assert check.status == FAIL and "does not support compute capability 12.0" in check.detail
    assert "tensorrt>=10.8" in check.fix


def test_tensorrt_lines() -> None:
    assert readiness.tensorrt_verdict({"version": "10.8.0.43", "builder": True}, (12, 0)).status == OK
    assert readiness.tensorrt_verdict({"version": "10.3.0.26", "builder": True}, (9, 0)).status == OK  # fine on Hopper
    missing = readiness.tensorrt_verdict(None, (12, 0))
    assert missing.status == MISSING and "rtmon[tensorrt]" in missing.fix and "10.8" in missing.fix
    refused = readiness.tensorrt_verdict({"version": "10.9.0", "builder": False, "messages": ["Unsupported SM"]}, (12, 0))
    assert refused.status == FAIL and "Unsupported SM" in refused.detail


H200 = GpuInfo(0, "NVIDIA H200", "570.133.20", 143771.0, "9.0")
RTX_OK = {"version": "1.7.1.116", "validity": "VALID", "diagnostics": [], "first_ms": 850.0, "run_ms": 0.02,
          "max_error": 1e-6}  # fmt: skip
H200_REFUSAL = ("The engine cannot run on this GPU, which has compute capability 9.0. Supported compute capabilities: "
                "8.0 8.6 8.9 12.0 12.1 >12.0")  # fmt: skip


def test_tensorrt_rtx_installed_on_a_datacenter_gpu_cannot_run_and_says_which_tensorrt_can() -> None:
    facts = {"version": "1.7.1.116", "validity": "INVALID", "diagnostics": ["unsupported_cc"], "refusal": H200_REFUSAL}
    check = readiness.tensorrt_rtx_verdict(facts, (9, 0), "NVIDIA H200")
    assert check.status == FAIL and check.name == "tensorrt-rtx"
    assert "TensorRT-RTX 1.7.1.116 is installed but cannot run on compute capability 9.0" in check.detail
    assert H200_REFUSAL in check.detail
    assert "TensorRT 10/11" in check.fix and "rtmon[tensorrt]" in check.fix


def test_tensorrt_rtx_lines() -> None:
    ok = readiness.tensorrt_rtx_verdict(RTX_OK, (12, 0), RTX_5070.name)
    assert ok.status == OK and "ran on this GPU" in ok.detail and not ok.fix
    missing = readiness.tensorrt_rtx_verdict(None, (12, 0), RTX_5070.name)
    assert missing.status == MISSING and missing.fix == "pip install 'rtmon[tensorrt-rtx]'"
    not_for_it = readiness.tensorrt_rtx_verdict(None, (9, 0), "NVIDIA H200")
    assert not_for_it.status == MISSING and not not_for_it.fix and "GeForce/RTX" in not_for_it.detail
    invalid = readiness.tensorrt_rtx_verdict({**RTX_OK, "validity": "INVALID", "diagnostics": ["old_cuda_driver"]},
                                             (12, 0), RTX_5070.name)  # fmt: skip
    assert invalid.status == FAIL and "old_cuda_driver" in invalid.detail and "driver" in invalid.fix
    failed = readiness.tensorrt_rtx_verdict({**RTX_OK, "run_error": "RuntimeError: execute_async_v3 returned False"},
                                            (8, 9), "NVIDIA GeForce RTX 4090")  # fmt: skip
    assert failed.status == FAIL and "execute_async_v3" in failed.detail
    wrong = readiness.tensorrt_rtx_verdict({**RTX_OK, "max_error": 0.5}, (12, 0), RTX_5070.name)
    assert wrong.status == FAIL and "disagrees" in wrong.detail


@pytest.mark.parametrize(("name", "cc", "fits"), [
    ("NVIDIA GeForce RTX 5070", (12, 0), "tensorrt-rtx"),
    ("NVIDIA GeForce RTX 4090", (8, 9), "tensorrt-rtx"),
    ("NVIDIA RTX A6000", (8, 6), "tensorrt-rtx"),  # a workstation card
    ("NVIDIA H200", (9, 0), "tensorrt"),
    ("NVIDIA A100-SXM4-80GB", (8, 0), "tensorrt"),
    ("NVIDIA L40S", (8, 9), "tensorrt"),  # Ada, but a datacenter GPU
    ("NVIDIA A10", (8, 6), "tensorrt"),
    ("NVIDIA GeForce GTX 1080", (6, 1), "tensorrt"),
    ("", None, None),
])
def test_which_tensorrt_fits_the_gpu(name, cc, fits) -> None:
    runtime, why = readiness.tensorrt_fit(name, cc)
    assert runtime == fits and why


def test_the_doctor_says_which_tensorrt_fits_and_whether_it_runs_here() -> None:
    h200 = doctor._tensorrt_fit(H200, [Check("tensorrt", MISSING, "TensorRT is not installed", "pip install 'rtmon[tensorrt]'"),
                                       Check("tensorrt-rtx", FAIL, "cannot run on compute capability 9.0", "…")])  # fmt: skip
    assert h200["runtime"] == "tensorrt" and "datacenter GPU" in h200["detail"]
    assert h200["status"] == MISSING and h200["state"] == "not installed: pip install 'rtmon[tensorrt]'"
    rtx = doctor._tensorrt_fit(RTX_5070, [Check("tensorrt-rtx", OK, "ran")])
    assert rtx["runtime"] == "tensorrt-rtx" and rtx["state"] == "installed and runs here"
    none = doctor._tensorrt_fit(None, [])
    assert none["runtime"] is None and none["status"] is None


def test_trt_rtx_is_not_offered_where_its_readiness_line_failed(monkeypatch) -> None:
    from rtmon import engines as registry

    monkeypatch.setattr(registry, "_cuda_available", lambda: True)  # an H200 with TensorRT-RTX installed
    monkeypatch.setattr(registry, "unavailable_reason", lambda name: None)
    rows, optimized = doctor._engines([Check("gpu", OK, ""), Check("tensorrt-rtx", FAIL, "cannot run on 9.0", "use TensorRT 10/11")])
    by_name = {row["name"]: row for row in rows}
    assert "tensorrt-rtx does not work on this GPU: use TensorRT 10/11" in by_name["trt-rtx"]["detail"]
    assert optimized != "trt-rtx"


def test_no_gpu_and_driver_lines() -> None:
    none = readiness.gpu_verdict(None, "no NVIDIA GPU visible to NVML (NVML Shared Library Not Found)")
    assert none.status == MISSING and "NVML" in none.detail and "driver" in none.fix
    assert readiness.driver_verdict(None, None, None).status == SKIP
    old = readiness.driver_verdict(RTX_5070, "12.4", "12.8")
    assert old.status == FAIL and "needs CUDA 12.8" in old.detail and "R570" in old.fix
    behind = readiness.driver_verdict(GpuInfo(0, "NVIDIA H100", "550.1", 80000.0, "9.0"), "12.4", "13.0")
    assert behind.status == FAIL and "CUDA 13.0" in behind.fix
    assert readiness.driver_verdict(RTX_5070, "12.9", "12.8").status == OK


def test_triton_failure_names_the_fix() -> None:
    check = readiness.triton_verdict({"error": "RuntimeError: ptxas fatal: Value 'sm_120' is not defined"}, (12, 0))
    assert check.status == FAIL and "sm_120" in check.detail and "Triton 3.3" in check.fix
    assert readiness.triton_verdict({"triton": "3.3.1", "compile_s": 7.5, "max_error": 0.0}, (12, 0)).status == OK


# ---- every check bounded, none can take the doctor down ----


def test_a_probe_that_hangs_is_cut_off_with_everything_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(ProbeFailed, match=r"timed out after 1 s"):
        probes.run_json([sys.executable, "-c", code], 1.0)
    assert time.monotonic() - t0 < 10
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not running(grandchild)  # gone with the probe (compile workers must not outlive it)


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("import os; os.abort()", "crashed (SIGABRT)"),
        ("import sys; sys.exit(3)", "exited with code 3"),
        ("print('not json')", "gave no answer"),
    ],
)
def test_a_probe_that_crashes_or_talks_nonsense_is_a_failure(code: str, why: str) -> None:
    with pytest.raises(ProbeFailed, match=re.escape(why)):
        probes.run_json([sys.executable, "-c", code], 20)


def test_a_probe_answers_with_its_last_line() -> None:
    assert probes.run_json([sys.executable, "-c", "print('noise'); print('{\"a\": 1}')"], 20) == {"a": 1}


@pytest.fixture
def blackwell(monkeypatch: pytest.MonkeyPatch):
    """An RTX 5070 with a driver for CUDA 12.9, torch/onnxruntime/TensorRT installed; the probes'
    answers come from `answers` (a dict, or an exception to raise)."""
    answers: dict[str, object] = {}

    def fake_probe(name: str) -> dict:
        answer = answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(readiness.gpu, "info", lambda index=0: RTX_5070)
    monkeypatch.setattr(readiness.gpu, "unavailable_reason", lambda: None)
    monkeypatch.setattr(readiness.gpu, "cuda_driver_version", lambda: "12.9")
    monkeypatch.setattr(readiness, "installed", lambda module: True)
    monkeypatch.setattr(readiness, "run_probe", fake_probe)
    return answers


def test_every_line_is_there_and_failures_stay_on_their_line(blackwell) -> None:
    blackwell.update(
        torch=TORCH_OK,
        triton=ProbeFailed("timed out after 180 s"),
        onnxruntime=RuntimeError("segfault-ish surprise"),
        tensorrt={"version": "10.3.0", "builder": True},
        **{"tensorrt-rtx": RTX_OK},
    )
    checks = {c.name: c for c in readiness.run_checks()}
    assert list(checks) == ["gpu", "driver", "torch", "triton", "onnxruntime", "tensorrt", "tensorrt-rtx"]
    assert checks["tensorrt-rtx"].status == OK
    assert checks["gpu"].status == OK and checks["driver"].status == OK and checks["torch"].status == OK
    assert checks["triton"].status == FAIL and checks["triton"].detail == "failed: the check timed out after 180 s"
    assert checks["onnxruntime"].status == FAIL and "segfault-ish surprise" in checks["onnxruntime"].detail
    assert checks["tensorrt"].status == FAIL
    assert all(c.seconds is not None for c in checks.values())
    assert not readiness.ready(list(checks.values()))


def test_triton_is_not_probed_when_torch_cannot_run(blackwell) -> None:
    blackwell.update(torch={**TORCH_OK, "arch_list": CU124_ARCHS}, onnxruntime=ORT_OK,
                     tensorrt={"version": "10.8.0", "builder": True})  # fmt: skip
    checks = {c.name: c for c in readiness.run_checks()}
    assert checks["torch"].status == FAIL and checks["triton"].status == SKIP
    assert checks["onnxruntime"].status == OK and checks["tensorrt"].status == OK


def test_engines_whose_runtime_fails_on_this_gpu_are_not_offered() -> None:
    torch_fails = [Check("gpu", OK, ""), Check("torch", FAIL, "no kernels for sm_120", "install a cu128 build")]
    rows, optimized = doctor._engines(torch_fails)
    by_name = {row["name"]: row for row in rows}
    assert not by_name["torch-fp32"]["available"] and "torch does not work on this GPU" in by_name["torch-fp32"]["detail"]
    assert by_name["ort-cpu"]["available"] and optimized == "ort-cpu"


# ---- the engines: no silent CPU fallback ----


def test_an_ort_session_without_its_gpu_provider_stops_the_engine() -> None:
    with pytest.raises(UserError, match="fell back to CPUExecutionProvider: CUDAExecutionProvider did not start"):
        require_providers("ort-cuda", "cuda", ["CPUExecutionProvider"])
    with pytest.raises(UserError, match="CUDAExecutionProvider did not start"):  # TensorRT up, its CUDA fallback not
        require_providers("ort-trt", "tensorrt", ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(UserError, match="TensorrtExecutionProvider did not start"):
        require_providers("ort-trt", "tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    require_providers("ort-cuda", "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    require_providers("ort-trt", "tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])


# ---- the real command ----


def test_doctor_json_has_the_documented_shape(rtmon_env) -> None:
    result = run_rtmon(["doctor", "--json"], rtmon_env)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert set(data) == {"schema", "rtmon", "python", "gpu", "packages", "checks", "ready", "engines", "optimized",
                         "tensorrt_fit"}
    assert data["schema"] == 1 and isinstance(data["ready"], bool)
    assert [c["name"] for c in data["checks"]] == ["gpu", "driver", "torch", "triton", "onnxruntime", "tensorrt",
                                                   "tensorrt-rtx"]
    assert set(data["tensorrt_fit"]) == {"runtime", "detail", "status", "state"}
    for check in data["checks"]:
        assert set(check) == {"name", "status", "detail", "fix", "seconds"}
        assert check["status"] in {OK, FAIL, MISSING, SKIP}
        assert check["status"] == OK or check["detail"]
    assert {"name", "available", "detail"} == set(data["engines"][0])
    if data["gpu"] is None:  # this CI machine: the GPU checks say why they did not run
        assert not data["ready"] and data["checks"][0]["status"] == MISSING
        assert {c["status"] for c in data["checks"][1:5]} == {SKIP}
        assert data["tensorrt_fit"]["runtime"] is None


def test_doctor_shows_the_readiness_table(rtmon_env) -> None:
    result = run_rtmon(["doctor"], rtmon_env)
    assert result.returncode == 0
    assert "readiness on this GPU" in result.stdout and "onnxruntime" in result.stdout
    assert "TensorRT for this GPU: " in result.stdout and "tensorrt-rtx" in result.stdout
