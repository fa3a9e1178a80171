"""One validated settings object: built-in defaults ← a TOML file ← command-line overrides.

`configs/default.toml` spells out every default (a test keeps it equal to the models below).
Any key can be overridden on the command line with `--set section.key=value`; the common ones
also have their own options. A bad value raises `UserError("<key>: <why>")`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtmon.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSettings(_Section):
    uri: list[str] = Field(["auto"], min_length=1, description="one or more of: auto | sample | camera index | "
                           "video file | image folder | URL")
    loop: bool = Field(False, description="restart a file source at its end instead of stopping")
    pace: Literal["auto", "realtime", "max"] = Field(
        "auto", description="realtime: files play at their own rate; max: decode as fast as the engines take frames; "
        "auto: max for the sample clip, realtime otherwise (cameras and streams are always realtime)")
    cache_mb: int = Field(2048, ge=0, le=1_000_000, description="at max pace, decoded frames of a looping file kept "
                          "in memory so decoding never limits the engines")
    reopen_max_s: float = Field(8.0, gt=0, description="longest back-off between reopen attempts")


    @field_validator("uri", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ModelSettings(_Section):
    name: str = Field("auto", description="auto | ultralytics model name | path to .pt/.yaml")
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32)
    conf: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1, le=10000)


class EngineSettings(_Section):
    live: list[str] = Field(["baseline", "optimized"], min_length=1)
    bench: list[str] = Field(["baseline", "optimized"], min_length=1)
    max_batch: int = Field(1, ge=1, le=256, description="frames waiting (from one stream or several) are batched "
                           "up to this many, for engines that batch; 1 = one frame at a time")
    max_delay_ms: float = Field(0.0, ge=0, le=1000, description="how long the first frame of a micro-batch waits "
                                "for others (like Triton's max_queue_delay); 0: batch what is waiting, so batches grow "
                                "only while the engine is busy and an idle engine adds no delay")
    ort_threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads (0 = its default)")
    stage_times: bool = Field(True, description="time each stage with CUDA events (GPU engines); off: only "
                              "whole frames are timed")
    baseline_streams: list[int] = Field([], description="the streams the baseline takes (empty = all)")
    timeout_s: float = Field(10.0, gt=0, le=3600, description="an engine with a frame in flight and no result "
                             "for this long is failed (hung)")
    load_timeout_s: float = Field(900.0, gt=0, le=86400, description="longest an engine may take to load and warm up")
    spin_us: float = Field(500.0, ge=0, le=1_000_000, description="an engine process that answered a frame spins "
                           "this long for the next one before it sleeps (no kernel wake-up when frames follow "
                           "closely; 0: sleep at once)")
    receive_spin_us: float = Field(300.0, ge=0, le=1_000_000, description="the main process sleeps until the fastest "
                                   "of its engine's recent answers is due, less this margin, then spins (yielding "
                                   "between tries) until the answer comes or the slowest recent one is this long "
                                   "past, so the answer does not wait for a kernel wake-up (on a virtual machine a "
                                   "wake-up costs 0.1-0.3 ms); the window is at most a tenth of the engine's median "
                                   "latency (or twice this margin) wide, around that median; 0 = never spin")
    precision: Literal["fp16", "int8"] = Field(
        "fp16", description="trt: fp16 plan, or int8 from the calibrated Q/DQ ONNX of [int8] (explicit quantization)")


class BenchSettings(_Section):
    scenario: Literal["single-stream", "offline", "multi-stream", "soak"] = Field(
        "single-stream", description="single-stream (latency, one frame at a time) | offline (throughput, "
        "micro-batch sweep) | multi-stream (how many cameras) | soak (a long live run: memory and drops over time)")
    frames: int = Field(1024, ge=1, le=10_000_000, description="timed frames per engine, at least (single-stream: "
                        "1,024 for a VALID result; offline: per batch size)")
    warmup: int = Field(32, ge=0, le=100_000, description="untimed warm-up frames per engine")
    pool: int = Field(128, ge=1, le=100_000, description="distinct decoded frames the engines cycle through")
    min_duration_s: float = Field(10.0, ge=0, description="single-stream: run at least this long (--strict: 60)")
    max_duration_s: float = Field(120.0, gt=0, description="single-stream: stop here even if not yet stable")
    window_s: float = Field(2.0, gt=0, description="stability windows (three consecutive within 10%)")
    timing_probe: int = Field(256, ge=0, description="frames run again without per-stage timing, to measure "
                              "what timing costs (0 = skip)")
    reference_rounds: int = Field(24, ge=1, le=200, description="single-stream: the engine runs in at least this many "
                                  "short segments, each after a segment of its plain-ultralytics reference (and one "
                                  "more after the last), so a machine whose speed drifts within seconds slows both "
                                  "alike; split between the pairs of processes (`reference_processes`)")
    reference_processes: int = Field(3, ge=1, le=50, description="single-stream with a reference: the rounds run in "
                                     "this many pairs of fresh processes (an engine process and a plain script's), "
                                     "one pair after the other, because a process's own speed varies with where its "
                                     "memory landed and rounds inside one process cannot average that out; more "
                                     "pairs follow while the engine is not yet stable or the check cannot decide")
    segment_warmup: int = Field(2, ge=0, le=100, description="single-stream with a reference: untimed frames at the "
                                "start of every segment, the engine's and the plain script's alike, so neither times "
                                "its first frames after idling through the other's segment (cold caches, a process "
                                "woken from a long sleep)")
    until_decided: bool = Field(True, description="single-stream with a reference: after `reference_processes` "
                                "pairs, another pair while the yardstick's 95% intervals straddle a 3% bound (the "
                                "check cannot tell yet), up to max_duration_s of the engine's time")
    cpu_split: Literal["auto", "on", "off"] = Field("auto", description="single-stream: rtmon's own threads on the "
                                                    "first quarter of the CPUs, each measured process (engine, plain "
                                                    "script) on the rest, whole physical cores each, so the main "
                                                    "process's waiting runs neither where they do nor on a hyperthread "
                                                    "of their cores (auto: on machines of 8 CPUs or more; on: also on "
                                                    "smaller ones, down to one CPU a side; off: anywhere)")
    batches: list[int] = Field([1, 2, 4, 8, 16, 32], min_length=1, description="offline: micro-batch sizes")
    camera_fps: float = Field(30.0, gt=0, le=1000, description="multi-stream: each camera's frame rate")
    trial_s: float = Field(8.0, gt=0, description="multi-stream: seconds measured per camera count")
    trial_warmup_s: float = Field(1.0, ge=0, description="multi-stream: seconds before measuring, per camera count")
    max_streams: int = Field(256, ge=1, le=100_000, description="multi-stream: search no further")
    concurrent_warmup_s: float = Field(3.0, ge=0, description="--concurrent: seconds before each phase is measured")
    soak_minutes: float = Field(4.0, gt=0, le=1440, description="soak: minutes of each phase (recording the split "
                                "screen of the engines, then `soak_streams` streams on the last engine)")
    soak_streams: int = Field(16, ge=1, le=1024, description="soak: streams of the second phase")
    soak_sample_s: float = Field(5.0, gt=0, le=600, description="soak: seconds between two readings")
    out: str = Field("", description="report folder; empty = recordings/bench-<time>")

    @field_validator("batches")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 or b > 256 for b in value):
            raise ValueError("batch sizes must be between 1 and 256")
        return value


class Int8Settings(_Section):
    """INT8 calibration (rtmon/quantize.py), shared by ort-cpu-int8 and trt with engine.precision = "int8".
    The defaults were chosen by measurement: docs/benchmarks/cpu-2026-12-01-int8/choice.md (of the layer
    sets within its accuracy rule, the one whose CPU network ran fastest against FP32's)."""

    calibration_dir: str = Field("", description="a folder of images to calibrate on; empty = rtmon's synthetic "
                                 "scenes from seeds that are neither the sample clip's nor the demo detector's")
    calibration_frames: int = Field(32, ge=1, le=10_000, description="calibration frames (a folder: its first N "
                                    "images by name)")
    method: Literal["minmax", "entropy", "percentile"] = Field("entropy", description="how activation ranges are "
                                                                "taken from the calibration frames")
    fp32_layers: list[Literal["stem", "silu", "output", "decode", "head"]] = Field(
        ["stem", "silu", "decode"], description="layers left in FP32: stem (the first convolution) | silu (every SiLU activation, "
        "one float pass between integer convolutions on the CPU) | output (the detect head's box arithmetic and "
        "class sigmoid, after its DFL) | decode (output and the DFL) | head (the whole detect head)")


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
    discovery: bool = Field(True, description="announce the sensors to Home Assistant (MQTT discovery)")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")


class PrometheusSettings(_Section):
    listen: str = Field("", description="[ADDR:]PORT for a Prometheus /metrics endpoint (ADDR defaults to 127.0.0.1); empty = off")


class TritonSettings(_Section):
    """The `triton` engine: a Triton Inference Server that runs the network for rtmon."""

    url: str = Field("grpc://localhost:8001", description="the server's gRPC endpoint: grpc://host:port")
    model: str = Field("rtmon", pattern=r"^[A-Za-z0-9._-]+$", description="model name on the server (also what `rtmon serve` serves)")
    shm: Literal["auto", "on", "off"] = Field(
        "auto", description="frames through system shared memory: auto (when the server is on this machine) | on | off"
    )
    timeout_s: float = Field(10.0, gt=0, le=600, description="longest wait for the server, per request")


class ServeSettings(_Section):
    """`rtmon serve`: a Triton Inference Server on this machine running one of rtmon's engines."""

    engine: str = Field("optimized", description="the engine whose network is served")
    address: str = Field("0.0.0.0", description="address the endpoints listen on (127.0.0.1: this machine only)")
    grpc_port: int = Field(8001, ge=1, le=65535)
    http_port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535, description="Prometheus metrics at /metrics")
    max_batch: int = Field(16, ge=1, le=256, description="largest batch Triton's dynamic batcher forms")
    queue_delay_us: int = Field(100, ge=0, le=1_000_000, description="how long a request may wait for others to join its batch")


class PathSettings(_Section):
    engines_dir: str = Field("engines", description="exported ONNX files, TensorRT plans, caches")
    cache_dir: str = Field("", description="sample clip cache; empty = ~/.cache/rtmon")


class Settings(_Section):
    source: SourceSettings = SourceSettings()
    model: ModelSettings = ModelSettings()
    engine: EngineSettings = EngineSettings()
    bench: BenchSettings = BenchSettings()
    int8: Int8Settings = Int8Settings()
    record: RecordSettings = RecordSettings()
    monitor: MonitorSettings = MonitorSettings()
    mqtt: MqttSettings = MqttSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    triton: TritonSettings = TritonSettings()
    serve: ServeSettings = ServeSettings()
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
