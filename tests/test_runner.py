"""The engine runner: frames through shared memory, results back as records, latency where the
boxes arrive, the plans a run asks for, and no process left behind, even after `kill -9` of the
main process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import eventually

from rtmon.bench.scenarios import options_for
from rtmon.bus import FrameBus
from rtmon.config import load_settings
from rtmon.core import EngineState, Frame
from rtmon.models import ModelRef
from rtmon.runner import EngineRunner, FrameRing, PoolFeed, RunnerOptions
from rtmon.runner.mailbox import REQUEST, RESULT, Mailbox
from tests.fake_engines import make

MODEL = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {0: "thing"})


def _runner(name: str, results: list, factory=make, **options) -> EngineRunner:
    settings = load_settings(None, {})
    opts = RunnerOptions.of(settings, factory=factory, **options)
    return EngineRunner([name], MODEL, settings, opts, on_result=lambda r, skipped: results.append((r, skipped)))


@contextlib.contextmanager
def _preloaded(name: str, results: list, images: list[np.ndarray], **options):
    """A runner of fake engine `name` with `images` preloaded in its ring, loaded; stopped after."""
    runner = _runner(name, results, **options)
    runner.start(0, preload=images)
    try:
        assert runner.wait_loaded(30)
        yield runner
    finally:
        runner.stop()


def _images(n: int, stream: int = 0) -> list[np.ndarray]:
    return [np.full((48, 64, 3), (i * 9 + stream * 50) % 256, np.uint8) for i in range(n)]


def _frames(n: int, stream: int = 0) -> list[Frame]:
    return [Frame(i, image, time.perf_counter(), stream) for i, image in enumerate(_images(n, stream))]


def test_a_hand_over_is_a_small_fixed_size_record_not_a_pickle():
    assert REQUEST.itemsize <= 128 and RESULT.itemsize <= 64  # a 1280×720 frame is 2.7 MB: it goes through the ring
    box = Mailbox.create(requests=4, results=2, max_det=300)
    try:
        other = Mailbox.attach(box.spec)
        box.put_frame(7, 1, (720, 1280, 3), 5, 2, 1.5, 2.5)
        (_, record) = other.requests.take(1.0)
        assert record[:8] == (0, 7, 1, 5, 2, 720, 1280, 3) and record[8:10] == (1.5, 2.5)
        other.requests.release()
        rows = np.array([[1, 2, 3, 4, 0.9, 1]], np.float32)
        other.put_result(7, 3.0, 4.0, (0.1, 0.2, 0.3), rows)
        position, record = box.take_result(1.0)
        assert record == (7, 3.0, 4.0, pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3), 1)
        np.testing.assert_array_equal(box.boxes_of(position, record[-1]), rows)
        assert box.take_result(0.0) is None
        other.close()
    finally:
        box.close()


def test_a_receiver_sleeps_until_an_answer_is_due_then_spins_and_still_gets_early_or_late_answers():
    box = Mailbox.create(requests=2, results=4, max_det=10)
    try:
        other = Mailbox.attach(box.spec)
        rows = np.zeros((0, 6), np.float32)

        def answer_after(delay: float, ticket: int) -> threading.Thread:
            thread = threading.Thread(target=lambda: (time.sleep(delay), other.put_result(ticket, 0.0, 0.0, (0, 0, 0), rows)))
            thread.start()
            return thread

        for delay, ticket in ((0.005, 1), (0.045, 2), (0.15, 3)):  # before, inside, after the spin window
            thread = answer_after(delay, ticket)
            t0 = time.perf_counter()
            got = box.take_result(2.0, 0.01, t0 + 0.04)
            assert got is not None and got[1][0] == ticket
            box.boxes_of(got[0], 0)
            thread.join()
        t0 = time.perf_counter()
        assert box.take_result(0.05, 0.01, t0 + 1.0) is None  # timeout before the window: None, on time
        assert time.perf_counter() - t0 < 0.5
        other.close()
    finally:
        box.close()


def test_the_receiver_spins_across_the_range_the_recent_answers_came_in(monkeypatch):
    """Synthetic instants: the window runs from the oldest frame's hand-over + the fastest
    recent latency − spin to + the slowest + spin; asleep before it (spin_at), none after it."""
    from rtmon.runner import supervisor
    from rtmon.runner.supervisor import _InFlight

    runner = _runner("fast", [])
    spin = 0.0003
    assert runner._receive_spin(spin) == (0.0, None)  # nothing in flight
    runner._in_flight[1] = _InFlight(_frames(1)[0], None, 0, 100.0)  # handed over at t = 100 s
    assert runner._receive_spin(spin) == (spin, None)  # no latency seen yet: spin `spin`, then sleep
    runner._recent.extend([0.0100, 0.0099, 0.0101, 0.0100])  # a steady engine: its whole range, awake
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.001)
    spin_s, spin_at = runner._receive_spin(spin)
    assert spin_at == pytest.approx(100.0099 - spin) and spin_s == pytest.approx(0.0101 - 0.0099 + 2 * spin)
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.0100)  # inside: spin from now to the end
    assert runner._receive_spin(spin)[0] == pytest.approx(100.0101 + spin - 100.0100)
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.0105)  # past it: asleep
    assert runner._receive_spin(spin) == (0.0, None)
    assert runner._receive_spin(0.0) == (0.0, None)  # receive_spin_us = 0: never spin
    runner._recent.extend([0.001] * supervisor.RECENT)  # only the last RECENT latencies count
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.0)
    assert runner._receive_spin(spin) == (pytest.approx(2 * spin), pytest.approx(100.001 - spin))
    runner._recent.extend([0.0010, 0.0009, 0.0012, 0.0010] * 16)  # a 1 ms engine: ± spin around its median
    assert runner._receive_spin(spin) == (pytest.approx(2 * spin), pytest.approx(100.001 - spin))


def test_the_receive_window_of_a_slow_engine_is_a_tenth_of_its_latency_around_the_median(monkeypatch):
    """An engine whose answers spread over milliseconds (6.5-11 ms, median 7.6) gets a window
    `SPIN_SHARE` of the median wide, centred on it, not the whole range: the main process is
    awake beside it for at most a tenth of a frame."""
    from rtmon.runner import supervisor
    from rtmon.runner.supervisor import _InFlight

    runner = _runner("fast", [])
    spin = 0.0003
    runner._in_flight[1] = _InFlight(_frames(1)[0], None, 0, 100.0)
    runner._recent.extend([0.0080, 0.0065, 0.0110, 0.0072])
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.001)
    spin_s, spin_at = runner._receive_spin(spin)
    width = supervisor.SPIN_SHARE * 0.0076
    assert spin_at == pytest.approx(100.0076 - width / 2) and spin_s == pytest.approx(width)
    monkeypatch.setattr(supervisor.time, "perf_counter", lambda: 100.0081)  # past it: asleep until the answer
    assert runner._receive_spin(spin) == (0.0, None)


def test_the_ring_is_shared_memory_seen_by_another_attachment():
    ring = FrameRing(2, 64 * 48 * 3)
    try:
        image = _frames(1)[0].image
        shape = ring.write(1, image)
        other = FrameRing(2, 64 * 48 * 3, name=ring.name)
        view = other.view(1, shape)
        np.testing.assert_array_equal(view, image)
        assert not view.flags.owndata
        assert other.view(1, shape) is view  # kept: built once, not on every frame's cold path
        ring.write(1, image[::-1].copy())
        np.testing.assert_array_equal(view, image[::-1])  # a view, not a copy
        with pytest.raises(ValueError, match="does not fit"):
            other.view(0, (64, 48, 4))
        other.close()
    finally:
        ring.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="minor faults are read from Linux's /proc")
def test_an_attachment_touched_once_reads_every_slot_without_a_page_fault():
    from rtmon.processes import minor_faults

    shape, slots = (256, 256, 3), 16
    ring = FrameRing(slots, int(np.prod(shape)))
    other = None
    try:
        for slot in range(slots):
            ring.write(slot, np.full(shape, slot, np.uint8))
        other = FrameRing(slots, int(np.prod(shape)), name=ring.name)
        views = [other.view(slot, shape) for slot in range(slots)]
        other.touch()
        before = minor_faults(os.getpid())
        assert [int(v.max()) for v in views] == list(range(slots))
        # untouched, these reads map 48 pages a slot (at least 3 faults each); a stray fault of
        # the interpreter's own may remain
        assert minor_faults(os.getpid()) - before < slots
    finally:
        if other is not None:
            other.close()
        ring.close()


def test_detections_made_from_rows_hand_the_same_rows_on_and_others_are_packed():
    from rtmon.core import Detections

    rows = np.array([[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.5, 0]], np.float32)
    det = Detections.from_array(rows)
    assert det.rows() is det.rows() and det.rows().base is not rows  # copied once, from the caller's buffer
    np.testing.assert_array_equal(det.rows(), rows)
    packed = Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(int)).rows()
    np.testing.assert_array_equal(packed, rows)
    assert packed.dtype == np.float32 and Detections.empty().rows().shape == (0, 6)


def test_every_frame_of_a_feed_reaches_the_engine_process_through_shared_memory_in_order():
    results: list = []
    runner = _runner("echo", results)
    images = _images(40)
    runner.start(64 * 48 * 3)
    try:
        assert runner.wait_loaded(30)
        runner.follow(PoolFeed(images, 0, len(images)))
        deadline = time.time() + 20
        while runner.metrics.state != EngineState.ENDED and time.time() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.metrics.state == EngineState.ENDED
    assert [r.frame.index for r, _ in results] == list(range(40))  # every frame, in order
    for r, skipped in results:
        det = r.detections
        assert skipped == 0
        assert det.xyxy[0, 0] == 1.0  # the engine read a view of the shared ring, not a copy
        assert det.confidence[0] == pytest.approx(images[r.frame.index].mean() / 255, abs=1e-6)


def test_a_live_feed_gives_the_newest_frame_and_counts_the_skipped():
    results: list = []
    runner = _runner("echo", results)
    bus = FrameBus()
    bus.add_stream(0)
    runner.start(64 * 48 * 3)
    try:
        assert runner.wait_loaded(30)
        runner.follow(bus.subscribe("echo"))
        frames = _frames(40)
        for f in frames:
            bus.publish(f)
            time.sleep(0.001)
        bus.end(0)
        deadline = time.time() + 20
        while runner.metrics.state != EngineState.ENDED and time.time() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.metrics.state == EngineState.ENDED
    seen = [r.frame.index for r, _ in results]
    assert seen == sorted(seen) and seen[-1] == 39 and len(seen) < 40  # newest first, some skipped
    assert sum(skipped for _, skipped in results) + len(seen) == 40
    for r, _ in results:
        assert r.detections.confidence[0] == pytest.approx(frames[r.frame.index].image.mean() / 255, abs=1e-6)


def test_micro_batches_across_streams_stay_in_order_per_stream():
    results: list = []
    runner = _runner("echo", results, max_batch=4, max_delay_ms=20.0, queued_batches=1)
    runner.start(64 * 48 * 3)
    try:
        assert runner.wait_loaded(30)
        for k in range(10):
            for stream in range(3):
                frame = _frames(k + 1, stream)[k]
                while not runner.wait_room(5):
                    pass
                assert runner.send(frame)
        assert runner.drain(10)
    finally:
        runner.stop()
    assert len(results) == 30
    for stream in range(3):
        assert [r.frame.index for r, _ in results if r.frame.stream == stream] == list(range(10))
        assert all(r.detections.class_id[0] == r.frame.stream for r, _ in results)


def test_latency_runs_from_the_hand_over_to_the_boxes_in_the_main_process_and_counts_the_hand_over():
    """An engine that sleeps a known 20 ms: every frame's latency is at least that plus its
    hand-over, and is exactly the engine's time plus the hand-over (the instants add up)."""
    results: list = []
    images = _images(8)
    with _preloaded("sleep-after-20", results, images, depth=1, pipelined=False) as runner:
        runner.follow(PoolFeed(images, 0, 8, preloaded=True), ends_run=False)
        assert runner.fed.wait(20)
    assert len(results) == 8
    for r, _ in results:
        engine_ms = (r.t_done - r.t_start) * 1e3
        assert r.t_handed <= r.t_start <= r.t_done <= r.t_received
        assert r.stages.handover > 0
        assert r.latency_ms >= 20.0 + r.stages.handover
        assert r.latency_ms == pytest.approx(engine_ms + r.stages.handover, abs=1e-6)


class _CountingFeed(PoolFeed):
    """A pool feed that counts how often it is asked to wait."""

    waits = 0

    def wait(self, timeout: float) -> None:
        self.waits += 1
        super().wait(timeout)


def test_pairs_go_on_while_the_check_is_undecided_and_stop_at_the_maximum_duration():
    from rtmon.bench.harness import EngineUnderTest
    from rtmon.bench.scenarios import single_stream

    settings = load_settings(None, {})
    options = RunnerOptions.of(settings, factory=make, depth=1, pipelined=False)
    eut = EngineUnderTest.start(["fast"], MODEL, settings, options, _images(4))
    try:
        asked: list[tuple[int, list[int]]] = []

        def until_six(parts, tags) -> bool:
            asked.append((len(parts), list(tags)))
            return len(parts) < 6

        entry = single_stream(eut, frames=6, warmup=0, min_duration=0.0, max_duration=30.0, window_s=0.1,
                              timing_probe=0, rounds=2, between=lambda k: None, undecided=until_six)
        assert len(entry["segments"]) >= 6 and entry["processes"] * 2 == len(entry["segments"])
        # asked only once a pair was complete, with the pair of each segment: two rounds a pair
        assert all(n % 2 == 0 and tags == [k // 2 for k in range(n)] for n, tags in asked)
        entry = single_stream(eut, frames=6, warmup=0, min_duration=0.6, max_duration=1.5, window_s=10.0,
                              timing_probe=0, rounds=2, between=lambda k: None, undecided=lambda parts, tags: True)
        assert len(entry["segments"]) == 4 and entry["wall_s"] >= 1.5  # never decided: the cap ends it
    finally:
        eut.stop()


def test_single_stream_alternates_in_pairs_of_fresh_processes():
    """Two pairs: the engine restarts in a fresh process before the second (warmed up again), the
    reference is renewed beside it, and each pair is closed by a reference segment of its own."""
    from rtmon.bench.harness import EngineUnderTest
    from rtmon.bench.scenarios import single_stream

    settings = load_settings(None, {})
    options = RunnerOptions.of(settings, factory=make, depth=1, pipelined=False)
    eut = EngineUnderTest.start(["fast"], MODEL, settings, options, _images(4))
    calls: list[tuple[str, int, int | None]] = []
    try:
        eut.require_loaded()
        first = eut.runner.pid
        entry = single_stream(eut, frames=8, warmup=2, min_duration=0.0, max_duration=0.01, window_s=10.0,
                              timing_probe=0, rounds=4, processes=2, segment_warmup=1,
                              between=lambda k: calls.append(("segment", k, eut.runner.pid)),
                              renew=lambda: calls.append(("renew", 0, eut.runner.pid)))
        answered, second = eut.collector.count, eut.runner.pid
    finally:
        eut.stop()
    assert second != first and not _alive(first)  # the first engine process ended before the second began
    assert [c[0] for c in calls] == ["segment"] * 3 + ["renew"] + ["segment"] * 3
    assert [c[1] for c in calls if c[0] == "segment"] == list(range(6))
    assert [c[2] for c in calls] == [first] * 3 + [second] * 4  # renewed after the engine's restart
    assert [s["process"] for s in entry["segments"]] == [0, 0, 1, 1] and entry["processes"] == 2
    assert all(s["frames"] >= 2 for s in entry["segments"])  # a quarter of the frames each
    assert answered == 2 * 2 + 4 * 1 + entry["frames"]  # each process's warm-up, each segment's, the timed frames
    assert all(s["faults_per_frame"] is None or s["faults_per_frame"] >= 0 for s in entry["segments"])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_stopped_feed_is_not_polled_while_its_last_frame_is_in_flight():
    """`stop()` ends a bench segment with a frame in flight; the feed then answers `wait` at once.
    The feed's thread must wait for room, not poll that feed in a loop: the loop held the GIL
    while the receiving thread waited for the answer (its boxes came milliseconds late)."""
    results: list = []
    images = _images(4)
    with _preloaded("sleep-after-300", results, images, depth=1, pipelined=False) as runner:
        feed = _CountingFeed(images, 0, None, preloaded=True)
        runner.follow(feed, ends_run=False)
        assert eventually(lambda: runner.in_flight == 1, 10)
        feed.stop()
        assert runner.fed.wait(20)
    assert len(results) == 1
    assert feed.waits <= 3  # polled, it was called hundreds of thousands of times in 0.3 s


def test_fed_is_set_for_each_feed_only_once_all_it_handed_over_is_delivered():
    """A benchmark follows one feed after another at once (a segment, a reference, a segment):
    `fed` for a feed means its every result is delivered — never set by a thread late from the
    feed before (CI, 2026-12-03: a segment ended at once with no frames) nor before the last
    result is delivered. Many short feeds back to back on the `null` engine."""
    from rtmon.bench.harness import Collector

    collector = Collector()
    settings = load_settings(None, {})
    runner = EngineRunner(["null"], MODEL, settings, options_for(settings, "single-stream"), on_result=collector)
    images = _images(4)
    runner.start(0, preload=images)
    counts = []
    try:
        assert runner.wait_loaded(60), runner.metrics.error
        for k in range(300):
            start = collector.count
            runner.follow(PoolFeed(images, 3 * k, 3, preloaded=True), ends_run=False)
            assert runner.fed.wait(20)
            counts.append(collector.count - start)
    finally:
        runner.stop()
    assert counts == [3] * 300


def test_closed_loop_fps_times_mean_latency_is_one_on_a_do_nothing_engine():
    """Single-stream: the next frame goes the instant the last boxes arrive, so the run is the
    sum of the latencies and FPS × mean latency = 1 — on the `null` engine, whose latency is
    nothing but the hand-over."""
    from rtmon.bench.harness import Collector

    collector = Collector()
    settings = load_settings(None, {})
    runner = EngineRunner(["null"], MODEL, settings, options_for(settings, "single-stream"), on_result=collector)
    images = _images(4)
    runner.start(0, preload=images)
    try:
        assert runner.wait_loaded(60), runner.metrics.error
        runner.follow(PoolFeed(images, 0, 2000, preloaded=True), ends_run=False)
        assert runner.fed.wait(60)
    finally:
        runner.stop()
    measured = collector.since(100)
    assert measured.frames == 1900
    assert measured.fps * measured.latency_ms.mean() / 1e3 == pytest.approx(1.0, abs=0.03)
    assert (measured.stages[:, 0] > 0).all()  # every frame's hand-over is measured


@pytest.mark.parametrize(("scenario", "max_batch", "sizes", "plans"), [
    ("single-stream", 1, None, "1"),
    ("offline", 32, (1, 4, 16), "1,4,16"),
    ("multi-stream", 8, None, "1,2,4,8"),
])
def test_an_engine_prepares_plans_only_for_the_sizes_its_scenario_uses(scenario, max_batch, sizes, plans):
    settings = load_settings(None, {})
    options = options_for(settings, scenario, max_batch, sizes)
    runner = EngineRunner(["fast"], MODEL, settings, RunnerOptions(**{**options.__dict__, "factory": make}))
    runner.start(0, preload=_images(2))
    try:
        assert runner.wait_loaded(30)
        assert f"plans={plans}" in runner.info.notes
        assert "frame_shape=(48, 64, 3)" in runner.info.notes
        assert f"pipelined={scenario != 'single-stream'}" in runner.info.notes
    finally:
        runner.stop()


MAIN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from tests.fake_engines import make
    from rtmon.config import load_settings
    from rtmon.models import ModelRef
    from rtmon.runner import EngineRunner, RunnerOptions
    if __name__ == "__main__":
        settings = load_settings(None, {{}})
        model = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {{0: "thing"}})
""")  # a main process of fake engines' runners (its body follows, indented under the `if`)
SCRIPT = MAIN + textwrap.indent(textwrap.dedent("""
    runners = [EngineRunner([n], model, settings, RunnerOptions.of(settings, factory=make)) for n in ("fast", "slow")]
    for r in runners:
        r.start(64 * 48 * 3)
    for r in runners:
        assert r.wait_loaded(60)
    print("ready", flush=True)
    time.sleep(600)
"""), "    ")


def test_no_engine_process_outlives_a_killed_main_process(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    main = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert main.stdout.readline().strip() == "ready"
        children = psutil.Process(main.pid).children(recursive=True)
        assert len(children) >= 2  # two engine processes (and multiprocessing's resource tracker)
        os.kill(main.pid, signal.SIGKILL)
        main.wait(5)
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, [p.pid for p in alive]
    finally:
        if main.poll() is None:
            main.kill()


STOPPED = MAIN + textwrap.indent(textwrap.dedent("""
    runner = EngineRunner(["mp-lock"], model, settings, RunnerOptions.of(settings, factory=make))
    runner.start(64 * 48 * 3)
    assert runner.wait_loaded(60)
    runner.stop()
    print("stopped", flush=True)
"""), "    ")


def test_a_lock_an_engine_process_made_is_not_reported_leaked_when_the_main_process_ends(tmp_path):
    """An engine process ends without the interpreter's teardown; what multiprocessing made in it
    (here a lock, as tqdm or a compile pool make one) is still released, so the resource tracker
    it shares with the main process has no "leaked semaphore" to warn of (stderr is read to its
    end: the tracker writes there after the main process has gone)."""
    script = tmp_path / "main.py"
    script.write_text(STOPPED.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr
    assert "leaked" not in done.stderr, done.stderr


def test_single_stream_alternates_with_its_reference_round_by_round_and_adds_pairs_until_stable():
    """Reference segment, engine segment, ..., reference: at least `rounds` engine segments of an
    equal share of the frames, one reference segment more than engine segments in each pair of
    processes, and another pair while the joined segments are not yet stable (here never: 4 s
    of engine time cannot hold three windows of 10 s), up to the maximum duration."""
    from rtmon.bench.harness import EngineUnderTest
    from rtmon.bench.scenarios import single_stream

    settings = load_settings(None, {})
    options = RunnerOptions.of(settings, factory=make, depth=1, pipelined=False)
    eut = EngineUnderTest.start(["fast"], MODEL, settings, options, _images(4))
    calls: list[int] = []
    try:
        entry = single_stream(eut, frames=12, warmup=2, min_duration=1.2, max_duration=3.0, window_s=10.0,
                              timing_probe=0, rounds=4, between=calls.append)
    finally:
        eut.stop()
    segments = entry["segments"]
    assert len(segments) >= 4 and calls == list(range(len(segments) + entry["processes"]))  # one more a pair
    assert all(s["frames"] >= 3 for s in segments), segments  # at least its share of the frames each round
    assert len(segments) > 4  # never stable: rounds were added, up to max_duration
    assert entry["frames"] == sum(s["frames"] for s in segments)


def test_each_segment_begins_with_untimed_frames_when_it_alternates_with_a_reference():
    """The engine idles through each script segment: its first frames after that are warm-up, not
    timed (the script's segments begin the same way), and the report says how many."""
    from rtmon.bench.harness import EngineUnderTest
    from rtmon.bench.scenarios import single_stream

    settings = load_settings(None, {})
    options = RunnerOptions.of(settings, factory=make, depth=1, pipelined=False)
    eut = EngineUnderTest.start(["fast"], MODEL, settings, options, _images(4))
    try:
        entry = single_stream(eut, frames=12, warmup=2, min_duration=0.45, max_duration=0.5, window_s=10.0,
                              timing_probe=0, rounds=3, between=lambda k: None, segment_warmup=3)
        answered = eut.collector.count
    finally:
        eut.stop()
    segments = entry["segments"]
    assert answered == 2 * entry["processes"] + 3 * len(segments) + entry["frames"]  # each process's, each segment's, timed
    assert entry["warmup"] == {"frames": 2, "s": pytest.approx(entry["warmup"]["s"]), "per_segment": 3}


def test_the_receive_window_uncapped_is_the_whole_range_of_the_recent_answers():
    """`share=inf` is the rule before the cap (scripts/spin_replay.py compares the two)."""
    import math

    from rtmon.runner.supervisor import receive_window

    recent = [0.0080, 0.0065, 0.0110, 0.0072]
    assert receive_window(recent, 0.0003, math.inf) == pytest.approx((0.0065 - 0.0003, 0.0110 + 0.0003))
    low, high = receive_window(recent, 0.0003)
    assert high - low == pytest.approx(0.1 * 0.0076) and (low + high) / 2 == pytest.approx(0.0076)
