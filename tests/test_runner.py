"""The engine runner: frames through shared memory under both policies, typed messages, and no
process left behind, even after `kill -9` of the main process."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from rtmon.config import load_settings
from rtmon.core import EngineState, Frame
from rtmon.models import ModelRef
from rtmon.runner import EngineRunner, FrameMsg, FrameRing, RunnerOptions
from rtmon.sources import FrameBus
from tests.fake_engines import make

MODEL = ModelRef(Path("fake.pt"), "fake", "user", "0" * 64, {0: "thing"})


def _runner(name: str, results: list, **options) -> EngineRunner:
    settings = load_settings(None, {})
    opts = RunnerOptions.of(settings, factory=make, **options)
    return EngineRunner([name], MODEL, settings, opts, on_result=lambda r, skipped: results.append((r, skipped)))


def _frames(n: int, stream: int = 0) -> list[Frame]:
    return [Frame(i, np.full((48, 64, 3), (i * 9 + stream * 50) % 256, np.uint8), time.perf_counter(), stream)
            for i in range(n)]


def test_a_frame_message_carries_no_pixels():
    msg = FrameMsg(ticket=1, slot=0, shape=(720, 1280, 3), index=5, stream=0, t_capture=1.0)
    assert len(pickle.dumps(msg)) < 300  # a 1280×720 frame is 2.7 MB: it goes through the ring


def test_the_ring_is_shared_memory_seen_by_another_attachment():
    ring = FrameRing(2, 64 * 48 * 3)
    try:
        image = _frames(1)[0].image
        shape = ring.write(1, image)
        other = FrameRing(2, 64 * 48 * 3, name=ring.name)
        view = other.view(1, shape)
        np.testing.assert_array_equal(view, image)
        assert not view.flags.owndata
        other.close()
    finally:
        ring.close()


@pytest.mark.parametrize("policy", ["every", "latest"])
def test_frames_reach_the_engine_process_through_shared_memory(policy):
    results: list = []
    runner = _runner("echo", results)
    bus = FrameBus()
    bus.add_stream(0)
    sub = bus.subscribe("echo", policy, capacity=64)
    runner.start(64 * 48 * 3)
    try:
        assert runner.wait_loaded(30)
        runner.follow(sub)
        frames = _frames(40)
        import threading

        stop = threading.Event()
        for f in frames:
            bus.publish(f, stop)
            if policy == "latest":
                time.sleep(0.001)
        bus.end(0)
        deadline = time.time() + 20
        while runner.metrics.state != EngineState.ENDED and time.time() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.metrics.state == EngineState.ENDED
    seen = [r.frame.index for r, _ in results]
    for r, _ in results:
        det = r.detections
        assert det.xyxy[0, 0] == 1.0  # the engine read a view of the shared ring, not a copy
        assert det.confidence[0] == pytest.approx(frames[r.frame.index].image.mean() / 255, abs=1e-6)
    if policy == "every":
        assert seen == list(range(40))  # every frame, in order
        assert all(skipped == 0 for _, skipped in results)
    else:
        assert seen == sorted(seen) and seen[-1] == 39 and len(seen) < 40  # newest first, some skipped
        assert sum(skipped for _, skipped in results) + len(seen) == 40


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


SCRIPT = textwrap.dedent("""
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
        runners = [EngineRunner([n], model, settings, RunnerOptions.of(settings, factory=make)) for n in ("fast", "slow")]
        for r in runners:
            r.start(64 * 48 * 3)
        for r in runners:
            assert r.wait_loaded(60)
        print("ready", flush=True)
        time.sleep(600)
""")


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
