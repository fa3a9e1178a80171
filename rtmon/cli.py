"""Commands and options only: each command turns its options into Settings and calls one module.

Every bad input ends as one line `error: …` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rtmon import __version__
from rtmon.config import Settings, load_settings, parse_set_options
from rtmon.errors import UserError
from rtmon.preparation import engine_streams, prepare
from rtmon.processes import cap_malloc_arenas, sigterm_as_interrupt

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="rtmon: a plain YOLO baseline and optimized engines on one feed, measured live.\n\n"
    "With no command, starts the live monitor (a terminal UI). Defaults come from configs/default.toml's "
    "values; any setting can be changed with --set section.key=value.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (see configs/default.toml)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override any setting: section.key=value (repeatable)")]
SourceOpt = Annotated[list[str] | None, typer.Option("--source", "-s", help="auto | sample | camera index | video file | image folder | rtsp/http URL; give it more than once for several streams")]
PaceOpt = Annotated[str | None, typer.Option("--pace", help="realtime: a file plays at its own rate; max: decoded as fast as the engines take frames (auto: max for the sample)")]
BaselineStreamsOpt = Annotated[str | None, typer.Option("--baseline-streams", help="with several sources: the streams the baseline takes, e.g. 0,1 (default all)")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="auto | demo | ultralytics name (yolo11n.pt) | .pt path | .yaml architecture")]
MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="publish live metrics to this broker: mqtt://host:port or mqtts://host:port")]
PrometheusOpt = Annotated[str | None, typer.Option("--prometheus", metavar="[ADDR:]PORT", help="serve the live figures for Prometheus at http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1)")]
LoopOpt = Annotated[bool | None, typer.Option("--loop/--no-loop", help="restart a file source at its end")]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("rtmon")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    os.environ.setdefault("YOLO_VERBOSE", "False")


def _settings(config: Path | None, sets: list[str] | None, **options: Any) -> Settings:
    """Config file ← --set ← dedicated options (only those given)."""
    overrides = parse_set_options(sets or [])
    overrides.update({key: value for key, value in options.items() if value is not None})
    return load_settings(config, overrides)


def _engine_list(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option}: give stream numbers separated by commas, e.g. 0,1") from None


def _outlets(settings: Settings):
    """The MQTT / Prometheus outlets the settings ask for (checked now), or None."""
    from rtmon.outlets import factory

    return factory(settings)


@app.callback()
def monitor(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    engines: Annotated[str | None, typer.Option("--engines", "-e", help="comma-separated engines to race, e.g. baseline,ort-cpu")] = None,
    mqtt: MqttOpt = None,
    prometheus: PrometheusOpt = None,
    loop: LoopOpt = None,
    pace: PaceOpt = None,
    baseline_streams: BaselineStreamsOpt = None,
    window: Annotated[bool | None, typer.Option("--window/--no-window", help="also show the split screen in a desktop window (same keys; f full screen)")] = None,
    tui: Annotated[bool | None, typer.Option("--tui/--no-tui", help="show the terminal UI (--window --no-tui: the window alone, no terminal needed)")] = None,
    preview: Annotated[bool | None, typer.Option("--preview/--no-preview", help="start with the in-terminal video preview shown (key v)")] = None,
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
) -> None:
    """Live monitor: engines race on one feed in a terminal UI and/or a desktop window (keys: 1-9 toggle engines, r record, p pause, s snapshot, v preview, ? help, q quit)."""
    if version:
        console.print(f"rtmon {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is not None:
        _settings(config, sets)  # a bad --config/--set stops here, whatever the command
        ctx.obj = {"config": config, "sets": sets}
        return
    settings = _settings(config, sets, **{
        "source.uri": source, "model.name": model, "engine.live": _engine_list(engines), "mqtt.url": mqtt,
        "source.loop": loop, "source.pace": pace, "monitor.window": window, "monitor.tui": tui, "monitor.preview": preview,
        "engine.baseline_streams": _int_list(baseline_streams, "--baseline-streams"), "prometheus.listen": prometheus,
    })
    from rtmon import engines as registry
    from rtmon.monitor import run_live

    engines_ = registry.resolve_engines(settings.engine.live)
    factory = _outlets(settings)
    if settings.monitor.tui and not sys.stdout.isatty():
        raise UserError("the live monitor's terminal UI needs a terminal; without one use `--window --no-tui`, "
                        "`rtmon record` or `rtmon bench`")
    if not settings.monitor.tui and not settings.monitor.window and not (settings.mqtt.url or settings.prometheus.listen):
        raise UserError("--no-tui: nothing would show the monitor; add --window (or --mqtt URL / --prometheus ADDR)")
    if settings.monitor.window and not settings.monitor.tui:
        from rtmon.window import check_can_open

        check_can_open()  # with the terminal UI a window that cannot open is a notice there instead
    model_ref, specs = prepare(settings)
    streams = engine_streams(settings, engines_, len(specs))
    if all(spec.kind == "sample" for spec in specs) and loop is None:
        settings.source.loop = True  # the demo clip is 20 s; the live view keeps it going
    _exit_now(run_live(settings, model_ref, specs, engines_, factory, streams))


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, once everything is stopped and finalized.

    Tearing down torch's and ONNX Runtime's native thread pools takes seconds after the screen
    is gone; `q` should give the shell back at once.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _parent_settings(ctx: typer.Context, **options: Any) -> Settings:
    parent = ctx.obj or {}
    config = options.pop("config", None) or parent.get("config")
    sets = (parent.get("sets") or []) + (options.pop("sets", None) or [])
    return _settings(config, sets, **options)


@app.command()
def bench(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    engines: Annotated[str | None, typer.Option("--engines", "-e", help="comma-separated engines (default: baseline,optimized)")] = None,
    scenario: Annotated[str | None, typer.Option("--scenario", help="single-stream (latency, one frame at a time; default) | offline (throughput, micro-batch sweep) | multi-stream (how many cameras) | soak (a long live run: memory and drops over time)")] = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", "-n", help="timed frames per engine, at least (1,024 for a VALID single-stream result)")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="untimed warm-up frames per engine")] = None,
    min_duration: Annotated[float | None, typer.Option("--min-duration", help="single-stream: run at least this many seconds")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="single-stream: MLPerf's minimums, 1,024 frames and 60 s")] = False,
    batches: Annotated[str | None, typer.Option("--batches", help="offline: micro-batch sizes, e.g. 1,2,4,8,16,32")] = None,
    camera_fps: Annotated[float | None, typer.Option("--camera-fps", help="multi-stream: each camera's frame rate")] = None,
    max_streams: Annotated[int | None, typer.Option("--max-streams", help="multi-stream: search no further than this many cameras")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report folder (default recordings/bench-<time>)")] = None,
    mqtt: MqttOpt = None,
    prometheus: PrometheusOpt = None,
    concurrent: Annotated[float | None, typer.Option("--concurrent", metavar="SECONDS", help="instead: each engine alone, then all together, on one live feed for SECONDS per phase, at both paces (concurrent.json/.md)")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="skip the plain ultralytics script run beside the engines (the reference rows and the yardstick check)")] = False,
) -> None:
    """Benchmark: the same frames through each engine, each alone in its own process, in one of the field's scenarios; writes bench.json/.md/.csv and a plot."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "engine.bench": _engine_list(engines), "bench.scenario": scenario,
        "source.uri": ["sample"] if source is None else source, "model.name": model, "bench.frames": frames,
        "bench.warmup": warmup, "bench.min_duration_s": 60.0 if strict else min_duration,
        "bench.batches": _int_list(batches, "--batches"), "bench.camera_fps": camera_fps,
        "bench.max_streams": max_streams, "mqtt.url": mqtt, "prometheus.listen": prometheus,
        "bench.out": None if out is None else str(out),
    })
    if strict and settings.bench.frames < 1024:
        raise UserError(f"--strict: --frames must be at least 1024, not {settings.bench.frames}")
    from rtmon import engines as registry
    from rtmon.bench import check_out_dir, run_bench
    from rtmon.files import timestamped

    engines_ = registry.resolve_engines(settings.engine.bench)
    out_dir = Path(settings.bench.out) if settings.bench.out else timestamped(Path(settings.record.out_dir), "bench", "")
    check_out_dir(out_dir)
    sigterm_as_interrupt()  # a stop (SIGTERM, Ctrl-C) ends the engine processes and frees their shared memory
    factory = _outlets(settings)
    model_ref, specs = prepare(settings)
    if not model_ref.trained:
        logging.getLogger("rtmon").warning("the model is untrained: speed figures are valid, detections are not")
    if concurrent is not None:
        if concurrent <= 0:
            raise UserError("--concurrent: give a duration in seconds greater than 0")
        if factory is not None:
            raise UserError("--concurrent: --mqtt and --prometheus publish the scenarios, record and the monitor, "
                            "not the concurrent run")
        from rtmon.bench import run_concurrent

        run_concurrent(settings, model_ref, specs, engines_, out_dir, console, concurrent, settings.bench.concurrent_warmup_s)
        console.print(f"report: {out_dir}/ (concurrent.md, concurrent.json)")
        return
    run_bench(settings, model_ref, specs, engines_, out_dir, console, settings.bench.scenario, factory,
              reference=not no_reference)
    console.print(f"report: {out_dir}/ " + ("(soak.md, soak.json, soak.png)" if settings.bench.scenario == "soak" else
                                            "(bench.md, bench.json, bench.csv and a plot)"))


@app.command()
def record(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    left: Annotated[str | None, typer.Option("--left", help="engine on the left half (default baseline)")] = None,
    right: Annotated[str | None, typer.Option("--right", help="engine on the right half (default optimized)")] = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", "-n", help="stop after this many frames")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="stop after this many seconds")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output .mp4 (default recordings/rtmon-<left>-vs-<right>-<time>.mp4)")] = None,
    loop: LoopOpt = None,
    pace: PaceOpt = None,
    baseline_streams: BaselineStreamsOpt = None,
    mqtt: MqttOpt = None,
    prometheus: PrometheusOpt = None,
) -> None:
    """Record the demo video headless (H.264 MP4): the split screen of two engines running concurrently on one feed (a mosaic for several sources)."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "record.left": left, "record.right": right, "source.uri": source, "model.name": model,
        "record.frames": frames, "record.duration": duration, "source.loop": loop, "source.pace": pace,
        "mqtt.url": mqtt, "engine.baseline_streams": _int_list(baseline_streams, "--baseline-streams"),
        "prometheus.listen": prometheus,
    })
    from rtmon import engines as registry
    from rtmon.record import run_record

    pair = registry.resolve_engines([settings.record.left, settings.record.right])
    if len(pair) < 2:
        raise UserError(f"record: --left and --right are the same engine ({pair[0][0]}); give two engines")
    factory = _outlets(settings)
    model_ref, specs = prepare(settings)
    streams = engine_streams(settings, pair, len(specs))
    if settings.record.frames == 0 and settings.record.duration == 0 and any(s.kind in {"camera", "stream"} for s in specs):
        console.print("recording until Ctrl-C …")
    if all(spec.kind == "sample" for spec in specs) and loop is None and (settings.record.frames or settings.record.duration):
        settings.source.loop = True  # the sample is 20 s: a longer recording keeps it going
    path = run_record(settings, model_ref, specs, pair, out, console, factory, streams)
    console.print(f"recording: {path}")


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    engines: Annotated[str | None, typer.Option("--engines", "-e", help="comma-separated engines (default: baseline,optimized)")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="a labeled source (default: sample)")] = None,
    model: ModelOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", "-n", help="evaluate only the first N frames (default: all)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for eval.json (default recordings/eval-<time>)")] = None,
) -> None:
    """Accuracy: mAP50 and mAP50-95 of each engine against ground truth, and agreement with the baseline."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "engine.bench": _engine_list(engines), "source.uri": "sample" if source is None else source,
        "model.name": model,
    })
    from rtmon import engines as registry
    from rtmon.bench import check_out_dir
    from rtmon.evaluate import run_eval
    from rtmon.files import timestamped

    engines_ = registry.resolve_engines(settings.engine.bench)
    out_dir = out or timestamped(Path(settings.record.out_dir), "eval", "")
    check_out_dir(out_dir)
    sigterm_as_interrupt()
    model_ref, specs = prepare(settings)
    if len(specs) > 1:
        raise UserError("eval: give one labeled source")
    run_eval(settings, model_ref, specs[0], engines_, out_dir, console, frames)
    console.print(f"report: {out_dir}/eval.json")


@app.command()
def serve(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="the engine whose network Triton serves (default optimized)")] = None,
    model: ModelOpt = None,
    grpc_port: Annotated[int | None, typer.Option("--grpc-port", help="gRPC port (default 8001)")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP port (default 8000)")] = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Prometheus metrics port (default 8002)")] = None,
    address: Annotated[str | None, typer.Option("--address", help="address to listen on (default 0.0.0.0; 127.0.0.1 = this machine only)")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="the model's name on the server (default rtmon)")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="largest batch the dynamic batcher forms (default 16)")] = None,
    queue_delay_us: Annotated[int | None, typer.Option("--queue-delay-us", help="how long a request may wait for a batch, µs (default 100)")] = None,
) -> None:
    """Serve an engine on Triton Inference Server (NVIDIA PyTriton): gRPC, HTTP, dynamic batching, Prometheus metrics; the `triton` engine is its client."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "serve.engine": engine, "model.name": model, "serve.grpc_port": grpc_port, "serve.http_port": http_port,
        "serve.metrics_port": metrics_port, "serve.address": address, "triton.model": model_name,
        "serve.max_batch": max_batch, "serve.queue_delay_us": queue_delay_us,
    })
    from rtmon.triton.serve import run_serve

    run_serve(settings, console)


@app.command()
def export(
    ctx: typer.Context,
    triton: Annotated[Path | None, typer.Option("--triton", metavar="DIR", help="write a Triton model repository (config.pbtxt + ONNX) into DIR")] = None,
    tensorrt_rtx: Annotated[Path | None, typer.Option("--tensorrt-rtx", metavar="FILE", help="build a TensorRT-RTX engine for RTX cards ahead of time into FILE (no GPU needed)")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    model: ModelOpt = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="input size (default model.imgsz, 640)")] = None,
    precision: Annotated[str, typer.Option("--precision", help="fp16 or fp32")] = "fp16",
    batch: Annotated[int | None, typer.Option("--batch", help="--tensorrt-rtx: the engine's batch size (default 1)")] = None,
    targets: Annotated[str | None, typer.Option("--targets", help="--tensorrt-rtx: compute capabilities to build for, e.g. sm86,sm89,sm120 (default: TensorRT-RTX's default set)")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="the model's name in the repository (default rtmon)")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="max_batch_size of the dynamic batcher (default 16)")] = None,
    queue_delay_us: Annotated[int | None, typer.Option("--queue-delay-us", help="dynamic batcher queue delay, µs (default 100)")] = None,
    instances: Annotated[int, typer.Option("--instances", help="model instances per GPU")] = 1,
    gpus: Annotated[str | None, typer.Option("--gpus", help="comma-separated GPU ids (default: every GPU the server sees)")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="CPU instances instead of GPU ones")] = False,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="add ONNX Runtime's TensorRT accelerator")] = False,
) -> None:
    """Export the model: a Triton model repository with config.pbtxt and the ONNX file (pre/post-processing stays in rtmon), or a TensorRT-RTX engine built ahead of time for RTX cards."""
    if (triton is None) == (tensorrt_rtx is None):
        raise UserError("export: give one of --triton DIR or --tensorrt-rtx FILE")
    if triton is not None and (batch is not None or targets is not None):
        raise UserError("export: --batch and --targets go with --tensorrt-rtx")
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "model.name": model, "model.imgsz": imgsz, "triton.model": model_name, "serve.max_batch": max_batch,
        "serve.queue_delay_us": queue_delay_us,
    })
    if tensorrt_rtx is not None:
        _export_tensorrt_rtx(settings, tensorrt_rtx, precision, batch or 1, targets or "")
        return
    from rtmon.triton.repository import RepositoryOptions, export_repository, parse_gpus

    options = RepositoryOptions(precision, instances, parse_gpus(gpus or ""), cpu, tensorrt)
    folder = export_repository(settings, triton, options)
    console.print(f"model repository: {folder.parent}/ (model '{folder.name}': config.pbtxt, 1/model.onnx); "
                  f"serve it with: tritonserver --model-repository {folder.parent}", soft_wrap=True)


def _export_tensorrt_rtx(settings: Settings, out: Path, precision: str, batch: int, targets: str) -> None:
    from rtmon.engines.tensorrt_rtx import export_engine, export_summary, parse_targets

    with err_console.status(f"building the TensorRT-RTX engine ({precision}, batch {batch}) …"):
        exported = export_engine(settings, out, precision, batch, parse_targets(targets))
    for line in export_summary(*exported):
        console.print(line, soft_wrap=True, highlight=False)


@app.command()
def loadtest(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for triton.json, triton.md, triton.png")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
    engine: Annotated[str, typer.Option("--engine", "-e", help="the engine to serve and to run in process")] = "optimized",
    model: Annotated[str, typer.Option("--model", "-m", help="auto | demo | .pt path | ...")] = "demo",
    streams: Annotated[str, typer.Option("--streams", help="comma-separated numbers of concurrent streams")] = "1,2,4,8,16,32",
    shm: Annotated[str, typer.Option("--shm", help="transports: on (shared memory), off (socket), or on,off")] = "on,off",
    seconds: Annotated[float, typer.Option("--seconds", help="measured seconds per row")] = 4.0,
    warmup: Annotated[float, typer.Option("--warmup", help="unmeasured seconds before each row")] = 1.0,
    url: Annotated[str | None, typer.Option("--url", help="measure this running server instead of starting rtmon serve")] = None,
    use_perf_analyzer: Annotated[bool, typer.Option("--perf-analyzer/--no-perf-analyzer", help="also run perf_analyzer when it runs here")] = True,
) -> None:
    """Load-test `rtmon serve`: N concurrent streams against a real Triton server, next to the same engine in process."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{"model.name": model})
    from rtmon import engines as registry
    from rtmon.triton.loadtest import parse_counts, run_loadtest

    counts, transports = parse_counts(streams, shm, seconds, warmup)
    name = registry.resolve_names([engine])[0]
    run_loadtest(settings, name, counts, transports, out, warmup, seconds, url, use_perf_analyzer, sets or [],
                 echo=console.print)
    console.print(f"report: {out}/ (triton.md, triton.json, triton.png)")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON (the shape is in docs/doctor.md)")] = False,
) -> None:
    """Versions, the GPU's readiness (drivers, PyTorch, Triton, ONNX Runtime, TensorRT) and which engines can run here."""
    from rtmon.doctor import report, report_json

    raise typer.Exit(report_json(console) if as_json else report(console))


@app.command()
def watch(
    ctx: typer.Context,
    mqtt: Annotated[str, typer.Option("--mqtt", help="broker to watch: mqtt://host:port or mqtts://host:port")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """External display: show the live metrics every rtmon instance publishes to an MQTT broker."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{"mqtt.url": mqtt})
    from rtmon.mqtt.address import validate
    from rtmon.watch import run_watch

    validate(settings.mqtt)
    raise typer.Exit(run_watch(settings.mqtt))


def main(argv: list[str] | None = None) -> int:
    cap_malloc_arenas()  # first, before any thread is started
    _setup_logging()
    try:
        code = app(args=argv, prog_name="rtmon", standalone_mode=False)
    except UserError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except typer.TyperException as exc:  # usage errors: unknown option, bad value type, ...
        err_console.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        return 2
    if code == INTERRUPTED:  # typer answers KeyboardInterrupt (Ctrl-C; SIGTERM where a command maps it) so
        err_console.print("interrupted", markup=False, highlight=False)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
