"""Which model rtmon runs, where its weights come from, and its cached ONNX exports.

Resolution of `--model`:
- `auto` (default): ultralytics' official `yolo11n.pt` when it is on disk or can be downloaded;
  otherwise rtmon's own demo detector (trained on rtmon's synthetic scenes), with a notice;
  if that is not installed either, an untrained yolo11n built from its architecture file.
- `demo`: the demo detector; its sha256 is verified before it is used.
- a `.yaml` architecture: built once with a fixed seed and saved under `engines/`, so every
  process (and every engine) runs the very same untrained weights. Labelled "untrained".
- an ultralytics model name or a path to a `.pt` file: loaded as it is; failing is an error.

Everything here works offline: nothing is downloaded unless the name is an official one and
`YOLO_OFFLINE` is not set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rtmon.errors import UserError
from rtmon.files import atomic_path, sha256_of

log = logging.getLogger(__name__)

OFFICIAL_DEFAULT = "yolo11n.pt"
UNTRAINED_DEFAULT = "yolo11n.yaml"
ASSETS = Path(__file__).parent / "assets"
DEMO_WEIGHTS = ASSETS / "demo" / "rtmon-demo-yolo11n.pt"
DEMO_SHA256 = ASSETS / "demo" / "rtmon-demo-yolo11n.pt.sha256"
OPSET = 17


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a local weights file every process can load identically."""

    path: Path
    label: str  # what outputs print, e.g. "yolo11n.pt", "rtmon demo detector", "yolo11n.yaml (untrained)"
    kind: str  # official | demo | untrained | user
    sha256: str
    class_names: dict[int, str] = field(default_factory=dict, compare=False)
    notice: str = ""

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def trained(self) -> bool:
        return self.kind != "untrained"


def offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}


def _quiet_ultralytics() -> None:
    os.environ.setdefault("YOLO_VERBOSE", "False")
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)


def load_yolo(path: Path):
    """An ultralytics YOLO object for a local weights file; a UserError if it is not one."""
    _quiet_ultralytics()
    from ultralytics import YOLO

    try:
        return YOLO(str(path), task="detect")
    except Exception as exc:
        raise UserError(f"model: {path} is not a model ultralytics can load ({type(exc).__name__}: {exc})") from None


def _names_of(path: Path) -> dict[int, str]:
    names = load_yolo(path).names
    return {int(k): str(v) for k, v in names.items()}


def _local_official(name: str) -> Path | None:
    from ultralytics.utils import SETTINGS

    for candidate in (Path(name), Path(SETTINGS["weights_dir"]) / name):
        if candidate.is_file():
            return candidate
    return None


def _download_official(name: str) -> Path | None:
    """Ask ultralytics for an official weights file; None when offline or it fails."""
    if offline():
        return None
    _quiet_ultralytics()
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        path = Path(attempt_download_asset(name))
    except Exception as exc:
        log.debug("download of %s failed: %s", name, exc)
        return None
    return path if path.is_file() else None


def demo_ref() -> ModelRef | None:
    """The demo detector if it ships with this install; raises if its checksum is wrong."""
    if not DEMO_WEIGHTS.is_file():
        return None
    expected = DEMO_SHA256.read_text().split()[0] if DEMO_SHA256.is_file() else ""
    actual = sha256_of(DEMO_WEIGHTS)
    if actual != expected:
        raise UserError(
            f"model: demo detector {DEMO_WEIGHTS} fails its sha256 check (expected {expected[:12] or 'a checksum file'}, "
            f"got {actual[:12]}); reinstall rtmon or restore the file with git"
        )
    return ModelRef(DEMO_WEIGHTS, "rtmon demo detector (yolo11n)", "demo", actual, _names_of(DEMO_WEIGHTS))


def untrained_ref(arch: str, engines_dir: Path) -> ModelRef:
    """Build `arch` with a fixed seed once and keep it under engines/, so every process agrees."""
    _quiet_ultralytics()
    import torch
    from ultralytics import YOLO

    arch_path = Path(arch)
    if arch_path.suffix not in {".yaml", ".yml"}:
        raise UserError(f"model: {arch} is not an architecture file (.yaml)")
    if os.sep in arch and not arch_path.is_file():
        raise UserError(f"model: {arch}: no such file")
    key = hashlib.sha256((arch_path.read_text() if arch_path.is_file() else arch).encode()).hexdigest()[:12]
    target = engines_dir / f"{arch_path.stem}-untrained-seed0-{key}.pt"
    if not target.is_file():
        torch.manual_seed(0)
        try:
            model = YOLO(arch, task="detect")
        except Exception as exc:
            raise UserError(f"model: cannot build {arch} ({type(exc).__name__}: {exc})") from None
        engines_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            model.save(str(tmp))
    return ModelRef(target, f"{arch_path.name} (untrained)", "untrained", sha256_of(target), _names_of(target))


def resolve_model(name: str, engines_dir: Path) -> ModelRef:
    """Turn the `--model` setting into a ModelRef (see the module docstring)."""
    engines_dir = Path(engines_dir)
    if name == "auto":
        local = _local_official(OFFICIAL_DEFAULT) or _download_official(OFFICIAL_DEFAULT)
        if local:
            return ModelRef(local, OFFICIAL_DEFAULT, "official", sha256_of(local), _names_of(local))
        demo = demo_ref()
        if demo:
            return _with_notice(demo, f"{OFFICIAL_DEFAULT} is not available offline; using the rtmon demo detector")
        ref = untrained_ref(UNTRAINED_DEFAULT, engines_dir)
        return _with_notice(
            ref, f"{OFFICIAL_DEFAULT} is not available offline; using an UNTRAINED {UNTRAINED_DEFAULT} (it detects nothing)"
        )
    if name == "demo":
        demo = demo_ref()
        if not demo:
            raise UserError(f"model: the demo detector is not installed ({DEMO_WEIGHTS} is missing)")
        return demo
    if name.endswith((".yaml", ".yml")):
        return untrained_ref(name, engines_dir)
    path = Path(name)
    if path.exists():
        if not path.is_file():
            raise UserError(f"model: {name} is a folder, not a weights file")
        return ModelRef(path, path.name, "user", sha256_of(path), _names_of(path))
    if os.sep in name or not name.endswith(".pt"):
        raise UserError(f"model: {name}: no such file (give a .pt path, a .yaml architecture, an ultralytics name, or demo)")
    local = _local_official(name) or _download_official(name)
    if not local:
        why = "YOLO_OFFLINE is set" if offline() else "download failed"
        raise UserError(f"model: {name} is not on this machine and cannot be downloaded ({why})")
    return ModelRef(local, name, "official", sha256_of(local), _names_of(local))


def _with_notice(ref: ModelRef, notice: str) -> ModelRef:
    return ModelRef(ref.path, ref.label, ref.kind, ref.sha256, ref.class_names, notice)


def onnx_path(ref: ModelRef, engines_dir: Path, imgsz: int, precision: str = "fp32", batch: int = 1,
              dynamic: bool = False) -> Path:
    """The cache key of an ONNX export: model hash, input size, precision, opset, batch (or `dyn`
    for an export whose batch dimension is left open)."""
    batch_part = "dyn" if dynamic else f"b{batch}"
    return Path(engines_dir) / f"{ref.path.stem}-{ref.short_hash}-{imgsz}-{precision}-op{OPSET}-{batch_part}.onnx"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _valid_onnx(path: Path) -> bool:
    try:
        import onnx

        onnx.checker.check_model(str(path))
        return True
    except Exception:
        return False


def export_onnx(ref: ModelRef, engines_dir: Path, imgsz: int, precision: str = "fp32", batch: int = 1,
                dynamic: bool = False) -> Path:
    """The model exported to ONNX, from the cache when a valid export is there.

    A corrupt cached file is rebuilt with a notice. Export runs in a temporary folder and the
    result is renamed into place, so a crash never leaves a half-written file in the cache.
    `dynamic` leaves the batch dimension open (a Triton model repository batches requests);
    ultralytics then leaves height and width open too, which a fixed-size config narrows.
    FP16 is exported on the GPU when there is one (FP16 input and output); without one,
    ultralytics converts the weights on the CPU and keeps FP32 input and output.
    """
    target = onnx_path(ref, engines_dir, imgsz, precision, batch, dynamic)
    if target.is_file():
        if _valid_onnx(target):
            return target
        log.warning("cached ONNX file %s is corrupt; rebuilding it", target)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        weights = Path(tmp) / ref.path.name
        shutil.copy2(ref.path, weights)
        model = load_yolo(weights)
        kwargs = {"format": "onnx", "imgsz": imgsz, "opset": OPSET, "simplify": True, "batch": batch, "dynamic": dynamic}
        if precision == "fp16":
            kwargs.update(half=True, device=0 if _cuda_available() else "cpu")
        try:
            exported = Path(model.export(**kwargs))
        except Exception as exc:
            raise UserError(f"model: ONNX export of {ref.label} failed ({type(exc).__name__}: {exc})") from None
        with atomic_path(target) as tmp_target:
            shutil.copy2(exported, tmp_target)
    return target


def export_onnx_fp16_io(ref: ModelRef, engines_dir: Path, imgsz: int, batch: int = 1) -> Path:
    """A truly FP16 ONNX export: FP16 weights, input and output, the names and shapes of the FP32
    export, made the same way on every machine (cached as `…-fp16io-…`).

    `export_onnx(…, "fp16")` is FP16 through and through only on a GPU; without one, ultralytics
    converts the weights and keeps an FP32 input and output behind Cast nodes. A strongly typed
    engine (TensorRT-RTX) takes its precision from the graph, and an engine built ahead of time
    on a build server must be the engine the user's machine would build itself, so this export
    converts the FP32 export with ONNX Runtime's float16 tool (the one ultralytics uses on the
    CPU), here with the input and output converted too, on a GPU machine and a CPU one alike.
    """
    target = onnx_path(ref, engines_dir, imgsz, "fp16io", batch)
    if target.is_file():
        if _valid_onnx(target):
            return target
        log.warning("cached ONNX file %s is corrupt; rebuilding it", target)
        target.unlink()
    source = export_onnx(ref, engines_dir, imgsz, "fp32", batch)
    try:
        import onnx
        from onnxruntime.transformers import float16
    except ImportError:
        raise UserError("model: an FP16 ONNX export needs ONNX Runtime's float16 converter; "
                        "pip install 'rtmon[cpu]' (or 'rtmon[gpu]')") from None  # fmt: skip
    try:
        converted = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=False)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise UserError(f"model: FP16 conversion of {source.name} failed ({type(exc).__name__}: {exc})") from None
    with atomic_path(target) as tmp:
        onnx.save(converted, str(tmp))
    return target
