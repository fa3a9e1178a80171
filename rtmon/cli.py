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

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (see configs/default.toml)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override any setting: section.key=value (repeatable)")]
SourceOpt = Annotated[str | None, typer.Option("--source", "-s", help="auto | sample | camera index | video file | image folder | rtsp/http URL")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="auto | demo | ultralytics name (yolo11n.pt) | .pt path | .yaml architecture")]
MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="publish live metrics to this broker: mqtt://host:port or mqtts://host:port")]
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


def _prepare(settings: Settings):
    """Resolve the model and the source (the slow or failing parts), printing notices."""
    from rtmon.models import resolve_model
    from rtmon.sources import resolve_source

    log = logging.getLogger("rtmon")
    spec = resolve_source(settings.source.uri, _cache_dir(settings))
    name = settings.model.name
    if name == "auto" and spec.kind == "sample":
        # The sample is rtmon's own scene: COCO weights see nothing in it, the demo detector does.
        name = "demo"
        log.info("the sample clip is rtmon's own scene: using the demo detector trained on it (--model overrides)")
    model = resolve_model(name, Path(settings.paths.engines_dir))
    if model.notice:
        log.warning(model.notice)
    return model, spec


def _cache_dir(settings: Settings) -> Path:
    return Path(settings.paths.cache_dir).expanduser() if settings.paths.cache_dir else Path.home() / ".cache" / "rtmon"


def _publisher(settings: Settings):
    """A factory `(snapshot_fn, class_names) -> MetricsPublisher` when mqtt.url is set, else None.

    The URL and TLS files are checked here, before any slow work starts.
    """
    if not settings.mqtt.url:
        return None
    from rtmon.mqtt import MetricsPublisher, validate

    validate(settings.mqtt)
    return lambda snapshot, class_names: MetricsPublisher(settings.mqtt, snapshot, class_names)


@app.callback()
def monitor(
    ctx: typer.Context,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    engines: Annotated[str | None, typer.Option("--engines", "-e", help="comma-separated engines to race, e.g. baseline,ort-cpu")] = None,
    mqtt: MqttOpt = None,
    loop: LoopOpt = None,
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
        "source.uri": source, "model.name": model, "engines.live": _engine_list(engines), "mqtt.url": mqtt,
        "source.loop": loop, "monitor.window": window, "monitor.tui": tui, "monitor.preview": preview,
    })
    from rtmon import engines as registry
    from rtmon.monitor import run_live

    names = registry.resolve_names(settings.engines.live)
    factory = _publisher(settings)
    if settings.monitor.tui and not sys.stdout.isatty():
        raise UserError("the live monitor's terminal UI needs a terminal; without one use `--window --no-tui`, "
                        "`rtmon record` or `rtmon bench`")
    if not settings.monitor.tui and not settings.monitor.window and not settings.mqtt.url:
        raise UserError("--no-tui: nothing would show the monitor; add --window (or --mqtt URL)")
    if settings.monitor.window and not settings.monitor.tui:
        from rtmon.window import check_can_open

        check_can_open()  # with the terminal UI a window that cannot open is a notice there instead
    model_ref, spec = _prepare(settings)
    if spec.kind == "sample" and loop is None:
        settings.source.loop = True  # the demo clip is 20 s; the live view keeps it going
    _exit_now(run_live(settings, model_ref, spec, names, factory))


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
    source: SourceOpt = None,
    model: ModelOpt = None,
    frames: Annotated[int | None, typer.Option("--frames", "-n", help="timed frames per engine")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="untimed warm-up frames per engine")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="micro-batch size, for engines that batch")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report folder (default recordings/bench-<time>)")] = None,
    mqtt: MqttOpt = None,
    concurrent: Annotated[float | None, typer.Option("--concurrent", metavar="SECONDS", help="instead: run all engines together on one feed for SECONDS, as the live view does (concurrent.json/.md)")] = None,
) -> None:
    """Benchmark: the same frames through each engine, each in its own process; writes bench.json/.csv/.md and plots."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "engines.bench": _engine_list(engines), "source.uri": "sample" if source is None else source,
        "model.name": model, "bench.frames": frames, "bench.warmup": warmup, "engines.batch": batch,
        "mqtt.url": mqtt, "bench.out": None if out is None else str(out),
    })
    from rtmon import engines as registry
    from rtmon.bench import check_out_dir, run_bench
    from rtmon.pipeline import timestamped

    names = registry.resolve_names(settings.engines.bench)
    out_dir = Path(settings.bench.out) if settings.bench.out else timestamped(Path(settings.record.out_dir), "bench", "")
    check_out_dir(out_dir)
    factory = _publisher(settings)
    model_ref, spec = _prepare(settings)
    if not model_ref.trained:
        logging.getLogger("rtmon").warning("the model is untrained: speed figures are valid, detections are not")
    if concurrent is not None:
        if concurrent <= 0:
            raise UserError("--concurrent: give a duration in seconds greater than 0")
        from rtmon.bench import run_concurrent

        run_concurrent(settings, model_ref, spec, names, out_dir, console, concurrent)
        console.print(f"report: {out_dir}/ (concurrent.md, concurrent.json)")
        return
    run_bench(settings, model_ref, spec, names, out_dir, console, factory)
    console.print(f"report: {out_dir}/ (bench.md, bench.json, bench.csv, latency.png, timeline.png)")


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
    mqtt: MqttOpt = None,
) -> None:
    """Record the split-screen demo video headless (H.264 MP4): both engines concurrently on one feed."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{
        "record.left": left, "record.right": right, "source.uri": source, "model.name": model,
        "record.frames": frames, "record.duration": duration, "source.loop": loop, "mqtt.url": mqtt,
    })
    from rtmon import engines as registry
    from rtmon.record import run_record

    left_name, right_name = registry.resolve_names([settings.record.left])[0], registry.resolve_names([settings.record.right])[0]
    factory = _publisher(settings)
    model_ref, spec = _prepare(settings)
    if settings.record.frames == 0 and settings.record.duration == 0 and spec.kind in {"camera", "stream"}:
        console.print("recording until Ctrl-C …")
    path = run_record(settings, model_ref, spec, left_name, right_name, out, console, factory)
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
        "engines.bench": _engine_list(engines), "source.uri": "sample" if source is None else source,
        "model.name": model,
    })
    from rtmon import engines as registry
    from rtmon.bench import check_out_dir
    from rtmon.evaluate import run_eval
    from rtmon.pipeline import timestamped

    names = registry.resolve_names(settings.engines.bench)
    out_dir = out or timestamped(Path(settings.record.out_dir), "eval", "")
    check_out_dir(out_dir)
    model_ref, spec = _prepare(settings)
    run_eval(settings, model_ref, spec, names, out_dir, console, frames)
    console.print(f"report: {out_dir}/eval.json")


@app.command()
def doctor() -> None:
    """Versions, the GPU, and which engines can run here (and how to enable the others)."""
    from rtmon.doctor import report

    raise typer.Exit(report(console))


@app.command()
def watch(
    ctx: typer.Context,
    mqtt: Annotated[str, typer.Option("--mqtt", help="broker to watch: mqtt://host:port or mqtts://host:port")],
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """External display: show the live metrics every rtmon instance publishes to an MQTT broker."""
    settings = _parent_settings(ctx, config=config, sets=sets, **{"mqtt.url": mqtt})
    from rtmon.mqtt import validate
    from rtmon.watch import run_watch

    validate(settings.mqtt)
    raise typer.Exit(run_watch(settings.mqtt))


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    try:
        code = app(args=argv, prog_name="rtmon", standalone_mode=False)
    except UserError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, bad value type, ...
        err_console.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
