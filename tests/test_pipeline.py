"""The live core with fake engines: isolation, failure, toggling, pause, recording, snapshots."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

import rtmon.pipeline as pipeline_mod
from rtmon.config import load_settings
from rtmon.core import Detections, EngineInfo, Frame, Result, StageTimes
from rtmon.models import ModelRef
from rtmon.sinks import H264Writer
from rtmon.sources import resolve_source


class FakeEngine:
    def __init__(self, name: str, delay: float = 0.0, fail_after: int | None = None, fail_load: bool = False):
        self.info = EngineInfo(name, "fake", "fp32", "cpu", 640)
        self.class_names = {0: "thing"}
        self.delay, self.fail_after, self.fail_load = delay, fail_after, fail_load
        self.calls = 0
        self.closed = False

    def load(self) -> None:
        if self.fail_load:
            raise RuntimeError("weights are gone")

    def infer(self, frame: Frame) -> Result:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("CUDA error: an illegal memory access")
        time.sleep(self.delay)
        det = Detections(np.array([[10, 10, 60, 60]]), np.array([0.9]), np.array([0]))
        return Result(self.info.name, frame, det, StageTimes(0.1, self.delay * 1e3, 0.1))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    with H264Writer(path, 30, (320, 240)) as w:
        for i in range(60):
            w.write(np.full((240, 320, 3), (i * 4) % 255, np.uint8))
    return path


def _pipeline(tmp_path, clip, monkeypatch, engines: dict[str, FakeEngine], **kw):
    monkeypatch.setattr(pipeline_mod.registry, "create", lambda name, model, settings: engines[name])
    settings = load_settings(None, {"record.out_dir": str(tmp_path / "rec"), "source.loop": True})
    model = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {0: "thing"})
    return pipeline_mod.Pipeline(resolve_source(str(clip), tmp_path), model, settings, list(engines), **kw)


def _wait(cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_slow_engine_does_not_hold_back_a_fast_one(tmp_path, clip, monkeypatch):
    fast, slow = FakeEngine("fast", 0.002), FakeEngine("slow", 0.25)
    p = _pipeline(tmp_path, clip, monkeypatch, {"fast": fast, "slow": slow})
    p.start()
    try:
        time.sleep(2.0)
        snap = p.snapshot()
    finally:
        p.stop()
    f, s = snap.engine("fast"), snap.engine("slow")
    assert f.processed > 3 * s.processed
    assert s.skipped > 0  # the slow engine skipped to the newest frame
    assert f.fps > 15 and s.fps < 6
    assert fast.closed and slow.closed


def test_failing_engine_becomes_failed_and_the_rest_run_on(tmp_path, clip, monkeypatch):
    good, bad, broken = FakeEngine("good", 0.005), FakeEngine("bad", 0.005, fail_after=3), FakeEngine("broken", fail_load=True)
    p = _pipeline(tmp_path, clip, monkeypatch, {"good": good, "bad": bad, "broken": broken})
    p.start()
    try:
        _wait(lambda: p.snapshot().engine("bad").state == "failed")
        n = p.snapshot().engine("good").processed
        time.sleep(0.5)
        snap = p.snapshot()
    finally:
        p.stop()
    assert snap.engine("good").processed > n and snap.engine("good").state == "running"
    assert "illegal memory access" in snap.engine("bad").error
    assert snap.engine("broken").state == "failed" and "weights are gone" in snap.engine("broken").error


def test_toggle_off_stops_inference_and_on_resumes(tmp_path, clip, monkeypatch):
    a = FakeEngine("a", 0.005)
    p = _pipeline(tmp_path, clip, monkeypatch, {"a": a})
    p.start()
    try:
        _wait(lambda: a.calls > 5)
        p.set_enabled("a", False)
        assert p.snapshot().engine("a").state == "off"
        time.sleep(0.3)
        calls = a.calls
        time.sleep(0.5)
        assert a.calls == calls
        p.set_enabled("a", True)
        _wait(lambda: a.calls > calls + 3)
        assert p.snapshot().engine("a").state == "running"
    finally:
        p.stop()


def test_pause_stops_the_feed(tmp_path, clip, monkeypatch):
    p = _pipeline(tmp_path, clip, monkeypatch, {"a": FakeEngine("a")})
    p.start()
    try:
        _wait(lambda: p.snapshot().source.frames > 5)
        p.set_paused(True)
        time.sleep(0.2)
        frames = p.snapshot().source.frames
        time.sleep(0.4)
        assert p.snapshot().source.frames <= frames + 1
        assert p.snapshot().source.state == "paused"
        p.set_paused(False)
        _wait(lambda: p.snapshot().source.frames > frames + 3)
    finally:
        p.stop()


def test_recording_toggle_and_snapshot_png(tmp_path, clip, monkeypatch):
    p = _pipeline(tmp_path, clip, monkeypatch, {"a": FakeEngine("a"), "b": FakeEngine("b")})
    p.start()
    try:
        _wait(lambda: p.latest("a") is not None and p.latest("b") is not None)
        path = p.toggle_recording()
        assert p.snapshot().recording == path
        time.sleep(1.0)
        assert p.toggle_recording() == ""
        png = p.save_snapshot_png()
    finally:
        p.stop()
    with av.open(path) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n > 10
    assert Path(png).stat().st_size > 0
    assert p.snapshot().gpu is None  # no GPU here: unknown, not zero


def test_monitor_keeps_retrying_a_camera_that_does_not_open(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline_mod.registry, "create", lambda name, model, settings: FakeEngine(name))
    settings = load_settings(None, {"source.reopen_max_s": 0.2})
    model = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {})
    with pytest.raises(pipeline_mod.UserError, match="camera 9 does not open"):
        pipeline_mod.Pipeline(resolve_source("9", tmp_path), model, settings, ["a"])
    p = pipeline_mod.Pipeline(resolve_source("9", tmp_path), model, settings, ["a"], retry_open=True)
    p.start()
    try:
        _wait(lambda: p.snapshot().source.state == "reconnecting", 5)
        assert "camera 9" in p.snapshot().source.error
        assert p.snapshot().engine("a").state == "running"  # the engines and the UI stay up
    finally:
        p.stop()
