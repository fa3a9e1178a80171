"""Native TensorRT (`trt`): an FP16 plan built from the cached ONNX export, run on device buffers.

With `engine.precision = "int8"` the plan is built from the model's INT8 Q/DQ ONNX instead
(`rtmon.quantize`, target `tensorrt`: the same calibration frames, method and layers kept in FP32
as `ort-cpu-int8`, signed symmetric activations, as TensorRT requires). That is explicit
quantization: the Q/DQ nodes say what runs in INT8, no calibrator runs in TensorRT. The network
is created strongly typed and no precision flag is set, as TensorRT's documentation asks for
explicit quantization (and TensorRT 11 no longer has BuilderFlag.INT8): the layers outside the
Q/DQ pairs run in the ONNX's own FP32.

The plan and the builder's timing cache are kept in `engines/trt/`. A plan is only valid for
the GPU model, compute capability and TensorRT version that built it, and for one model,
precision, input size and batch, so all of these are in its file name; the timing cache
depends only on the GPU and TensorRT, so it is shared by every model built there and makes
rebuilds fast. A plan TensorRT refuses to load (corrupt, or from another GPU or version)
is rebuilt with a notice.

Buffers are torch CUDA tensors and the plan runs on the engine's torch stream
(`execute_async_v3`), which keeps this file free of a second CUDA binding.

TensorRT could not be installed on the machines this project was tested on: this engine's
pure-Python parts are tested, the engine itself has not been run in our tests.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from rtmon.engines.gpu_common import GpuEngine, Runner
from rtmon.errors import UserError
from rtmon.files import atomic_path
from rtmon.models import ModelRef, export_onnx
from rtmon.quantize import quantization_key, quantized_onnx

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'rtmon[tensorrt]' (tensorrt>=10 fetches NVIDIA's libraries at install time, so it needs "
    "internet; or use NVIDIA's TensorRT container)"
)


def file_slug(text: str) -> str:
    """`NVIDIA GeForce RTX 5070` → `nvidia-geforce-rtx-5070`: a GPU name or version in a cache file's name."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized TensorRT plan depends on."""

    gpu: str
    compute_capability: tuple[int, int]
    trt_version: str
    model_hash: str
    precision: str
    imgsz: int
    batch: int = 1
    quantization: str = ""  # the QuantKey digest of an INT8 plan's Q/DQ ONNX

    @property
    def device_part(self) -> str:
        major, minor = self.compute_capability
        return f"{file_slug(self.gpu)}-sm{major}{minor}-trt{file_slug(self.trt_version)}"

    def plan_path(self, engines_dir: Path, stem: str) -> Path:
        quantized = f"-q{self.quantization[:12]}" if self.quantization else ""
        name = f"{stem}-{self.model_hash[:12]}-{self.imgsz}-{self.precision}{quantized}-b{self.batch}-{self.device_part}.plan"
        return Path(engines_dir) / "trt" / name

    def timing_cache_path(self, engines_dir: Path) -> Path:
        return Path(engines_dir) / "trt" / f"timing-{self.device_part}.cache"


def resolve_shape(shape: tuple[int, ...], batch: int, imgsz: int) -> tuple[int, ...]:
    """A binding's shape with dynamic dims filled: batch first, image size for the NCHW spatial
    dims of a 4-D input. Any other dynamic dimension is an error (rtmon exports fixed shapes)."""
    out = list(shape)
    for i, dim in enumerate(out):
        if dim >= 0:
            continue
        if i == 0:
            out[i] = batch
        elif len(out) == 4 and i in (2, 3):
            out[i] = imgsz
        else:
            raise ValueError(f"dimension {i} of shape {tuple(shape)} is dynamic; rtmon needs fixed shapes")
    return tuple(out)


def build_flags(trt, precision: str) -> tuple[int, list]:
    """(network creation flags, builder flags) of a plan of `precision`: FP16 kernels allowed for
    fp16; for int8 a strongly typed network and no precision flag (explicit quantization)."""
    if precision == "int8":
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), []
    return 0, [trt.BuilderFlag.FP16]  # explicit batch is the only mode in TensorRT 10


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(f"engine: trt: TensorRT is not installed; {INSTALL_HINT}") from None
    return trt


class TensorRtEngine(GpuEngine):
    backend = "tensorrt"

    def __init__(self, name: str, model: ModelRef, settings) -> None:
        self.precision = settings.engine.precision
        self._int8 = settings.int8
        super().__init__(name, model, settings)
        self._trt = None
        self._logger = None
        self._keep: list = []  # engines and contexts: alive as long as their runners

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32  # the plan takes the ONNX graph's float input; FP16 or INT8 is inside

    def _key(self, batch: int) -> PlanKey:
        trt = self._trt
        props = torch.cuda.get_device_properties(self._device)
        return PlanKey(
            props.name, (props.major, props.minor), trt.__version__, self.model_ref.sha256, self.precision,
            self._imgsz, batch, self._quantization(batch),
        )

    def _quantization(self, batch: int) -> str:
        """The digest of the Q/DQ ONNX an INT8 plan is built from ("" for fp16)."""
        if self.precision != "int8":
            return ""
        return quantization_key(self.model_ref, self._engines_dir, self._imgsz, self._int8, "tensorrt", batch).digest

    def _onnx_file(self, batch: int) -> Path:
        """The ONNX a plan is built from: the FP32 export, or for int8 its Q/DQ quantization."""
        if self.precision != "int8":
            return export_onnx(self.model_ref, self._engines_dir, self._imgsz, "fp32", batch)
        quantized = quantized_onnx(self.model_ref, self._engines_dir, self._imgsz, self._int8, "tensorrt", batch)
        for note in quantized.notes:
            self.note(note)
        return quantized.path

    def _build(self, batch: int) -> Runner:
        self._trt = self._trt or _trt()
        self._logger = self._logger or self._trt.Logger(self._trt.Logger.ERROR)
        key = self._key(batch)
        plan_path = key.plan_path(self._engines_dir, self.model_ref.path.stem)
        engine = None
        if plan_path.is_file():
            engine = self._deserialize(plan_path.read_bytes())
            if engine is None:
                self.note(f"rebuilt {plan_path.name}: TensorRT could not load it (corrupt, or another GPU/version)")
                log.warning("TensorRT plan %s cannot be loaded here; rebuilding it", plan_path)
        if engine is None:
            engine = self._deserialize(self._build_plan(key, plan_path))
            if engine is None:
                raise UserError(f"engine: trt: TensorRT cannot load the plan it just built ({plan_path})")
        return self._runner(engine, batch)

    def _deserialize(self, plan: bytes):
        try:
            return self._trt.Runtime(self._logger).deserialize_cuda_engine(plan)
        except Exception:
            return None

    def _build_plan(self, key: PlanKey, plan_path: Path) -> bytes:
        trt = self._trt
        onnx_file = self._onnx_file(key.batch)
        network_flags, builder_flags = build_flags(trt, key.precision)
        builder = trt.Builder(self._logger)
        network = builder.create_network(network_flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_file.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"engine: trt: TensorRT cannot parse {onnx_file.name} ({errors})")
        config = builder.create_builder_config()
        for flag in builder_flags:
            config.set_flag(flag)
        timing_path = key.timing_cache_path(self._engines_dir)
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        if not config.set_timing_cache(timing, ignore_mismatch=False):
            self.note("ignored a timing cache from another GPU or TensorRT version")
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise UserError(f"engine: trt: TensorRT failed to build a plan from {onnx_file.name}")
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(plan_path) as tmp:
            tmp.write_bytes(bytes(plan))
        with atomic_path(timing_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        self.note(f"built {plan_path.name}")
        return bytes(plan)

    def _runner(self, engine, batch: int) -> Runner:
        context = engine.create_execution_context()
        self._keep += [engine, context]
        return bind_tensors(self._trt, engine, context, batch, self._imgsz, self._device, self.info.name)

    def _release(self) -> None:
        self._keep.clear()


def bind_tensors(trt, engine, context, batch: int, imgsz: int, device: torch.device, name: str) -> Runner:
    """A runner over device tensors bound once to the engine's one input and one output, run on
    the current torch stream. `trt` is the TensorRT module (`tensorrt` or `tensorrt_rtx`, whose
    execution API is the same); the tensors' element types are the engine's."""
    inputs, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        tensor_name = engine.get_tensor_name(i)
        shape = resolve_shape(tuple(engine.get_tensor_shape(tensor_name)), batch, imgsz)
        dtype = torch.from_numpy(trt.nptype(engine.get_tensor_dtype(tensor_name))(0).reshape(1)).dtype
        tensor = torch.zeros(shape, dtype=dtype, device=device)
        if engine.get_tensor_mode(tensor_name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(tensor_name, shape)
            inputs[tensor_name] = tensor
        else:
            outputs[tensor_name] = tensor
        context.set_tensor_address(tensor_name, tensor.data_ptr())
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"engine: {name}: expected one input and one output, got {list(inputs)} → {list(outputs)}")
    (static_in,), (static_out,) = inputs.values(), outputs.values()

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"{name}: execution failed")
        return static_out

    return run
