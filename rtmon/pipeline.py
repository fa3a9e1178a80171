"""The live core: sources → engine runners → results → metrics, picture, recording.

    FrameReader(stream 0) ─┐                  ┌─▶ EngineRunner(baseline)  ─ its own process ─┐
    FrameReader(stream 1) ─┼─▶ FrameBus ──────┤                                             ├─▶ Result ─▶ EngineMetrics
    …                      ┘   (latest)       └─▶ EngineRunner(optimized) ─ its own process ─┘           latest boxes
                                                                                    Recorder ◀── compose() ◀─┘

Readers decode in threads of this process; each engine runs in its own process
(`rtmon.runner`), taking the newest frame of each of its streams whenever it has room, so a slow
or failing engine never holds back another engine, the feed or the UI, and engines never share
an interpreter. Front ends (the TUI, the window, MQTT, Prometheus, `rtmon record`) read
`Pipeline.snapshot()` and call the `MonitorControl` methods; nothing downstream calls back into
an engine.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from rtmon import engines as registry
from rtmon import gpu
from rtmon.bus import FrameBus
from rtmon.core import EngineInfo, EngineState, Result
from rtmon.errors import UserError
from rtmon.metrics import headline
from rtmon.models import ModelRef
from rtmon.render import HalfView, draw_headline, mosaic, render_half, split_screen, stream_tile, tile_width
from rtmon.runner import EngineRunner, RunnerOptions, slot_bytes_for
from rtmon.sinks import H264Writer
from rtmon.snapshot import MonitorSnapshot, SourceStatus, StreamSnapshot
from rtmon.sources import FrameReader, SourceSpec, open_capture

log = logging.getLogger(__name__)

DEFAULT_SLOT = (1920, 1080)  # ring slots are sized for this when a source's size is not known yet
GPU_SAMPLE_S = 0.25


def resolve_pace(pace: str, specs: list[SourceSpec]) -> str:
    """`auto`: max for the sample clip (the difference between engines shows), realtime for the
    rest. Cameras and streams are paced by the device whatever the setting."""
    if pace != "auto":
        return pace
    return "max" if all(s.kind == "sample" for s in specs) else "realtime"


class Pipeline:
    """Runs sources and engines; implements `rtmon.snapshot.MonitorControl`."""

    def __init__(
        self,
        specs: list[SourceSpec],
        model: ModelRef,
        settings,
        engines: list[list[str]],
        *,
        max_frames: int = 0,
        pace: str | None = None,
        record_pair: tuple[str, str] | None = None,
        retry_open: bool = False,
        engine_streams: dict[str, set[int]] | None = None,
        on_result: Callable[[str, Result, int], None] | None = None,
        factory: Callable | None = None,
    ) -> None:
        """`engines`: for each engine, the names to try in order (see `registry.resolve_engines`).
        `retry_open`: a camera or stream that does not open yet is retried in the background (the
        live monitor stays up and says so) instead of failing at once. `engine_streams`: the
        streams an engine takes (default: all)."""
        self.specs, self.model, self.settings = specs, model, settings
        self.pace = resolve_pace(pace or settings.source.pace, specs)
        self._opened = self._open_all(specs, retry_open)
        self.bus = FrameBus()
        self._log_dir = Path(tempfile.mkdtemp(prefix="rtmon-engines-"))
        try:
            self.readers = [
                FrameReader(spec, self.bus, stream=i, loop=settings.source.loop, pace=self.pace, max_frames=max_frames,
                            reopen_max_s=settings.source.reopen_max_s, cache_mb=settings.source.cache_mb, opened=opened)
                for i, (spec, opened) in enumerate(zip(specs, self._opened, strict=True))
            ]
            options = RunnerOptions.of(settings, log_dir=self._log_dir, factory=factory)
            self.runners = [
                EngineRunner(candidates, model, settings, options, role=registry.role(candidates[0]),
                             on_result=None if on_result is None else partial(_named, on_result, candidates[0]))
                for candidates in engines
            ]
        except BaseException:
            self._release_opened()
            raise
        names = [r.name for r in self.runners]
        self.record_pair = record_pair or (names[0], names[-1])
        self.engine_streams = engine_streams or {}
        self.recorder: Recorder | None = None
        self.recording_error = ""
        self._stopping = threading.Event()
        self._t0 = time.perf_counter()
        self._gpu_cache: tuple[float, gpu.GpuSample | None] = (0.0, None)

    # -- opening --------------------------------------------------------------------------------
    @staticmethod
    def _open_all(specs: list[SourceSpec], retry_open: bool) -> list:
        """Open every source before any engine loads, so a bad one fails fast (and nothing
        opened is left behind when one fails)."""
        opened: list = []
        try:
            for spec in specs:
                try:
                    opened.append(open_capture(spec))
                except UserError:
                    if retry_open and spec.kind in {"camera", "stream"}:
                        opened.append(None)  # its reader keeps trying and its status says so
                    else:
                        raise
        except BaseException:
            for item in opened:
                if item is not None:
                    item[0].release()
            raise
        return opened

    def _release_opened(self) -> None:
        for item in self._opened:
            if item is not None:
                item[0].release()

    def _slot_bytes(self) -> int:
        sizes = [slot_bytes_for(first.shape[1], first.shape[0]) for item in self._opened if item for first in [item[1]]]
        return max([*sizes, slot_bytes_for(*DEFAULT_SLOT)])

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, wait_ready: bool = True) -> None:
        """Start loading every engine (each in its own process) and the feed."""
        self.load_engines(wait=wait_ready)
        self.start_feed()

    def load_engines(self, wait: bool = True) -> None:
        """Start the engine processes (they load side by side: each measures its own memory)
        and have each follow the feed; with `wait`, return once all are loaded or failed."""
        slot_bytes = self._slot_bytes()
        shapes = {tuple(item[1].shape) for item in self._opened if item}
        shape = next(iter(shapes)) if len(shapes) == 1 else None  # several sizes: plans are made as they come
        for runner in self.runners:
            runner.start(slot_bytes, frame_shape=shape)
            streams = self.engine_streams.get(runner.name)
            runner.follow(self.bus.subscribe(runner.name, streams=streams))
        if wait:
            for runner in self.runners:
                runner.wait_loaded()

    def load_engines_or_raise(self) -> None:
        """Load every engine now; a UserError naming the first one that failed to load."""
        self.load_engines(wait=True)
        for runner in self.runners:
            if runner.metrics.state == EngineState.FAILED:
                raise UserError(f"engine: {runner.name}: {runner.metrics.error}")

    def start_feed(self) -> None:
        self._t0 = time.perf_counter()
        for reader in self.readers:
            reader.start()

    def stop(self) -> None:
        """Stop everything this pipeline started: readers, recording, engine processes."""
        self._stopping.set()
        for reader in self.readers:
            reader.stop()
        self.stop_recording()
        for runner in self.runners:
            runner.stop()
        for reader in self.readers:
            if reader.is_alive():
                reader.join(timeout=5)
        if not any(reader.ident for reader in self.readers):  # never started: the captures are ours
            self._release_opened()
        failed = [r.name for r in self.runners if r.metrics.state == EngineState.FAILED]
        if failed:  # what the failed engines printed is the first thing to read
            log.warning("engine output kept in %s (%s failed)", self._log_dir, ", ".join(failed))
            return
        with contextlib.suppress(OSError):
            for path in self._log_dir.iterdir():
                path.unlink()
            self._log_dir.rmdir()

    @property
    def finished(self) -> bool:
        """Every source has ended (or failed) and every engine has answered what it took."""
        return all(not r.is_alive() and r.status.state.finished for r in self.readers)

    # -- MonitorControl ----------------------------------------------------------------------------
    def runner(self, engine: str) -> EngineRunner:
        return next(r for r in self.runners if engine in (r.name, r.label))

    def set_enabled(self, engine: str, enabled: bool) -> None:
        self.runner(engine).set_enabled(enabled)

    def set_paused(self, paused: bool) -> None:
        for reader in self.readers:
            reader.pause(paused)

    def toggle_recording(self) -> str:
        if self.recorder:
            self.stop_recording()
            return ""
        return str(self.start_recording())

    def start_recording(self, path: Path | None = None, max_frames: int = 0) -> Path:
        path = path or timestamped(Path(self.settings.record.out_dir), "rtmon", ".mp4")
        fps = self.readers[0].status.nominal_fps or 30.0
        self.recording_error = ""
        self.recorder = Recorder(self, path, fps, max_frames)
        self.recorder.start()
        return path

    def stop_recording(self) -> Path | None:
        rec, self.recorder = self.recorder, None
        if rec is None:
            return None
        rec.stop()
        rec.join(timeout=30)
        return rec.result

    def split_screen(self) -> np.ndarray | None:
        if all(r.latest is None for r in self.runners):
            return None
        return self.compose()

    def save_snapshot_png(self) -> str:
        image = self.split_screen()
        if image is None:
            raise RuntimeError("no frame processed yet")
        path = timestamped(Path(self.settings.record.out_dir), "snapshot", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image):
            raise OSError(f"cannot write {path}")
        return str(path)

    def snapshot(self) -> MonitorSnapshot:
        now = time.perf_counter()
        self._check_recorder()
        sources = tuple(self._source_status(i, reader) for i, reader in enumerate(self.readers))
        streams = ()
        if len(sources) > 1:
            per_engine = {r.name: r.metrics.streams(now) for r in self.runners}
            streams = tuple(
                StreamSnapshot(src, {name: figures[src.stream] for name, figures in per_engine.items()
                                     if src.stream in figures})
                for src in sources
            )
        return MonitorSnapshot(
            time=time.time(),
            uptime_s=now - self._t0,
            model=self.model.label,
            sources=sources,
            engines=tuple(r.metrics.snapshot(now) for r in self.runners),
            engine_info={r.name: r.info for r in self.runners},
            gpu=self._gpu_sample(now),
            recording=str(self.recorder.path) if self.recorder else "",
            recording_error=self.recording_error,
            pace=self.pace,
            streams=streams,
            compared=self.record_pair,
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _source_status(self, stream: int, reader: FrameReader) -> SourceStatus:
        st, spec = reader.status, reader.spec
        return SourceStatus(spec.uri, spec.kind, st.width, st.height, st.fps, st.nominal_fps, st.state, st.error,
                            st.frames, st.reconnects, stream)

    def _check_recorder(self) -> None:
        """A recording that failed says so, and stops showing as running."""
        rec = self.recorder
        if rec is not None and rec.done.is_set() and rec.error:
            self.recording_error = rec.error
            self.recorder = None

    def latest(self, engine: str) -> Result | None:
        return self.runner(engine).latest

    def info(self, engine: str) -> EngineInfo:
        return self.runner(engine).info

    def _gpu_sample(self, now: float) -> gpu.GpuSample | None:
        # NVML calls cost ~1 ms; several readers per second share one reading.
        t, sample = self._gpu_cache
        if now - t > GPU_SAMPLE_S:
            sample = gpu.sample()
            self._gpu_cache = (now, sample)
        return sample

    def _newest(self, stream: int) -> tuple[np.ndarray, int] | None:
        frame = self.bus.newest(stream)
        return None if frame is None else (frame.image, frame.index)

    def compose(self) -> np.ndarray:
        """The split screen of the compared pair (one source) or the mosaic (several)."""
        if len(self.readers) > 1:
            return self._mosaic()
        snaps = {r.name: r.metrics.snapshot() for r in self.runners}
        newest = self._newest(0)
        halves = []
        for name in self.record_pair:
            runner = self.runner(name)
            result = runner.latest_by_stream.get(0)
            image, index = newest or ((result.frame.image, result.frame.index) if result else (None, 0))
            if image is None:
                image = np.zeros((540, 960, 3), np.uint8)
            view = HalfView(image, result, snaps.get(runner.name), runner.info, self.pace, index)
            halves.append(render_half(view, runner.name, self.model.class_names))
        return draw_headline(split_screen(halves[0], halves[1]), headline(tuple(snaps.values()), self.record_pair[1]))

    def _mosaic(self) -> np.ndarray:
        """Every stream as a tile with the compared optimized engine's boxes and its figures."""
        runner = self.runner(self.record_pair[1])
        figures = runner.metrics.streams()
        width = tile_width(len(self.readers))
        tiles = []
        for i, reader in enumerate(self.readers):
            newest = self._newest(i)
            image = newest[0] if newest else np.zeros((540, 960, 3), np.uint8)
            fig = figures.get(i)
            p99 = fig.latency.p99 if fig and fig.latency else None
            fps = fig.fps if fig else None
            caption = [f"{i}: {reader.spec.label} · {reader.status.state}",
                       f"{runner.name}: FPS {fps:.1f}" if fps is not None else f"{runner.name}: FPS n/a",
                       f"P99 {p99:.1f} ms" if p99 is not None else "P99 n/a"]
            tiles.append(stream_tile(image, runner.latest_by_stream.get(i), self.model.class_names, caption, width))
        return mosaic(tiles)


class Recorder(threading.Thread):
    """Writes the composed picture to an H.264 MP4 at the source's frame rate, on the clock."""

    def __init__(self, pipeline: Pipeline, path: Path, fps: float, max_frames: int) -> None:
        super().__init__(name="rtmon-recorder", daemon=True)
        self.pipeline, self.path = pipeline, path
        self.fps, self.max_frames = fps, max_frames
        self.result: Path | None = None
        self.error = ""
        self.written = 0
        self.done = threading.Event()
        self._halt = threading.Event()
        self._writer: H264Writer | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.error("recording failed: %s", self.error)
            if self._writer is not None:
                self._writer.abort()  # a recording that failed is not a recording
                self._writer = None
        finally:
            if self._writer is not None:
                self.result = self._writer.close()
            self.done.set()

    def _loop(self) -> None:
        period = 1.0 / self.fps
        next_due = time.perf_counter()
        while not self._halt.is_set():
            if self.pipeline.finished and self.written:
                return
            if all(r.latest is None for r in self.pipeline.runners):
                self._halt.wait(0.02)  # nothing processed yet: nothing to show
                next_due = time.perf_counter()
                continue
            image = self.pipeline.compose()
            if self._writer is None:
                self._writer = H264Writer(self.path, self.fps, (image.shape[1], image.shape[0]),
                                          self.pipeline.settings.record.crf)
            self._writer.write(image)
            self.written += 1
            if self.max_frames and self.written >= self.max_frames:
                return
            next_due += period
            self._halt.wait(max(next_due - time.perf_counter(), 0.0))


def _named(callback: Callable[[str, Result, int], None], label: str, result: Result, skipped: int) -> None:
    callback(result.engine, result, skipped)


def timestamped(folder: Path, stem: str, suffix: str) -> Path:
    return folder / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{suffix}"
