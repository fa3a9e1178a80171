from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtmon.bus import FrameBus
from rtmon.core import Frame
from rtmon.errors import UserError
from rtmon.sinks import H264Writer
from rtmon.sources import FrameReader, open_capture, read_frames, resolve_source


def _write_clip(path: Path, frames: int = 12, size=(320, 240)) -> Path:
    with H264Writer(path, 30, size) as w:
        for i in range(frames):
            img = np.full((size[1], size[0], 3), i * 20 % 255, np.uint8)
            cv2.putText(img, str(i), (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
            w.write(img)
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    return _write_clip(tmp_path / "clip.mp4")


def test_resolve_kinds(tmp_path, clip):
    assert resolve_source("0", tmp_path).kind == "camera"
    assert resolve_source("rtsp://example/stream", tmp_path).kind == "stream"
    assert resolve_source(str(clip), tmp_path).kind == "file"
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert resolve_source(str(tmp_path / "imgs"), tmp_path).kind == "folder"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "no such file or folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "folder has no images"),
    ],
)
def test_resolve_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        resolve_source(str(make(tmp_path)), tmp_path)


def test_corrupt_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    spec = resolve_source(str(bad), tmp_path)
    with pytest.raises(UserError, match=r"cannot open it as a video|no decodable frame"):
        open_capture(spec)


def test_camera_that_does_not_open(tmp_path):
    with pytest.raises(UserError, match="camera 9 does not open"):
        open_capture(resolve_source("9", tmp_path))


def test_read_frames_wraps_around_a_short_file(tmp_path, clip):
    frames = list(read_frames(resolve_source(str(clip), tmp_path), 30))
    assert len(frames) == 30 and frames[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(frames[0], frames[12])


def _run_reader(spec, bus, **kw) -> FrameReader:
    reader = FrameReader(spec, bus, **kw)
    reader.start()
    return reader


def take_next(sub, timeout: float = 5.0):
    """The next frame a consumer gets as soon as one is there, and the frames skipped before it;
    (None, 0) at the end of its streams or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sub.take(1)
        if got is None:
            return None, 0
        if got:
            return got[0].frame, got[0].skipped
        sub.wait(max(deadline - time.monotonic(), 0.0))
    return None, 0


def test_at_max_pace_a_consumer_sees_every_frame_in_order(tmp_path, clip):
    bus = FrameBus()
    sub = bus.subscribe("bench")
    _run_reader(resolve_source(str(clip), tmp_path), bus, pace="max")
    seen = []
    while True:
        frame, skipped = take_next(sub)
        if frame is None:
            break
        assert skipped == 0  # the reader waits for its consumer
        seen.append(frame.index)
        time.sleep(0.01)
    assert seen == list(range(12))


def test_latest_policy_skips_and_counts(tmp_path):
    bus = FrameBus()
    sub = bus.subscribe("slow")
    for i in range(5):
        bus.publish(Frame(i, np.zeros((1, 1, 3), np.uint8), time.perf_counter()))
    (got,) = sub.take(1)
    assert got.frame.index == 4 and got.skipped == 0  # first frame: nothing to count as skipped yet
    for i in range(5, 9):
        bus.publish(Frame(i, np.zeros((1, 1, 3), np.uint8), time.perf_counter()))
    (got,) = sub.take(1)
    assert got.frame.index == 8 and got.skipped == 3
    assert sub.take(1) == []  # nothing new yet
    bus.end()
    assert sub.take(1) is None  # ended


def test_loop_restarts_the_file_and_frames_carry_timestamps(tmp_path, clip):
    bus = FrameBus()
    sub = bus.subscribe("x")
    reader = _run_reader(resolve_source(str(clip), tmp_path), bus, loop=True, max_frames=30, pace="max")
    frames = []
    while (item := take_next(sub)[0]) is not None:
        frames.append(item)
    reader.join(5)
    assert [f.index for f in frames] == list(range(30))
    assert all(b.t_capture >= a.t_capture for a, b in itertools.pairwise(frames))
    assert reader.status.state == "ended"


def test_realtime_pacing_follows_the_file_rate(tmp_path):
    clip = _write_clip(tmp_path / "c.mp4", frames=15)
    bus = FrameBus()
    sub = bus.subscribe("x")
    t0 = time.perf_counter()
    _run_reader(resolve_source(str(clip), tmp_path), bus, pace="realtime")
    n = 0
    while take_next(sub)[0] is not None:
        n += 1
    assert n == 15 and time.perf_counter() - t0 >= 14 / 30 * 0.9


def test_stream_that_fails_is_reopened_with_backoff(tmp_path, clip, monkeypatch):
    """A live source that stops delivering frames is reopened, and the status says so."""
    import rtmon.sources as sources

    spec = sources.SourceSpec("rtsp://cam", "stream", str(clip), "rtsp://cam")
    bus = FrameBus()
    sub = bus.subscribe("x")
    reader = _run_reader(spec, bus)
    states = set()
    deadline = time.time() + 5
    while time.time() < deadline and reader.status.frames < 20:
        states.add(reader.status.state)
        take_next(sub, 0.05)
    reader.stop()
    reader.join(3)
    assert "reconnecting" in states
    assert reader.status.frames >= 20  # the 12-frame "stream" was reopened at least once


def test_max_pace_runs_at_the_pace_of_the_fastest_consumer(tmp_path, clip):
    """At max pace the reader publishes the next frame once a `latest` consumer took the newest,
    and replays a looping file from memory after the first pass."""
    bus = FrameBus()
    sub = bus.subscribe("engine")
    reader = _run_reader(resolve_source(str(clip), tmp_path), bus, pace="max", loop=True, cache_mb=64, max_frames=60)
    taken = []
    while len(taken) < 60:
        frame, skipped = take_next(sub)
        if frame is None:
            break
        taken.append((frame, skipped))
        time.sleep(0.002)
    reader.join(5)
    indices = [f.index for f, _ in taken]
    assert indices == sorted(indices) and indices[-1] == 59
    assert sum(skipped for _, skipped in taken) < 10  # the source waited for its consumer
    np.testing.assert_array_equal(taken[12][0].image, taken[0][0].image)  # the 12-frame clip, replayed


def test_latest_takes_the_newest_frame_of_each_stream(tmp_path):
    bus = FrameBus()
    sub = bus.subscribe("all")
    only_1 = bus.subscribe("one", streams={1})
    for i in range(3):
        for stream in (0, 1, 2):
            bus.publish(Frame(i, np.zeros((1, 1, 3), np.uint8), time.perf_counter(), stream))
    got = sub.take(10)
    assert [(h.frame.stream, h.frame.index) for h in got] == [(0, 2), (1, 2), (2, 2)]
    assert [(h.frame.stream, h.frame.index) for h in only_1.take(10)] == [(1, 2)]
    for stream in (0, 1, 2):
        bus.end(stream)
    assert sub.take(10) is None and sub.ended


def test_a_reopen_while_paused_stays_paused(tmp_path, clip):
    """Review finding: a camera reopened while paused showed "running"."""
    import rtmon.sources as sources

    spec = sources.SourceSpec("rtsp://cam", "stream", str(clip), "rtsp://cam")
    bus = FrameBus()
    sub = bus.subscribe("x")
    reader = _run_reader(spec, bus)
    deadline = time.time() + 5
    while reader.status.state != "reconnecting" and time.time() < deadline:
        take_next(sub, 0.02)
    reader.pause(True)
    deadline = time.time() + 5
    while reader.status.reconnects < 1 and time.time() < deadline:
        time.sleep(0.02)
    state = reader.status.state
    reader.stop()
    reader.join(3)
    assert reader.status.reconnects >= 1 and state == "paused"
