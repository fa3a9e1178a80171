"""The live core with fake engines, each in its own process: isolation, failures, toggling, pause,
recording, snapshots and their version, and what a review found."""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import rtmon.pipeline as pipeline_mod
from rtmon.config import load_settings
from rtmon.core import EngineState, SourceState
from rtmon.metrics import EngineMetrics
from rtmon.models import ModelRef
from rtmon.sinks import H264Writer
from rtmon.sources import resolve_source
from tests.fake_engines import make

MODEL = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {0: "thing"})


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    with H264Writer(path, 30, (320, 240)) as w:
        for i in range(60):
            w.write(np.full((240, 320, 3), (i * 4) % 255, np.uint8))
    return path


def _pipeline(tmp_path, clip, engines: list[str], **kw) -> pipeline_mod.Pipeline:
    sets = {"record.out_dir": str(tmp_path / "rec"), "source.loop": True, "engine.timeout_s": 2.0, **kw.pop("sets", {})}
    settings = load_settings(None, sets)
    sources = kw.pop("sources", [str(clip)])
    specs = [resolve_source(s, tmp_path) for s in sources]
    return pipeline_mod.Pipeline(specs, MODEL, settings, [[e] for e in engines], factory=make, **kw)


def wait(cond, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def settled(value, hold_s: float = 0.5, timeout: float = 15.0):
    """`value()` once it has stayed the same for `hold_s` (something stopped happening)."""
    deadline = time.time() + timeout
    last, since = value(), time.time()
    while time.time() < deadline:
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= hold_s:
            return now
    raise AssertionError(f"still changing after {timeout:.0f} s")


def test_slow_engine_does_not_hold_back_a_fast_one(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast", "slow"], pace="realtime")
    p.start()
    try:
        wait(lambda: p.snapshot().engine("slow").processed >= 10)  # two seconds: the FPS window
        snap = p.snapshot()
    finally:
        p.stop()
    f, s = snap.engine("fast"), snap.engine("slow")
    assert f.processed > 3 * s.processed  # the fast one was not held back to the slow one's pace
    assert s.skipped > 0  # the slow engine skipped to the newest frame
    # What the slow engine's 0.2 s sleep guarantees on any machine, however loaded: at most 5 a second.
    assert 0 < s.fps < 6
    # capacity: frames per busy second (hand-over to boxes back), ~1/delay whatever the source's
    # rate. The slow one's is at most 1 / 0.2 s, and it is always busy (a newer frame is always
    # waiting). The fast one (2 ms) is idle between frames fed at 30 fps as long as it answers
    # within a frame's 33 ms, which even a loaded machine does: its capacity is above its rate.
    assert 0 < s.capacity_fps < 7 and s.busy_pct > 80
    assert f.capacity_fps > f.fps and f.busy_pct < 100


@pytest.mark.parametrize("bad", ["raise-after-3", "exit-after-3", "segv-after-3", "hang-after-3"])
def test_an_engine_that_fails_becomes_failed_and_the_rest_run_on(tmp_path, clip, bad):
    p = _pipeline(tmp_path, clip, ["fast", bad, "fail-load"], pace="realtime")
    p.start()
    try:
        wait(lambda: p.snapshot().engine(bad).state == EngineState.FAILED)
        n = p.snapshot().engine("fast").processed
        wait(lambda: p.snapshot().engine("fast").processed > n + 5)
        snap = p.snapshot()
    finally:
        p.stop()
    assert snap.engine("fast").processed > n and snap.engine("fast").state == EngineState.RUNNING
    error = snap.engine(bad).error
    expected = {"raise": "illegal memory access", "exit": "exited with code 3", "segv": "SIGSEGV",
                "hang": "no result within 2 s"}[bad.split("-")[0]]
    assert expected in error and "\n" not in error
    assert snap.engine("fail-load").state == EngineState.FAILED
    assert "weights are gone" in snap.engine("fail-load").error
    assert all(not r._proc.is_alive() for r in p.runners)


def test_toggle_off_stops_inference_and_on_resumes(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast"])
    p.start()
    try:
        wait(lambda: p.snapshot().engine("fast").processed > 5)
        p.set_enabled("fast", False)
        assert p.snapshot().engine("fast").state == EngineState.OFF
        n = settled(lambda: p.snapshot().engine("fast").processed)  # the frames in flight answered, then none
        assert p.snapshot().engine("fast").state == EngineState.OFF
        p.set_enabled("fast", True)
        wait(lambda: p.snapshot().engine("fast").processed > n + 3)
        snap = p.snapshot().engine("fast")
        assert snap.state == EngineState.RUNNING
    finally:
        p.stop()


def test_pause_stops_the_feed_and_ended_stays_ended(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast"], pace="realtime")
    p.start()
    try:
        wait(lambda: p.snapshot().source.frames > 5)
        p.set_paused(True)
        frames = settled(lambda: p.snapshot().source.frames)
        assert p.snapshot().source.state == SourceState.PAUSED
        p.set_paused(False)
        wait(lambda: p.snapshot().source.frames > frames + 3)
    finally:
        p.stop()


def test_pausing_twice_after_the_end_does_not_say_running(tmp_path, clip):
    """Review finding: `p` twice after the source ended showed "running" again."""
    p = _pipeline(tmp_path, clip, ["fast"], sets={"source.loop": False})
    p.start()
    try:
        wait(lambda: p.snapshot().source.state == SourceState.ENDED)
        p.set_paused(True)
        p.set_paused(False)
        assert p.snapshot().source.state == SourceState.ENDED
    finally:
        p.stop()


def test_recording_toggle_and_snapshot_png(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast", "echo"], pace="realtime")
    p.start()
    try:
        wait(lambda: p.latest("fast") is not None and p.latest("echo") is not None)
        path = p.toggle_recording()
        assert p.snapshot().recording == path
        wait(lambda: p.recorder.written > 10)
        assert p.toggle_recording() == ""
        png = p.save_snapshot_png()
    finally:
        p.stop()
    with av.open(path) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n > 10
    picture = cv2.imread(png)
    assert picture.shape == (720, 1920, 3)  # the split screen: two 960-pixel halves of the 4:3 clip, whole
    assert not list(Path(png).parent.glob(".*"))
    assert p.snapshot().gpu is None  # no GPU here: unknown, not zero


def test_a_recording_that_fails_says_so_and_stops_showing_rec(tmp_path, clip, monkeypatch):
    """Review finding: `Recorder.error` was never read; the TUI kept showing REC."""
    p = _pipeline(tmp_path, clip, ["fast"])
    p.start()
    try:
        wait(lambda: p.latest("fast") is not None)

        def disk_full(self, image):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(H264Writer, "write", disk_full)
        path = Path(p.toggle_recording())
        wait(lambda: p.snapshot().recording_error != "")
        snap = p.snapshot()
    finally:
        p.stop()
    assert snap.recording == "" and "No space left" in snap.recording_error
    assert not path.exists() and not list(path.parent.glob(".*partial*"))


def test_a_failing_engine_process_frees_nothing_in_the_main_process(tmp_path, clip):
    """Review finding: an engine whose load fails was never closed. It now lives (and dies) in
    its own process, so whatever it held is freed with it."""
    p = _pipeline(tmp_path, clip, ["fail-load"])
    p.start()
    try:
        runner = p.runner("fail-load")
        wait(lambda: runner.done.is_set())
        assert not runner._proc.is_alive() and runner._proc.exitcode == 1
    finally:
        p.stop()


def test_the_opened_capture_is_released_when_creating_the_engines_fails(tmp_path, clip, monkeypatch):
    """Review finding: the opened capture leaked when creating an engine raised."""
    released = []
    real = pipeline_mod.Pipeline._release_opened

    def boom(*args, **kwargs):
        raise RuntimeError("no engines today")

    monkeypatch.setattr(pipeline_mod, "EngineRunner", boom)
    monkeypatch.setattr(pipeline_mod.Pipeline, "_release_opened", lambda self: released.append(1) or real(self))
    with pytest.raises(RuntimeError, match="no engines today"):
        _pipeline(tmp_path, clip, ["fast"])
    assert released == [1]


def test_monitor_keeps_retrying_a_camera_that_does_not_open(tmp_path):
    settings = load_settings(None, {"source.reopen_max_s": 0.2})
    with pytest.raises(pipeline_mod.UserError, match="camera 9 does not open"):
        pipeline_mod.Pipeline([resolve_source("9", tmp_path)], MODEL, settings, [["fast"]], factory=make)
    p = pipeline_mod.Pipeline([resolve_source("9", tmp_path)], MODEL, settings, [["fast"]], retry_open=True, factory=make)
    p.start()
    try:
        wait(lambda: p.snapshot().source.state == SourceState.RECONNECTING, 5)
        assert "camera 9" in p.snapshot().source.error
        assert p.snapshot().engine("fast").state == EngineState.RUNNING  # the engines and the UI stay up
    finally:
        p.stop()


def test_optimized_falls_back_to_the_next_engine_that_loads(tmp_path, clip):
    settings = load_settings(None, {"source.loop": True})
    p = pipeline_mod.Pipeline([resolve_source(str(clip), tmp_path)], MODEL, settings, [["fail-load", "fast"]],
                              factory=make)
    p.start()
    try:
        wait(lambda: p.snapshot().engines[0].processed > 3)
        engine = p.snapshot().engines[0]
    finally:
        p.stop()
    assert engine.name == "fast" and engine.state == EngineState.RUNNING
    assert "fail-load did not load (load failed: RuntimeError: weights are gone)" in engine.notice


def test_several_sources_each_with_their_own_figures_and_a_mosaic(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast", "echo"], sources=[str(clip), str(clip), str(clip)], pace="realtime",
                  engine_streams={"fast": {0}})
    p.start()
    try:
        wait(lambda: len(p.snapshot().streams) == 3
             and all("echo" in s.engines and s.engines["echo"].processed > 5 for s in p.snapshot().streams))
        wait(lambda: all(s.engines["echo"].fps > 10 for s in p.snapshot().streams))
        snap = p.snapshot()
        picture = p.split_screen()
    finally:
        p.stop()
    assert [s.source.stream for s in snap.streams] == [0, 1, 2]
    for stream in snap.streams:
        echo = stream.engines["echo"]
        assert echo.processed > 5 and echo.fps > 10 and echo.latency.p99 < 1000
    assert set(snap.streams[0].engines) == {"fast", "echo"}  # the baseline-like engine takes stream 0 only
    assert "fast" not in snap.streams[1].engines
    assert picture.shape[1] == 1920 and picture.shape[0] >= 2 * 540 - 2  # a 2×2 mosaic


def test_the_snapshot_version_changes_with_what_a_snapshot_shows_and_only_then(tmp_path, clip):
    p = _pipeline(tmp_path, clip, ["fast"], pace="realtime")
    p.start()
    try:
        wait(lambda: p.snapshot().engine("fast").processed > 3)
        v = p.snapshot_version()
        wait(lambda: p.snapshot_version() != v)  # results keep arriving
        for command in (lambda: p.set_enabled("fast", False), lambda: p.set_paused(True), p.toggle_recording,
                        p.toggle_recording):
            v = p.snapshot_version()
            command()
            assert p.snapshot_version() > v  # at once: the front ends redraw what the command did
        quiet = settled(p.snapshot_version)  # engine off, feed paused: nothing changes
        snap = p.snapshot()
        assert p.snapshot_version() == quiet  # reading a snapshot changes nothing
        assert snap.engine("fast").state == EngineState.OFF and snap.source.state == SourceState.PAUSED
        p.set_paused(False)
        p.set_enabled("fast", True)
        wait(lambda: p.snapshot_version() > quiet and p.snapshot().engine("fast").processed > snap.engine("fast").processed)
    finally:
        p.stop()


def test_a_runner_s_new_metrics_carry_a_newer_version_than_its_old_ones():
    """A runner that falls back to its next engine replaces its metrics: the version must not go back."""
    old = EngineMetrics("fail-load")
    old.set_state(EngineState.FAILED, "weights are gone")
    assert EngineMetrics("fast").version > old.version
