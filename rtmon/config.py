"""One validated settings object: built-in defaults ← a TOML file ← command-line overrides.

`configs/default.toml` spells out every default (a test keeps it equal to the models below).
Any key can be overridden on the command line with `--set section.key=value`; the common ones
also have their own options. A bad value raises `UserError("<key>: <why>")`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtmon.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSettings(_Section):
    uri: str = Field("auto", description="auto | sample | camera index | video file | image folder | URL")
    loop: bool = Field(False, description="restart a file source at its end instead of stopping")
    buffer: int = Field(8, ge=1, le=1024, description="decoded frames kept ahead of the engines")
    realtime: bool = Field(True, description="pace file sources at their own frame rate in live views")
    reopen_max_s: float = Field(8.0, gt=0, description="longest back-off between reopen attempts")


class ModelSettings(_Section):
    name: str = Field("auto", description="auto | ultralytics model name | path to .pt/.yaml")
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32)
    conf: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1, le=10000)


class EngineSettings(_Section):
    live: list[str] = Field(["baseline", "optimized"], min_length=1)
    bench: list[str] = Field(["baseline", "optimized"], min_length=1)
    batch: int = Field(1, ge=1, le=256, description="micro-batch size for engines that batch")
    ort_threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads (0 = its default)")


class BenchSettings(_Section):
    frames: int = Field(300, ge=1, le=1_000_000)
    warmup: int = Field(20, ge=0, le=10_000)
    out: str = Field("", description="report folder; empty = recordings/bench-<time>")
    sample_hz: float = Field(10.0, gt=0, le=1000, description="telemetry sampling rate for the timeline")


class RecordSettings(_Section):
    left: str = "baseline"
    right: str = "optimized"
    out_dir: str = "recordings"
    frames: int = Field(0, ge=0, description="stop after this many source frames (0 = no limit)")
    duration: float = Field(0.0, ge=0, description="stop after this many seconds (0 = no limit)")
    crf: int = Field(23, ge=0, le=51, description="H.264 quality (lower is better)")


class MonitorSettings(_Section):
    refresh_hz: float = Field(4.0, gt=0, le=10)
    window: bool = Field(False, description="also show the split screen in a desktop window (the window extra)")
    tui: bool = Field(True, description="show the terminal UI; false with window = true: the window alone, no terminal")
    preview: bool = Field(False, description="start with the in-terminal preview shown")


class MqttSettings(_Section):
    url: str = Field("", description="mqtt://host:port or mqtts://host:port; empty = off")
    prefix: str = "rtmon"
    instance: str = Field("", description="instance id under the prefix (empty = hostname)")
    rate_hz: float = Field(2.0, gt=0, le=50)
    detections: bool = False
    username: str = ""
    password: str = Field("", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    queue: int = Field(256, ge=1, le=100_000)


class PathSettings(_Section):
    engines_dir: str = Field("engines", description="exported ONNX files, TensorRT plans, caches")
    cache_dir: str = Field("", description="sample clip cache; empty = ~/.cache/rtmon")


class Settings(_Section):
    source: SourceSettings = SourceSettings()
    model: ModelSettings = ModelSettings()
    engines: EngineSettings = EngineSettings()
    bench: BenchSettings = BenchSettings()
    record: RecordSettings = RecordSettings()
    monitor: MonitorSettings = MonitorSettings()
    mqtt: MqttSettings = MqttSettings()
    paths: PathSettings = PathSettings()

    @field_validator("*", mode="before")
    @classmethod
    def _sections_are_tables(cls, value: Any) -> Any:
        if not isinstance(value, (dict, BaseModel)):
            raise ValueError("must be a table of settings")
        return value


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    return f"{key}: {first['msg'].removeprefix('Value error, ')}"


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it: numbers, booleans, lists; else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"{dotted}: keys are written section.key, e.g. model.imgsz")
    section, key = parts
    if section not in Settings.model_fields:
        raise UserError(f"{dotted}: unknown section '{section}' (known: {', '.join(Settings.model_fields)})")
    target = tree.setdefault(section, {})
    if not isinstance(target, dict):
        raise UserError(f"{section}: must be a table of settings")
    target[key] = value


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then `config_file`, then `overrides` ({'section.key': value}); validated once."""
    tree: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"config: {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"config: {path}: cannot read it ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config: {path}: not valid TOML ({exc})") from None
    for dotted, value in (overrides or {}).items():
        _apply(tree, dotted, value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise UserError(_first_error(exc)) from None


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`--set section.key=value` options → {'section.key': value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected section.key=value")
        out[key.strip()] = parse_value(raw.strip())
    return out


def settings_to_toml(settings: Settings) -> str:
    """The settings as TOML text (secrets left empty), e.g. to regenerate configs/default.toml."""
    lines: list[str] = []
    for section, model in settings:
        lines.append(f"[{section}]")
        for key, field in type(model).model_fields.items():
            value = "" if key == "password" else getattr(model, key)
            comment = f"  # {field.description}" if field.description else ""
            lines.append(f"{key} = {json.dumps(value)}{comment}")
        lines.append("")
    return "\n".join(lines)
