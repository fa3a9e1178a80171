"""The live core: sources → engine runners → results and metrics, for every front end to read.

    FrameReader(stream 0) ─┐                  ┌─▶ EngineRunner(baseline)  ─ its own process ─┐
    FrameReader(stream 1) ─┼─▶ FrameBus ──────┤                                             ├─▶ Result ─▶ EngineMetrics
    …                      ┘   (latest)       └─▶ EngineRunner(optimized) ─ its own process ─┘           latest boxes

    newest frames + latest results + snapshot ─▶ render.compose() ─▶ window, TUI preview, sinks (MP4, PNG)

Readers decode in threads of this process; each engine runs in its own process
(`rtmon.runner`), taking the newest frame of each of its streams whenever it has room, so a slow
or failing engine never holds back another engine, the feed or the UI, and engines never share
an interpreter. Front ends (the TUI, the window, MQTT, Prometheus, `rtmon record`) read
`Pipeline.snapshot()` (and `snapshot_version()` to see whether it changed) and call the
`MonitorControl` methods; nothing downstream calls back into an engine. The picture is drawn by
`rtmon.render` from what the pipeline hands it, and written by `rtmon.sinks`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from rtmon import engines as registry
from rtmon import gpu, render
from rtmon.bus import FrameBus
from rtmon.core import EngineInfo, EngineState, Frame, Result
from rtmon.errors import UserError
from rtmon.files import timestamped
from rtmon.metrics import change_stamp
from rtmon.models import ModelRef
from rtmon.runner import EngineRunner, RunnerOptions, slot_bytes_for
from rtmon.sinks import Recorder, save_png
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
        self._version_lock = threading.Lock()
        self._watched: tuple = ()
        self._watched_stamp = change_stamp()

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
        self.recorder = Recorder(self.split_screen, lambda: self.finished, path, fps, self.settings.record.crf,
                                 max_frames)
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
        """The picture of this instant (`render.compose`), or None before any engine answered."""
        if all(r.latest is None for r in self.runners):
            return None
        return render.compose(self._newest_frames(), self._latest_results(), self.snapshot(), self.model.class_names)

    def save_snapshot_png(self) -> str:
        image = self.split_screen()
        if image is None:
            raise RuntimeError("no frame processed yet")
        return str(save_png(image, Path(self.settings.record.out_dir)))

    def snapshot_version(self) -> int:
        """See `MonitorControl.snapshot_version`: the newest change stamp of the engines' metrics
        (results, states, memory) and of what this pipeline notices by looking (source states,
        a recording that started, stopped or failed)."""
        watched = (tuple(r.status.state for r in self.readers), self.recorder is None or self.recorder.done.is_set())
        with self._version_lock:
            if watched != self._watched:  # readers and the recorder change these in their own threads
                self._watched, self._watched_stamp = watched, change_stamp()
            return max(self._watched_stamp, *(r.metrics.version for r in self.runners))

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
            compared=(self.runner(self.record_pair[0]).name, self.runner(self.record_pair[1]).name),
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _source_status(self, stream: int, reader: FrameReader) -> SourceStatus:
        st, spec = reader.status, reader.spec
        return SourceStatus(spec.uri, spec.kind, st.width, st.height, st.fps, st.nominal_fps, st.state, st.error,
                            st.frames, st.reconnects, stream, spec.label)

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

    def _newest_frames(self) -> dict[int, Frame]:
        return {i: frame for i in range(len(self.readers)) if (frame := self.bus.newest(i)) is not None}

    def _latest_results(self) -> dict[str, dict[int, Result]]:
        return {r.name: dict(r.latest_by_stream) for r in self.runners}


def _named(callback: Callable[[str, Result, int], None], label: str, result: Result, skipped: int) -> None:
    callback(result.engine, result, skipped)

