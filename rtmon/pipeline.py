"""The live core: one feed, several engines concurrently, results to metrics and renderers.

    FrameReader ──FrameBus──┬── EngineWorker(baseline) ──Result──► EngineMetrics, latest result
                            ├── EngineWorker(optimized) ─Result──► EngineMetrics, latest result
                            └── Recorder (every frame) ──► split screen ──► H264Writer

Each engine runs in its own thread with the `latest` policy, so a slow or failing engine never
holds back another engine, the feed or the UI; its failure becomes its state. Front ends (the
TUI, MQTT, `rtmon record`) read `Pipeline.snapshot()` and call the `MonitorControl` methods;
nothing downstream calls back into an engine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from rtmon import engines as registry
from rtmon import gpu
from rtmon.core import EngineInfo, Result
from rtmon.engines.base import Engine
from rtmon.errors import UserError
from rtmon.metrics import EngineMetrics
from rtmon.models import ModelRef
from rtmon.render import render_half, split_screen
from rtmon.sinks import H264Writer
from rtmon.snapshot import MonitorSnapshot, SourceStatus
from rtmon.sources import FrameBus, FrameReader, SourceSpec, Subscription, open_capture

log = logging.getLogger(__name__)

HALF_WIDTH = 960


class EngineWorker(threading.Thread):
    """Loads one engine, then infers on the newest frame whenever it is free."""

    def __init__(self, engine: Engine, sub: Subscription, metrics: EngineMetrics) -> None:
        super().__init__(name=f"rtmon-engine-{engine.info.name}", daemon=True)
        self.engine, self.sub, self.metrics = engine, sub, metrics
        self.latest: Result | None = None
        self.ready = threading.Event()
        self._enabled = threading.Event()
        self._enabled.set()
        self._halt = threading.Event()

    def set_enabled(self, enabled: bool) -> None:
        if enabled:
            self._enabled.set()
        else:
            self._enabled.clear()
        if self.metrics.state in {"running", "off"}:
            self.metrics.set_state("running" if enabled else "off")

    def stop(self) -> None:
        self._halt.set()
        self._enabled.set()

    def run(self) -> None:
        try:
            self.metrics.set_state("loading")
            before = gpu.process_memory_mib()
            self.engine.load()
            after = gpu.process_memory_mib()
            # Engines share this process, so NVML cannot split its memory among them; what
            # this engine added while it loaded and warmed up (engines load one at a time) is.
            if after is not None:
                self.metrics.gpu_mem_mib = after - (before or 0.0)
            self.metrics.set_state("running" if self._enabled.is_set() else "off")
        except Exception as exc:
            self._fail("load", exc)
            return
        finally:
            self.ready.set()
        try:
            self._loop()
        except Exception as exc:
            self._fail("inference", exc)
        finally:
            self.engine.close()

    def _loop(self) -> None:
        while not self._halt.is_set():
            if not self._enabled.is_set():
                self._enabled.wait(0.2)  # off: no inference, no GPU work
                continue
            try:
                frame, skipped = self.sub.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                self.metrics.set_state("ended")
                return
            result = self.engine.infer(frame)
            self.metrics.record(result, skipped)
            self.latest = result

    def _fail(self, stage: str, exc: Exception) -> None:
        message = f"{stage} failed: {type(exc).__name__}: {exc}".splitlines()[0][:200]
        log.error("engine %s %s", self.engine.info.name, message)
        self.metrics.set_state("failed", message)


class Pipeline:
    """Runs a source and engines; implements `rtmon.snapshot.MonitorControl`."""

    def __init__(
        self,
        spec: SourceSpec,
        model: ModelRef,
        settings,
        engine_names: list[str],
        *,
        max_frames: int = 0,
        realtime: bool | None = None,
        record_pair: tuple[str, str] | None = None,
        retry_open: bool = False,
    ) -> None:
        """`retry_open`: a camera or stream that does not open yet is retried in the background
        (the live monitor stays up and says so) instead of failing at once."""
        self.spec, self.model, self.settings = spec, model, settings
        self.names = engine_names
        self.record_pair = record_pair or (engine_names[0], engine_names[-1])
        self._opened = self._open(spec, retry_open)
        self.bus = FrameBus()
        self.reader = FrameReader(
            spec,
            self.bus,
            loop=settings.source.loop,
            realtime=settings.source.realtime if realtime is None else realtime,
            max_frames=max_frames,
            reopen_max_s=settings.source.reopen_max_s,
            opened=self._opened,
        )
        self.metrics = {n: EngineMetrics(n) for n in engine_names}
        self.workers = {
            n: EngineWorker(registry.create(n, model, settings), self.bus.subscribe(n, "latest"), self.metrics[n])
            for n in engine_names
        }
        self.recorder: Recorder | None = None
        self._stopping = threading.Event()
        self._t0 = time.perf_counter()
        self._gpu_cache: tuple[float, gpu.GpuSample | None] = (0.0, None)

    @staticmethod
    def _open(spec: SourceSpec, retry_open: bool):
        """Open the source before any engine loads, so a bad one fails fast."""
        try:
            return open_capture(spec)
        except UserError:
            if retry_open and spec.kind in {"camera", "stream"}:
                return None  # the reader keeps trying and its status says so
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, wait_ready: bool = True, timeout: float = 600.0) -> None:
        """Load the engines (each in its own thread) and start the feed."""
        self.load_engines(wait_ready, timeout)
        self.start_feed()

    def load_engines(self, wait: bool = True, timeout: float = 600.0) -> None:
        """Start the engine workers one after another, each once the previous has loaded.

        One at a time so each engine's share of GPU memory can be measured; with `wait=False`
        this happens in the background and the feed may already run.
        """

        def load_all() -> None:
            deadline = time.monotonic() + timeout
            for w in self.workers.values():
                if self._stopping.is_set():
                    return
                w.start()
                w.ready.wait(max(deadline - time.monotonic(), 0))

        if wait:
            load_all()
        else:
            threading.Thread(target=load_all, name="rtmon-loader", daemon=True).start()

    def load_engines_or_raise(self, timeout: float = 600.0) -> None:
        """Load every engine now; a UserError naming the first one that failed to load."""
        self.load_engines(wait=True, timeout=timeout)
        failed = [e for e in self.snapshot().engines if e.state == "failed"]
        if failed:
            raise UserError(f"engine: {failed[0].name}: {failed[0].error}")

    def start_feed(self) -> None:
        self._t0 = time.perf_counter()
        self.reader.start()

    def stop(self) -> None:
        self._stopping.set()
        self.reader.stop()
        for w in self.workers.values():
            w.stop()
        self.stop_recording()
        for w in self.workers.values():
            if w.is_alive():
                w.join(timeout=5)
        self.reader.join(timeout=5)

    @property
    def finished(self) -> bool:
        return not self.reader.is_alive() and self.reader.status.state in {"ended", "failed"}

    # -- MonitorControl ----------------------------------------------------------------------
    def set_enabled(self, engine: str, enabled: bool) -> None:
        self.workers[engine].set_enabled(enabled)

    def set_paused(self, paused: bool) -> None:
        self.reader.pause(paused)

    def toggle_recording(self) -> str:
        if self.recorder:
            self.stop_recording()
            return ""
        return str(self.start_recording())

    def start_recording(self, path: Path | None = None, max_frames: int = 0) -> Path:
        path = path or timestamped(Path(self.settings.record.out_dir), "rtmon", ".mp4")
        sub = self.bus.subscribe("recorder", "every", capacity=self.settings.source.buffer)
        fps = (self._opened[0].nominal_fps if self._opened else None) or 30.0
        self.recorder = Recorder(self, sub, path, fps, max_frames)
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
        left, right = self.record_pair
        if self.latest(left) is None and self.latest(right) is None:
            return None
        return self.compose(None)

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
        st = self.reader.status
        source = SourceStatus(
            uri=self.spec.uri,
            kind=self.spec.kind,
            width=st.width,
            height=st.height,
            fps=st.fps,
            nominal_fps=st.nominal_fps,
            state=st.state,
            error=st.error,
            frames=st.frames,
        )
        return MonitorSnapshot(
            time=time.time(),
            uptime_s=now - self._t0,
            model=self.model.label,
            sources=(source,),
            engines=tuple(self.metrics[n].snapshot(now) for n in self.names),
            engine_info={n: w.engine.info for n, w in self.workers.items()},
            gpu=self._gpu_sample(now),
            recording=str(self.recorder.path) if self.recorder else "",
        )

    # -- helpers ----------------------------------------------------------------------------
    def latest(self, engine: str) -> Result | None:
        return self.workers[engine].latest

    def info(self, engine: str) -> EngineInfo:
        return self.workers[engine].engine.info

    def _gpu_sample(self, now: float) -> gpu.GpuSample | None:
        # NVML calls cost ~1 ms; several readers per second share one reading.
        t, sample = self._gpu_cache
        if now - t > 0.25:
            sample = gpu.sample()
            self._gpu_cache = (now, sample)
        return sample

    def compose(self, current: np.ndarray | None) -> np.ndarray:
        """The split screen: each half is its engine's last processed frame, annotated."""
        halves = []
        for name in self.record_pair:
            result = self.latest(name)
            snap = self.metrics[name].snapshot()
            image = result.frame.image if result else current
            if image is None:
                image = np.zeros((540, HALF_WIDTH, 3), np.uint8)
            detections = result.detections if result else None
            title = f"{name} ({self.info(name).precision}, {self.info(name).device})"
            names = self.model.class_names
            halves.append(render_half(image, detections, names, snap, title, HALF_WIDTH))
        return split_screen(halves[0], halves[1], HALF_WIDTH)


class Recorder(threading.Thread):
    """Writes one split-screen frame per source frame to an H.264 MP4."""

    def __init__(self, pipeline: Pipeline, sub: Subscription, path: Path, fps: float, max_frames: int) -> None:
        super().__init__(name="rtmon-recorder", daemon=True)
        self.pipeline, self.sub, self.path = pipeline, sub, path
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
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("recording failed: %s", self.error)
        finally:
            self.sub.close()
            if self._writer is not None:
                self.result = self._writer.close()
            self.done.set()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                frame, _ = self.sub.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                return
            image = self.pipeline.compose(frame.image)
            if self._writer is None:
                self._writer = H264Writer(self.path, self.fps, (image.shape[1], image.shape[0]),
                                          self.pipeline.settings.record.crf)
            self._writer.write(image)
            self.written += 1
            if self.max_frames and self.written >= self.max_frames:
                return


def timestamped(folder: Path, stem: str, suffix: str) -> Path:
    return folder / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{suffix}"


def run_until(pipeline: Pipeline, done: Callable[[], bool], poll: float = 0.1) -> None:
    """Block until `done()` or the source ends; Ctrl-C propagates to the caller."""
    while not done() and not pipeline.finished:
        time.sleep(poll)
