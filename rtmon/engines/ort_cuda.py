"""ONNX Runtime on the GPU: the CUDA execution provider (`ort-cuda`, `ort-cuda-fp32`) and,
as an option of the same engine, ONNX Runtime's TensorRT execution provider (`ort-trt`).

Input and output are bound once to device tensors (IO binding), so a run copies nothing
between host and device, and the CUDA provider records the whole model as a CUDA graph on
its first run and replays it afterwards; CUDA graphs need exactly those fixed addresses.
ONNX Runtime computes on the engine's own stream (`user_compute_stream`), so the shared
torch letterbox and candidate graphs (`GpuEngine`) and the model run in order without extra
synchronization.

The ONNX export is cached in `engines/` (see `rtmon.models.export_onnx`); the TensorRT
provider keeps its engine and timing caches in `engines/ort-trt/`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from rtmon.engines.gpu_common import GpuEngine, Runner
from rtmon.errors import UserError
from rtmon.models import ModelRef, export_onnx

log = logging.getLogger(__name__)

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ONNX_TYPES = {"tensor(float16)": (np.float16, torch.float16), "tensor(float)": (np.float32, torch.float32)}


def provider_options(provider: str, device_id: int, stream: int, precision: str, cache_dir: Path) -> list:
    """The providers list for an InferenceSession: the chosen provider first, configured."""
    common = {"device_id": str(device_id), "user_compute_stream": str(stream)}
    cuda = ("CUDAExecutionProvider", {**common, "enable_cuda_graph": "1"})
    if provider == "cuda":
        return [cuda]
    cache = str(cache_dir)
    trt = {
        **common,
        "trt_fp16_enable": "1" if precision == "fp16" else "0",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_cuda_graph_enable": "1",
    }
    # Nodes TensorRT cannot take fall back to CUDA; without the graph flag there, since a
    # CUDA graph needs every node on one provider.
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", common)]


def require_providers(engine: str, provider: str, attached: list[str]) -> None:
    """UserError unless the session runs on the GPU as asked: `provider`'s execution provider
    first and, behind TensorRT, the CUDA provider for the nodes TensorRT does not take.

    ONNX Runtime does not fail when a GPU provider cannot start (missing CUDA, cuDNN or
    TensorRT libraries): it warns and runs everything on its CPU provider. Without this check
    such an engine would be a slow "GPU" engine. Single nodes on the CPU inside a working CUDA
    session are refused by ONNX Runtime itself for `ort-cuda` (its CUDA graph needs every
    compute node on the CUDA provider); behind TensorRT, a node that neither TensorRT nor CUDA
    takes would still run on the CPU, which this check cannot see.
    """
    wanted = PROVIDERS[provider]
    needed = [wanted] + (["CUDAExecutionProvider"] if provider == "tensorrt" else [])
    if attached[:1] == [wanted] and all(p in attached for p in needed):
        return
    missing = ", ".join(p for p in needed if p not in attached) or wanted
    raise UserError(
        f"engine: {engine}: ONNX Runtime fell back to {', '.join(attached) or 'no provider'}: {missing} did not start "
        "(check the CUDA/cuDNN/TensorRT libraries; `rtmon doctor` says which)"
    )


class OrtCudaEngine(GpuEngine):
    def __init__(self, name: str, model: ModelRef, settings, precision: str = "fp16", provider: str = "cuda",
                 pipelined: bool | None = None) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {tuple(PROVIDERS)}, not {provider!r}")
        self.precision = precision
        self._provider = provider
        self.backend = f"onnxruntime {PROVIDERS[provider]}"
        super().__init__(name, model, settings, pipelined)
        self._sessions: list = []

    @property
    def _onnx_precision(self) -> str:
        # TensorRT's provider lowers an FP32 graph to FP16 itself (trt_fp16_enable).
        return "fp32" if self._provider == "tensorrt" else self.precision

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self._onnx_precision == "fp16" else torch.float32

    @property
    def _trt_cache(self) -> Path:
        return self._engines_dir / "ort-trt" / f"{self.model_ref.path.stem}-{self.model_ref.short_hash}-{self._imgsz}"

    def _build(self, batch: int) -> Runner:
        path = export_onnx(self.model_ref, self._engines_dir, self._imgsz, self._onnx_precision, batch)
        try:
            session = self._session(path)
        except UserError:
            raise
        except Exception as exc:
            # A cache that passes the ONNX checker can still be one ONNX Runtime rejects, or a
            # TensorRT engine cache from another GPU/version: rebuild once, with a notice.
            self.note(f"rebuilt the cached model after ONNX Runtime rejected it ({type(exc).__name__})")
            log.warning("%s: ONNX Runtime could not load %s (%s); rebuilding the cache", self.info.name, path, exc)
            path.unlink(missing_ok=True)
            shutil.rmtree(self._trt_cache, ignore_errors=True)
            path = export_onnx(self.model_ref, self._engines_dir, self._imgsz, self._onnx_precision, batch)
            try:
                session = self._session(path)
            except Exception as again:
                raise UserError(f"engine: {self.info.name}: ONNX Runtime cannot load {path} ({again})") from None
        self._sessions.append(session)
        return bind_io(session, self._device)

    def _session(self, path: Path):
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the pip packages torch brought, if not loaded yet
        self._trt_cache.mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        wanted = PROVIDERS[self._provider]
        providers = provider_options(
            self._provider, self._device.index or 0, torch.cuda.current_stream().cuda_stream, self.precision, self._trt_cache
        )
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            if "have not been partitioned" in str(exc):
                # The CUDA graph needs every compute node on the CUDA provider; ONNX Runtime
                # refuses a session that would run some on the CPU (no cache rebuild helps).
                raise UserError(f"engine: {self.info.name}: ONNX Runtime would run some of the model on the CPU, "
                                f"not on {wanted} ({exc})") from None  # fmt: skip
            raise
        require_providers(self.info.name, self._provider, session.get_providers())
        return session

    def _release(self) -> None:
        self._sessions.clear()


def bind_io(session, device: torch.device) -> Runner:
    """A runner over device tensors bound once to the session's single input and output."""
    import onnxruntime as ort

    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    if inp.type not in _ONNX_TYPES or out.type not in _ONNX_TYPES:
        raise UserError(f"engine: unexpected ONNX types {inp.type} → {out.type}")
    in_np, in_torch = _ONNX_TYPES[inp.type]
    out_np, out_torch = _ONNX_TYPES[out.type]
    static_in = torch.zeros(inp.shape, dtype=in_torch, device=device)
    static_out = torch.empty(out.shape, dtype=out_torch, device=device)
    binding = session.io_binding()
    # Return as soon as the work is queued on the engine's stream, instead of waiting for it:
    # the next frame's upload and letterbox are queued behind it without stalling the host.
    options = ort.RunOptions()
    options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    index = device.index or 0
    binding.bind_input(inp.name, "cuda", index, in_np, list(static_in.shape), static_in.data_ptr())
    binding.bind_output(out.name, "cuda", index, out_np, list(static_out.shape), static_out.data_ptr())

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        session.run_with_iobinding(binding, options)
        return static_out

    return run
