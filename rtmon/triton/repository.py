"""`rtmon export --triton DIR`: a standard Triton model repository for the current model.

    DIR/<model name>/config.pbtxt       the model configuration (Triton's ModelConfig protobuf)
    DIR/<model name>/1/model.onnx       the ONNX export, batch dimension open

A stock `tritonserver --model-repository DIR` loads it with the ONNX Runtime backend: FP16 on
the CUDA execution provider (`--precision fp32` for FP32; `--cpu` for CPU instances), a fixed
640×640 input (model.imgsz), dynamic batching up to `serve.max_batch` with preferred batch
sizes and a queue delay, and `--instances` model instances on every GPU of the host (or on
`--gpus`). `--tensorrt` adds ONNX Runtime's TensorRT accelerator (FP16, one engine for every
batch size up to the maximum, cached on the server). The same folder on every host behind a
load balancer scales out (docs/scaling.md).

The model is the network alone, as `rtmon serve` serves it: letterbox and NMS stay in the
client, rtmon's `triton` engine.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from rtmon.config import Settings
from rtmon.errors import UserError
from rtmon.models import ModelRef, export_onnx, load_yolo, resolve_model
from rtmon.triton import preferred_batch_sizes

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
TRT_WORKSPACE_BYTES = 1 << 30
TRT_CACHE = "/tmp/rtmon-trt-cache"  # on the server; one engine per model, GPU and TensorRT version


@dataclass(frozen=True)
class RepositoryOptions:
    precision: str = "fp16"
    instances: int = 1  # model instances per GPU (or in all, with cpu)
    gpus: tuple[int, ...] = ()  # () = every GPU the server sees
    cpu: bool = False  # CPU instances instead of GPU ones
    tensorrt: bool = False

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"export: --precision {self.precision}: choose one of {', '.join(PRECISIONS)}")
        if self.instances < 1:
            raise UserError("export: --instances must be at least 1")
        if self.cpu and (self.gpus or self.tensorrt):
            raise UserError("export: --cpu does not go with --gpus or --tensorrt")


def parse_gpus(text: str) -> tuple[int, ...]:
    """`--gpus 0,1` → (0, 1); empty → () (every GPU)."""
    try:
        return tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise UserError(f"export: --gpus {text}: expected GPU ids like 0,1") from None


@dataclass(frozen=True)
class OnnxInterface:
    """Names and element types of the export's one input and one output."""

    input_name: str
    input_fp16: bool
    output_name: str
    output_fp16: bool

    @classmethod
    def of(cls, path: Path) -> OnnxInterface:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
        (inp,), (out,) = inputs, graph.output
        fp16 = onnx.TensorProto.FLOAT16
        return cls(inp.name, inp.type.tensor_type.elem_type == fp16, out.name, out.type.tensor_type.elem_type == fp16)


def anchors(model: ModelRef, imgsz: int) -> int:
    """How many boxes the head predicts for an imgsz×imgsz input: one per cell of each stride's grid."""
    strides = load_yolo(model.path).model.stride.tolist()
    return sum((imgsz // int(s)) ** 2 for s in strides)


def model_config(settings: Settings, options: RepositoryOptions, onnx: OnnxInterface, outputs: tuple[int, int]):
    """The repository's ModelConfig message (tritonclient's model_config_pb2)."""
    from tritonclient.grpc import model_config_pb2 as mc

    size, max_batch = settings.model.imgsz, settings.serve.max_batch
    config = mc.ModelConfig(name=settings.triton.model, backend="onnxruntime", max_batch_size=max_batch,
                            default_model_filename="model.onnx")
    config.input.add(name=onnx.input_name, data_type=mc.TYPE_FP16 if onnx.input_fp16 else mc.TYPE_FP32, dims=[3, size, size])
    config.output.add(name=onnx.output_name, data_type=mc.TYPE_FP16 if onnx.output_fp16 else mc.TYPE_FP32, dims=list(outputs))
    config.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes(max_batch))
    config.dynamic_batching.max_queue_delay_microseconds = settings.serve.queue_delay_us
    kind = mc.ModelInstanceGroup.KIND_CPU if options.cpu else mc.ModelInstanceGroup.KIND_GPU
    group = config.instance_group.add(count=options.instances, kind=kind)
    group.gpus.extend(options.gpus)
    if options.tensorrt:
        def shape(batch: int) -> str:
            return f"{onnx.input_name}:{batch}x3x{size}x{size}"

        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters.update({
            "precision_mode": options.precision.upper(),
            "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"{TRT_CACHE}/{settings.triton.model}",
            # One engine for every batch the dynamic batcher forms, built once at load.
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(max(preferred_batch_sizes(max_batch), default=1)),
            "trt_profile_max_shapes": shape(max_batch),
        })
    return config


def export_repository(settings: Settings, repository: Path, options: RepositoryOptions) -> Path:
    """Write (or replace) the model's folder in `repository`; returns it. Nothing half-written
    is left behind: the folder is assembled beside its place and renamed into it."""
    options.check()
    if importlib.util.find_spec("tritonclient") is None:
        raise UserError("export: --triton needs tritonclient (Triton's model-config protobuf); pip install 'rtmon[serve]'")
    model = resolve_model(settings.model.name, Path(settings.paths.engines_dir))
    if model.notice:
        log.warning(model.notice)
    try:
        repository.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{settings.triton.model}-", dir=repository))
    except OSError as exc:
        raise UserError(f"export: cannot write to {repository} ({exc.strerror or exc})") from None
    try:
        onnx_file = export_onnx(model, Path(settings.paths.engines_dir), settings.model.imgsz, options.precision, dynamic=True)
        (staging / "1").mkdir()
        shutil.copy2(onnx_file, staging / "1" / "model.onnx")
        interface = OnnxInterface.of(onnx_file)
        config = model_config(settings, options, interface, (4 + len(model.class_names), anchors(model, settings.model.imgsz)))
        header = (
            f"# Written by `rtmon export --triton` for {model.label} (sha256 {model.sha256[:12]}), {options.precision}.\n"
            "# The network alone: letterboxed RGB NCHW in [0, 1] in, raw head output (4 + classes, anchors) out;\n"
            "# letterbox and NMS run in the client (rtmon's `triton` engine).\n"
        )
        (staging / "config.pbtxt").write_text(header + text_format.MessageToString(config))
        target = repository / settings.triton.model
        shutil.rmtree(target, ignore_errors=True)
        staging.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        staging.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
