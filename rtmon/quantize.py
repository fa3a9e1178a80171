"""INT8 post-training quantization of the ONNX export: calibration frames, the calibration reader,
the quantize call and the cache key, shared by `ort-cpu-int8` and by `trt` with
`engine.precision = "int8"`.

The FP32 ONNX export (`rtmon.models.export_onnx`) is quantized statically in ONNX's QDQ format:
a QuantizeLinear/DequantizeLinear pair on every quantized tensor, weights int8 per output
channel, activations per tensor with ranges measured on calibration frames by ONNX Runtime's
calibrators (min-max, entropy or percentile). The Q/DQ placement is the model's quantization;
each runtime turns it into integer kernels: ONNX Runtime's CPU provider fuses DQ → Conv → Q into
QLinearConv, TensorRT builds INT8 kernels from it (explicit quantization).

One calibration, two targets, which differ only in how activations are stored:

- `cpu`: unsigned, asymmetric activations. ONNX Runtime's x86 integer kernels multiply u8 by s8;
  with signed activations it runs float Conv between DequantizeLinear nodes instead (measured on
  the 2-core EPYC of 2026-12-01: 65 ms a frame against 16). The input is pinned to scale 1/255,
  zero point 0 and its QuantizeLinear removed, so the network takes the letterboxed frame's bytes
  as they are: the quantized value of pixel p/255 is p, exactly. Layers kept in FP32 for speed
  (`int8.fp32_layers`; docs/benchmarks/cpu-2026-12-01-int8/choice.md measured them): each SiLU
  becomes ONNX Runtime's fused float QuickGelu between a DequantizeLinear and a QuantizeLinear
  (`rtmon.int8_layers.fuse_silu`), and the stem convolution stays float (its 3 input channels
  make a poor integer GEMM); the input is then float, as FP32's is.
- `tensorrt`: signed, symmetric activations (TensorRT supports only zero point 0) on the inputs
  of convolutions and matrix products only, where TensorRT's documentation places Q/DQ so that
  it can fuse each convolution with its activation; float biases; float input.

Calibration frames are rendered by `rtmon.scene` from seeds `CALIBRATION_SEED_BASE` on: never
the sample clip's seed (7), nor the scenes the demo detector was trained (100000…100799) or
validated (900000…900049) on (rtmon/assets/demo/RECIPE.md), nor the validation scenes
`scripts/int8_choice.py` chose the defaults on (`VALIDATION_SEED_BASE` on). A user may give a
folder of images instead (`int8.calibration_dir`).

A quantized model is cached in `engines/int8/`, named by the digest of its `QuantKey` (model,
export settings, calibration set, method, layers kept in FP32, target, onnxruntime version and
this module's recipe); the key is also written into the model's metadata and checked on use.
A cached file that does not load or whose key differs is rebuilt with a notice, as every cache
of rtmon is: it is derived data, and rebuilding it takes seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmon.engines.prepost import letterbox_cpu, to_nchw
from rtmon.errors import UserError
from rtmon.files import atomic_path, sha256_of
from rtmon.int8_layers import fp32_nodes, fuse_silu
from rtmon.models import OPSET, ModelRef, export_onnx
from rtmon.scene import SAMPLE_SIZE, SAMPLE_VERSION, render_scene

log = logging.getLogger(__name__)

CALIBRATION_SEED_BASE = 500_000
VALIDATION_SEED_BASE = 600_000  # scripts/int8_choice.py measures the choices on these scenes
FRAMES_PER_SCENE = 4
# Frames 0, 60, 120 and 180 of a scene: two seconds apart, objects have moved, turned and
# resized between them, and the light has drifted.
SCENE_STRIDE = 60
# Bump when the quantization below changes what it writes: cached models of another recipe are rebuilt.
RECIPE = 2
# Calibration frames held by a calibrator at a time: the histogram calibrators keep every
# activation of every frame they hold (about 250 MB a frame for yolo11n at 640).
CALIBRATION_WINDOW = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
INPUT_SCALE = np.float32(1 / 255)
TARGETS = ("cpu", "tensorrt")
# TensorRT's Q/DQ placement: the inputs of weighted operations only, so that it fuses each
# convolution with the activation after it (its documentation's recommendation).
TENSORRT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def scene_seeds(base: int, frames: int) -> list[int]:
    """The scenes that `frames` frames are taken from, FRAMES_PER_SCENE each."""
    return [base + i for i in range(-(-frames // FRAMES_PER_SCENE))]


def scene_frames(base: int, frames: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`frames` rendered frames (BGR, label rows) of the scenes from seed `base` on, at the
    sample clip's size."""
    left = frames
    for seed in scene_seeds(base, frames):
        count = min(FRAMES_PER_SCENE, left)
        yield from render_scene(seed, (count - 1) * SCENE_STRIDE + 1, SAMPLE_SIZE, SCENE_STRIDE)
        left -= count


@dataclass(frozen=True)
class SceneCalibration:
    """Calibration frames rendered from rtmon's synthetic scenes."""

    frames: int
    base: int = CALIBRATION_SEED_BASE

    @property
    def seeds(self) -> list[int]:
        return scene_seeds(self.base, self.frames)

    @property
    def identity(self) -> str:
        w, h = SAMPLE_SIZE
        return (f"scenes-{SAMPLE_VERSION}:seeds {self.base}+{len(self.seeds)}, {self.frames} frames, "
                f"every {SCENE_STRIDE}th, {w}x{h}")

    @property
    def label(self) -> str:
        seeds = self.seeds
        return f"{self.frames} frames of scenes {seeds[0]}…{seeds[-1]}"

    def images(self) -> Iterator[np.ndarray]:
        for image, _ in scene_frames(self.base, self.frames):
            yield image


@dataclass(frozen=True)
class FolderCalibration:
    """Calibration frames from a user's folder: its first images by name, identified by content."""

    folder: Path
    files: tuple[tuple[str, str], ...]  # (name, sha256)

    @property
    def identity(self) -> str:
        digest = hashlib.sha256("\n".join(f"{name} {sha}" for name, sha in self.files).encode()).hexdigest()
        return f"folder:{len(self.files)} images, sha256 {digest}"

    @property
    def label(self) -> str:
        return f"{len(self.files)} images of {self.folder}"

    def images(self) -> Iterator[np.ndarray]:
        for name, _ in self.files:
            path = self.folder / name
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"int8.calibration_dir: {path} is not an image OpenCV can read")
            yield image


Calibration = SceneCalibration | FolderCalibration


def calibration_of(int8_settings) -> Calibration:
    """The calibration set `int8_settings` asks for; a UserError for a folder that is missing,
    unreadable or holds no images."""
    if not int8_settings.calibration_dir:
        return SceneCalibration(int8_settings.calibration_frames)
    folder = Path(int8_settings.calibration_dir)
    if not folder.is_dir():
        raise UserError(f"int8.calibration_dir: {folder} is not a folder")
    try:
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        chosen = names[: int8_settings.calibration_frames]
        files = tuple((name, sha256_of(folder / name)) for name in chosen)
    except OSError as exc:
        raise UserError(f"int8.calibration_dir: cannot read {folder} ({exc.strerror or exc})") from None
    if not files:
        raise UserError(f"int8.calibration_dir: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return FolderCalibration(folder, files)


def _calibration_reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        """Calibration frames letterboxed as every engine letterboxes them, as the FP32 network's
        input, `batch` at a time (an export of a larger batch takes them in groups; the last
        group wraps around to the first frames). ONNX Runtime reads the groups window by window
        (`set_range`), so a histogram calibrator holds the activations of a few frames at a time."""

        def __init__(self, calibration: Calibration, input_name: str, imgsz: int, batch: int = 1) -> None:
            self._input = input_name
            self._batch = batch
            self._frames = [letterbox_cpu(image, imgsz)[0] for image in calibration.images()]
            self._range = iter(range(len(self)))

        def __len__(self) -> int:
            return -(-len(self._frames) // self._batch)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._range = iter(range(start_index, min(end_index, len(self))))

        def get_next(self) -> dict[str, np.ndarray] | None:
            group = next(self._range, None)
            if group is None:
                return None
            frames = [self._frames[(group * self._batch + i) % len(self._frames)] for i in range(self._batch)]
            return {self._input: np.concatenate([to_nchw(f, np.float32) for f in frames])}

    return FrameReader


@dataclass(frozen=True)
class QuantKey:
    """Everything a quantized model depends on."""

    model_sha256: str
    imgsz: int
    opset: int
    calibration: str
    method: str
    fp32_nodes: tuple[str, ...]
    target: str
    onnxruntime: str
    batch: int = 1
    recipe: int = RECIPE

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def path(self, engines_dir: Path, stem: str) -> Path:
        name = f"{stem}-{self.model_sha256[:12]}-{self.imgsz}-int8-{self.target}-b{self.batch}-{self.digest[:12]}.onnx"
        return Path(engines_dir) / "int8" / name


@dataclass(frozen=True)
class Quantized:
    """A quantized model on disk, its key, and what its making is worth reporting."""

    path: Path
    key: QuantKey
    notes: tuple[str, ...]


METADATA_KEY = "rtmon.int8.key"


@dataclass(frozen=True)
class _Job:
    """What quantizing a model takes: its key, its calibration set, the FP32 export it starts from."""

    key: QuantKey
    calibration: Calibration
    fp32: Path
    input_name: str
    layers: tuple[str, ...]


def _job(model: ModelRef, engines_dir: Path, imgsz: int, int8_settings, target: str, batch: int) -> _Job:
    import onnx
    import onnxruntime

    if target not in TARGETS:
        raise ValueError(f"unknown quantization target {target!r}")
    calibration = calibration_of(int8_settings)
    fp32 = export_onnx(model, engines_dir, imgsz, "fp32", batch)
    graph = onnx.load(str(fp32), load_external_data=False).graph
    kept = fp32_nodes(graph, int8_settings.fp32_layers)
    key = QuantKey(model.sha256, imgsz, OPSET, calibration.identity, int8_settings.method, kept, target,
                   onnxruntime.__version__, batch)
    return _Job(key, calibration, fp32, graph.input[0].name, tuple(int8_settings.fp32_layers))


def quantization_key(model: ModelRef, engines_dir: Path, imgsz: int, int8_settings, target: str,
                     batch: int = 1) -> QuantKey:
    """The key of the model `quantized_onnx` would give, without quantizing it (a TensorRT plan
    built from it has the key's digest in its own key)."""
    return _job(model, engines_dir, imgsz, int8_settings, target, batch).key


def quantized_onnx(model: ModelRef, engines_dir: Path, imgsz: int, int8_settings, target: str,
                   batch: int = 1) -> Quantized:
    """The model's INT8 Q/DQ ONNX for `target` (cpu | tensorrt) and a fixed `batch`, from the
    cache when a valid one is there."""
    job = _job(model, engines_dir, imgsz, int8_settings, target, batch)
    key = job.key
    path = key.path(engines_dir, model.path.stem)
    notes: list[str] = []
    what = (f"INT8 ({key.method} calibration on {job.calibration.label}, FP32 layers: "
            f"{', '.join(job.layers) or 'none'})")
    if path.is_file():
        problem = _cache_problem(path, key)
        if problem is None:
            return Quantized(path, key, (f"{what}: {path.name}, from the cache",))
        notes.append(f"rebuilt {path.name}: {problem}")
        log.warning("cached INT8 model %s: %s; rebuilding it", path, problem)
        try:
            path.unlink()
        except OSError as exc:
            raise UserError(f"int8: cannot replace the cached {path} ({exc.strerror})") from None
    started = time.perf_counter()
    _quantize(job, path)
    notes.append(f"{what}: {path.name}, quantized in {time.perf_counter() - started:.0f} s")
    return Quantized(path, key, tuple(notes))


def _cache_problem(path: Path, key: QuantKey) -> str | None:
    """Why the cached file at `path` cannot serve for `key`; None when it can."""
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    except Exception:
        return "it is not a readable ONNX model"
    if METADATA_KEY not in props:
        return "it has no rtmon INT8 key"
    try:
        fields = json.loads(props[METADATA_KEY])
        cached = QuantKey(**{**fields, "fp32_nodes": tuple(fields["fp32_nodes"])})
    except (TypeError, ValueError, KeyError):
        return "its rtmon INT8 key is unreadable"
    if cached == key:
        return None
    changed = [f"{name} {getattr(cached, name)} (now {getattr(key, name)})" for name in ("onnxruntime", "recipe")
               if getattr(cached, name) != getattr(key, name)]
    return f"it was made by {', '.join(changed)}" if changed else "it was made for another key"


def _quantize(job: _Job, target: Path) -> None:
    """Calibrate and quantize the job's FP32 export into `target` (atomically: a failure leaves no file)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    key, input_name = job.key, job.input_name
    reader = _calibration_reader_class()(job.calibration, input_name, key.imgsz, key.batch)
    window = max(d for d in range(1, CALIBRATION_WINDOW + 1) if len(reader) % d == 0)
    extra = {"CalibStridedMinMax": window}  # despite the name, every calibrator reads window by window
    if key.target == "cpu":
        activations, op_types = QuantType.QUInt8, None  # every op ONNX Runtime has an integer kernel for
        # Data-movement ops (MaxPool, Resize, Split…) share their input's quantization even where a
        # float op (a SiLU kept in FP32) produced it, so they stay integer instead of running float
        # between a DequantizeLinear and a QuantizeLinear.
        extra["ForceQuantizeNoInputCheck"] = True
        extra["TensorQuantOverrides"] = {input_name: [{"scale": np.array(INPUT_SCALE), "zero_point": np.array(0, np.uint8)}]}
    else:
        activations, op_types = QuantType.QInt8, list(TENSORRT_OPS)
        # Biases stay float: TensorRT folds them into its INT8 convolutions itself.
        extra.update(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False,
                     OpTypesToExcludeOutputQuantization=list(TENSORRT_OPS))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "quantized.onnx"
        try:
            quant_pre_process(str(job.fp32), str(prepared))
            if key.target == "cpu":  # TensorRT fuses each SiLU into its convolution itself
                model = onnx.load(str(prepared))
                if fuse_silu(model, key.fp32_nodes):
                    onnx.save(model, str(prepared))
            chatter = io.StringIO()  # the calibrators print their progress; keep it off the user's screen
            with contextlib.redirect_stdout(chatter):
                quantize_static(
                    str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=activations, weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                    nodes_to_exclude=list(key.fp32_nodes), calibrate_method=methods[key.method], extra_options=extra,
                )
            log.debug("calibration: %s", chatter.getvalue())
            model = onnx.load(str(quantized))
            if key.target == "cpu":
                take_uint8_input(model, input_name)
            onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                                METADATA_KEY: key.to_json()})
            onnx.checker.check_model(model)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"int8: cannot quantize {job.fp32.name} ({type(exc).__name__}: {exc})") from None
        with atomic_path(target) as tmp_target:
            onnx.save(model, str(tmp_target))


def take_uint8_input(model, input_name: str) -> None:
    """Make the quantized graph take the letterboxed image's bytes: drop the QuantizeLinear of
    the float input (scale 1/255, zero point 0, so it maps p/255 to p) and declare the input
    uint8. A graph whose first layer is kept in FP32 keeps its float input."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    consumers = [n for n in graph.node if input_name in n.input]
    if any(n.op_type != "QuantizeLinear" for n in consumers):
        return  # a layer kept in FP32 reads the input (int8.fp32_layers = stem): it stays float
    (quant,) = consumers
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scale, zero_point = constants.get(quant.input[1]), constants.get(quant.input[2])
    if scale is None or zero_point is None or scale != INPUT_SCALE or zero_point != 0 or zero_point.dtype != np.uint8:
        raise UserError(f"int8: the quantized input is not scale 1/255, zero point 0 (got {scale}, {zero_point})")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[i] = input_name
    graph.node.remove(quant)
    (graph_input,) = [i for i in graph.input if i.name == input_name]
    graph_input.type.tensor_type.elem_type = TensorProto.UINT8
