"""TensorRT for RTX (`trt-rtx`): an engine built ahead of time from the FP16 ONNX export, its
kernels compiled just in time on the user's RTX card, run on device buffers.

TensorRT-RTX splits TensorRT's build in two. The ahead-of-time build (`build_engine`) needs no
GPU: it turns the ONNX graph into a portable engine for a set of compute capabilities (by default
every one it supports), which is why CI builds the demo detector's engine on a CPU and `rtmon
export --tensorrt-rtx` builds one on any machine. On the GPU, the runtime compiles the kernels
for that very card at the first run; the runtime cache keeps them, so the next start skips that.

The network is strongly typed: precision comes from the ONNX graph, not from builder flags, so
the FP16 engine is built from an export whose weights, input and output are FP16
(`rtmon.models.export_onnx_fp16_io`, the same file on every machine, so an engine built on a
build server is the one the user's machine would build). Letterbox and candidate selection stay
in `GpuEngine`'s CUDA graphs, as for ONNX Runtime and TensorRT; the network runs between them
on the engine's stream with TensorRT-RTX's own CUDA graph (the runtime config's whole-graph
capture strategy), over input and output tensors bound once.

Kept in `engines/trt-rtx/`: the engine, named by everything it depends on (`EngineKey`: model,
precision, input size, batch, TensorRT-RTX version, targets; not the GPU, it is portable), and
a runtime cache per engine and GPU. Before an engine is loaded TensorRT-RTX is asked whether it
is valid on this GPU (`Runtime.get_engine_validity`, which reads the header only); a stale or
corrupt engine is rebuilt with a notice. On a GPU TensorRT-RTX does not run on (an H200, a
compute capability 9.0 datacenter GPU), `load` fails at once with one line, before building
anything, and `optimized` goes on to the next engine.

Verified: the ahead-of-time build, on a CPU (tests/test_tensorrt_rtx.py, in CI). Seen when
TensorRT-RTX was first tried here: an H200 refuses its engines ("Supported compute capabilities:
8.0 8.6 8.9 12.0 12.1 >12.0"). Not verified: running the engine, which needs an RTX GPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rtmon.engines.gpu_common import GpuEngine, Runner
from rtmon.engines.tensorrt import bind_tensors, file_slug
from rtmon.errors import UserError
from rtmon.files import atomic_path
from rtmon.models import ModelRef, export_onnx, export_onnx_fp16_io, resolve_model
from rtmon.readiness import TENSORRT_RTX_CCS, runs_tensorrt_rtx

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rtmon[tensorrt-rtx]'  (TensorRT for RTX; for GeForce/RTX cards)"
PRECISIONS = ("fp16", "fp32")
# The compute capabilities an engine can be built for, as TensorRT-RTX names them; their order
# is the order of the bits in an engine's header (see `declared_targets`).
TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
# TensorRT-RTX's engine header: 64 bytes (Runtime.engine_header_size), two sections marked
# "vtrt"; the second, at byte 28, starts with the set of compute capabilities built for.
_MAGIC, _TARGETS_AT = b"vtrt", 28


def import_tensorrt_rtx(who: str = "engine: trt-rtx"):
    """The `tensorrt_rtx` module, or a one-line UserError that says how to install it."""
    try:
        import tensorrt_rtx
    except ImportError:
        raise UserError(f"{who}: TensorRT-RTX is not installed; {INSTALL_HINT}") from None
    return tensorrt_rtx


def parse_targets(text: str) -> tuple[str, ...]:
    """`sm86,sm120` → ('SM86', 'SM120'); empty → () (TensorRT-RTX's default set)."""
    targets = tuple(dict.fromkeys(t.strip().upper() for t in text.split(",") if t.strip()))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UserError(f"export: --targets {text}: {unknown[0].lower()} is not a TensorRT-RTX target "
                        f"(choose from {', '.join(t.lower() for t in TARGETS)})")  # fmt: skip
    return targets


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT-RTX engine depends on. No GPU: an engine runs on every
    compute capability among its targets (() = TensorRT-RTX's default set)."""

    model_hash: str
    precision: str
    imgsz: int
    batch: int
    trt_rtx_version: str
    targets: tuple[str, ...] = ()

    def file_name(self, stem: str) -> str:
        targets = ".".join(t.lower() for t in self.targets) or "default"
        return (f"{stem}-{self.model_hash[:12]}-{self.imgsz}-{self.precision}-b{self.batch}"
                f"-rtx{file_slug(self.trt_rtx_version)}-{targets}.engine")  # fmt: skip

    def engine_path(self, engines_dir: Path, stem: str) -> Path:
        return Path(engines_dir) / "trt-rtx" / self.file_name(stem)


def runtime_cache_path(engine_path: Path, gpu: str, cc: tuple[int, int]) -> Path:
    """Where the runtime cache of `engine_path` on this GPU is kept: its kernels are compiled for
    one GPU model (TensorRT-RTX also checks driver and version when it reads the cache back)."""
    return engine_path.with_name(f"{engine_path.stem}-{file_slug(gpu)}-sm{cc[0]}{cc[1]}.rtcache")


def declared_targets(blob: bytes) -> tuple[str, ...] | None:
    """The compute capabilities a serialized engine was built for, from its header; None when
    the header is not laid out as this reads it.

    TensorRT-RTX has no call that says this without a GPU (the engine inspector needs a
    deserialized engine). The header holds them as a bit set, bit i for TARGETS[i]; bit 6 is set
    in engines built for the default set, whose refusal on an H200 lists "8.0 8.6 8.9 12.0 12.1
    >12.0", so it stands for the GPUs after 12.1 ("newer"). Learned from TensorRT-RTX 1.7.1
    builds for one target at a time; tests/test_tensorrt_rtx.py builds for known targets, so a
    change of layout fails there.
    """
    if len(blob) < _TARGETS_AT + 8 or blob[:4] != _MAGIC or blob[_TARGETS_AT:_TARGETS_AT + 4] != _MAGIC:
        return None
    bits = int.from_bytes(blob[_TARGETS_AT + 4:_TARGETS_AT + 8], "little")
    names = [name for i, name in enumerate(TARGETS) if bits >> i & 1]
    return (*names, "newer") if bits >> len(TARGETS) & 1 else tuple(names)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # float16, float32, …


@dataclass(frozen=True)
class BuiltEngine:
    """What an ahead-of-time build wrote: the engine file, its network's input and output (a
    strongly typed network's are the engine's), the targets its header declares."""

    path: Path
    size: int
    seconds: float
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    targets: tuple[str, ...] | None


def collecting_logger(trt, messages: list[str]):
    """A TensorRT-RTX logger that keeps errors in `messages` (for one-line errors) and sends the
    rest to the log, instead of printing to stderr."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                messages.append(" ".join(str(msg).split())[:300])
            else:
                log.debug("TensorRT-RTX: %s", msg)

    return Logger()


def _specs(trt, tensors) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, tuple(t.shape), trt.nptype(t.dtype).__name__) for t in tensors)


def build_engine(trt, onnx_file: Path, target: Path, targets: tuple[str, ...] = (), who: str = "engine: trt-rtx") -> BuiltEngine:
    """Build the engine for `onnx_file` ahead of time (no GPU needed) and write it to `target`,
    atomically: a failure leaves no file. `targets` are TARGETS names (() = the default set)."""
    messages: list[str] = []
    logger = collecting_logger(trt, messages)
    t0 = time.perf_counter()  # parse and build: the whole ahead-of-time step
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_file).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors)) or "; ".join(messages)
        raise UserError(f"{who}: TensorRT-RTX cannot parse {Path(onnx_file).name}: {' '.join(errors.split())[:400]}")
    config = builder.create_builder_config()
    if targets:
        config.num_compute_capabilities = len(targets)
        for i, name in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise UserError(f"{who}: TensorRT-RTX could not build an engine from {Path(onnx_file).name} "
                        f"({'; '.join(messages) or 'no reason given'})")  # fmt: skip
    blob = bytes(plan)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(blob)
    inputs = _specs(trt, (network.get_input(i) for i in range(network.num_inputs)))
    outputs = _specs(trt, (network.get_output(i) for i in range(network.num_outputs)))
    return BuiltEngine(target, len(blob), seconds, inputs, outputs, declared_targets(blob))


def onnx_for(model: ModelRef, engines_dir: Path, imgsz: int, precision: str, batch: int) -> Path:
    """The ONNX export a strongly typed engine of `precision` is built from."""
    if precision == "fp16":
        return export_onnx_fp16_io(model, engines_dir, imgsz, batch)
    return export_onnx(model, engines_dir, imgsz, "fp32", batch)


def invalid_reasons(trt, bits: int) -> list[str]:
    """Names of the EngineInvalidityDiagnostics flags in `bits` (version_mismatch, …)."""
    flags = trt.EngineInvalidityDiagnostics
    return [name.lower() for name in flags.__members__ if int(flags.__members__[name]) & bits]


def require_rtx_gpu(engine: str) -> None:
    """A one-line UserError unless GPU 0 is one TensorRT-RTX runs on; asks torch only, so it is
    instant and comes before any export or build."""
    if not torch.cuda.is_available():
        raise UserError(f"engine: {engine} needs an NVIDIA GPU with a working driver and a CUDA build of torch")
    index = torch.cuda.current_device()
    cc = tuple(torch.cuda.get_device_capability(index))
    if not runs_tensorrt_rtx(cc):
        name = torch.cuda.get_device_name(index)
        raise UserError(f"engine: {engine}: TensorRT-RTX cannot run on this GPU ({name}, compute capability "
                        f"{cc[0]}.{cc[1]}; it runs on {TENSORRT_RTX_CCS})")  # fmt: skip


class TensorRtxEngine(GpuEngine):
    backend = "tensorrt-rtx"
    precision = "fp16"

    def __init__(self, name: str, model: ModelRef, settings) -> None:
        super().__init__(name, model, settings)
        self._trt = None
        self._runtime = None
        self._messages: list[str] = []
        self._keep: list = []  # engines, runtime configs and contexts: alive as long as their runners
        self._caches: list[tuple[Path, object]] = []  # runtime caches and where each is kept

    def load(self) -> None:
        self._trt = import_tensorrt_rtx(f"engine: {self.info.name}")
        require_rtx_gpu(self.info.name)
        self._runtime = self._trt.Runtime(collecting_logger(self._trt, self._messages))
        super().load()
        self._save_runtime_caches()
        self.info = replace(self.info, notes=tuple(self._notes))  # with the runtime cache's note

    def key(self, batch: int) -> EngineKey:
        return EngineKey(self.model_ref.sha256, self.precision, self._imgsz, batch, self._trt.__version__)

    def _build(self, batch: int) -> Runner:
        engine, path = self.engine(batch)
        context = self._context(engine, path)
        return bind_tensors(self._trt, engine, context, batch, self._imgsz, self._device, self.info.name)

    def engine(self, batch: int):
        """The deserialized engine for `batch` and its file: the one kept in engines/trt-rtx when
        TensorRT-RTX can run it here, else one built now (with a notice saying why)."""
        key = self.key(batch)
        path = key.engine_path(self._engines_dir, self.model_ref.path.stem)
        engine = self.cached_engine(path)
        if engine is not None:
            return engine, path
        onnx_file = onnx_for(self.model_ref, self._engines_dir, self._imgsz, key.precision, batch)
        built = build_engine(self._trt, onnx_file, path, key.targets, f"engine: {self.info.name}")
        self.note(f"built {path.name} ahead of time in {built.seconds:.1f} s")
        blob = path.read_bytes()
        why = self.unusable_reason(blob)
        engine = None if why else self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise UserError(f"engine: {self.info.name}: TensorRT-RTX cannot load the engine it just built "
                            f"({why or '; '.join(self._messages[-2:]) or path})")  # fmt: skip
        return engine, path

    def unusable_reason(self, blob: bytes) -> str | None:
        """Why TensorRT-RTX would not run this serialized engine on this GPU (it reads the header
        only), or None when it says valid. 'Suboptimal' engines run, with a notice."""
        size = self._runtime.engine_header_size
        if len(blob) < size:
            return "the file is shorter than an engine's header (corrupt)"
        validity, bits = self._runtime.get_engine_validity(blob[:size])
        if validity == self._trt.EngineValidity.INVALID:
            return f"TensorRT-RTX says it is not valid here ({', '.join(invalid_reasons(self._trt, bits)) or 'no reason given'})"
        if validity == self._trt.EngineValidity.SUBOPTIMAL:
            self.note("TensorRT-RTX says this engine may run slower here than one built for this GPU (suboptimal)")
        return None

    def cached_engine(self, path: Path):
        """The engine kept at `path` if TensorRT-RTX can run it here; None (with a notice) when
        it is missing, stale or corrupt, and so must be built."""
        if not path.is_file():
            return None
        blob = path.read_bytes()
        why = self.unusable_reason(blob)
        engine = None if why else self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            why = why or "TensorRT-RTX could not deserialize it (corrupt)"
            self.note(f"rebuilt {path.name}: {why}")
            log.warning("%s: %s cannot be used (%s); rebuilding it", self.info.name, path, why)
        return engine

    def _context(self, engine, path: Path):
        """An execution context with TensorRT-RTX's own CUDA graph and this GPU's runtime cache."""
        trt = self._trt
        config = engine.create_runtime_config()
        # The whole network as one CUDA graph, captured by TensorRT-RTX once its kernels are
        # compiled and replayed on the engine's stream: the tensors are bound once, so the
        # graph's addresses stay valid.
        config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        cache = config.create_runtime_cache()
        props = torch.cuda.get_device_properties(self._device)
        cache_path = runtime_cache_path(path, props.name, (props.major, props.minor))
        if cache_path.is_file():
            if cache.deserialize(cache_path.read_bytes()):
                self.note(f"JIT kernels from the runtime cache {cache_path.name}")
            else:
                self.note(f"ignored the runtime cache {cache_path.name} (another GPU, driver or TensorRT-RTX, or "
                          "corrupt); its kernels are compiled again")  # fmt: skip
        config.set_runtime_cache(cache)
        context = engine.create_execution_context(runtime_config=config)
        if context is None:
            raise UserError(f"engine: {self.info.name}: TensorRT-RTX could not create an execution context "
                            f"({'; '.join(self._messages[-2:]) or 'no reason given'})")  # fmt: skip
        self._keep += [engine, config, cache, context]
        self._caches.append((cache_path, cache))
        return context

    def _save_runtime_caches(self) -> None:
        """Keep the kernels the first frames compiled, so the next start loads instead of compiling."""
        for path, cache in self._caches:
            with atomic_path(path) as tmp:
                tmp.write_bytes(bytes(cache.serialize()))
        if self._caches:
            self.note(f"runtime cache saved: {', '.join(p.name for p, _ in self._caches)}")

    def _release(self) -> None:
        self._caches.clear()
        self._keep.clear()


def export_engine(settings, out: Path, precision: str = "fp16", batch: int = 1,
                  targets: tuple[str, ...] = ()) -> tuple[BuiltEngine, EngineKey, ModelRef]:
    """`rtmon export --tensorrt-rtx FILE`: the model's engine built ahead of time into `out`, on
    any machine; also the key it has in an `engines/trt-rtx/` folder and the model."""
    who = "export: --tensorrt-rtx"
    if precision not in PRECISIONS:
        raise UserError(f"export: --precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if not 1 <= batch <= 256:
        raise UserError(f"export: --batch {batch}: give a batch size from 1 to 256")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{who}: {out} is a folder; give the engine file's name, e.g. {out / 'model.engine'}")
    if not out.parent.is_dir():
        raise UserError(f"{who}: cannot write {out}: there is no folder {out.parent}")
    trt = import_tensorrt_rtx(who)
    engines_dir = Path(settings.paths.engines_dir)
    model = resolve_model(settings.model.name, engines_dir)
    if model.notice:
        log.warning(model.notice)
    imgsz = settings.model.imgsz
    onnx_file = onnx_for(model, engines_dir, imgsz, precision, batch)
    try:
        built = build_engine(trt, onnx_file, out, targets, who)
    except OSError as exc:
        raise UserError(f"{who}: cannot write {out} ({exc.strerror or exc})") from None
    return built, EngineKey(model.sha256, precision, imgsz, batch, trt.__version__, targets), model


def export_summary(built: BuiltEngine, key: EngineKey, model: ModelRef) -> list[str]:
    """What `rtmon export --tensorrt-rtx` tells the user: the engine it wrote, and where rtmon's
    trt-rtx engine looks for it on the RTX machine."""
    (spec_in,), (spec_out,) = built.inputs, built.outputs
    name = replace(key, targets=()).file_name(model.path.stem)  # the name the trt-rtx engine looks for
    fewer = " (for fewer targets than the default set: checked against the GPU before use)" if key.targets else ""
    return [
        f"engine: {built.path} ({built.size / 1e6:.1f} MB), built ahead of time in {built.seconds:.1f} s by TensorRT-RTX "
        f"{key.trt_rtx_version} for {' '.join(built.targets or ('(targets unknown)',))}; "
        f"{spec_in.name} {'×'.join(map(str, spec_in.shape))} {spec_in.dtype} → "
        f"{spec_out.name} {'×'.join(map(str, spec_out.shape))} {spec_out.dtype}; {model.label}",
        f"on the RTX machine (TensorRT-RTX {key.trt_rtx_version}) rtmon's trt-rtx engine uses it as "
        f"engines/trt-rtx/{name}{fewer}",
    ]
