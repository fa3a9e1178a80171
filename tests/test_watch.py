"""`rtmon watch` (rtmon/watch.py): what it accepts and rejects, and what it shows of a real
mosquitto fed by a publisher, several sources included."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading

from conftest import eventually
from mqtt_broker import Broker, FakePipeline, needs_broker, settings
from mqtt_samples import sample_snapshot, sample_stream
from rich.console import Console

from rtmon.mqtt.address import validate
from rtmon.mqtt.payloads import engine_payload, stream_payload
from rtmon.mqtt.publisher import MetricsPublisher
from rtmon.watch import WatchState, _subscribe_into, collect, render


def screen(state: WatchState) -> str:
    """What `rtmon watch` draws for `state`, as plain text."""
    console = Console(file=io.StringIO(), width=240, record=True)
    console.print(render(state))
    return console.export_text()


def test_watch_accepts_status_words_and_schema_v2_only() -> None:
    snap = sample_snapshot()
    state = WatchState("rtmon")
    metrics = json.dumps(engine_payload(snap, snap.engine("optimized"))).encode()
    assert state.update("rtmon/cam1/engines/optimized/metrics", metrics)
    assert state.update("rtmon/cam1/status", b"online")
    assert not state.update("rtmon/cam1/status", json.dumps({"schema": 1, "ts": 1.0, "status": "online"}).encode())
    assert not state.update("rtmon/cam1/gpu", json.dumps({"schema": 1, "ts": 1.0}).encode())
    assert not state.update("rtmon/cam1/engines/x/other", metrics)
    assert (state.accepted, state.rejected) == (2, 3)
    assert state.instances["cam1"].status == "online"
    assert state.instances["cam1"].engines["optimized"].metrics["fps"] == 58.41
    render(state)  # draws without a terminal


def test_watch_shows_each_stream_and_rejects_what_is_no_stream_payload() -> None:
    snap = sample_snapshot()
    state = WatchState("rtmon")
    payload = stream_payload(snap, sample_stream())
    assert state.update("rtmon/cam1/status", b"online")
    assert state.update("rtmon/cam1/streams/2/metrics", json.dumps(payload).encode())
    assert not state.update("rtmon/cam1/streams/two/metrics", json.dumps(payload).encode())
    assert not state.update("rtmon/cam1/streams/2/metrics", json.dumps({**payload, "engines": [1, 2]}).encode())
    assert (state.accepted, state.rejected) == (2, 2)
    assert state.instances["cam1"].streams[2].metrics == payload
    cells = [[c.strip() for c in line.split("│")] for line in screen(state).splitlines()]
    rows = [row for row in cells if len(row) == 13]  # the streams table's (11 columns)
    assert [row[7] for row in rows] == ["baseline", "optimized"]  # one row per engine of the stream
    assert rows[0][1:7] == ["cam1 (online)", "2", "rtsp://cam-2/stream", "running", "1", "30.0"]
    assert rows[0][8:12] == ["29.6", "30.1/36.0/40.2", "8870", "118"]
    assert rows[1][8:12] == ["29.9", "8.7/12.3/15.8", "8950", "3"]
    assert "source FPS" not in screen(WatchState("rtmon"))  # one source: no streams table


@needs_broker
def test_watch_shows_the_streams_of_a_publisher_with_several_sources(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline(streams=3).start()
    publisher = MetricsPublisher(settings(broker.url), pipeline.snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.connected and pipeline.frames > 30, 5, what="connected, with frames of each stream")
        state = collect(settings(broker.url), 0.8)
    finally:
        publisher.stop()
        pipeline.stop()
    assert state.rejected == 0, state.last_rejection
    inst = state.instances["cam1"]
    assert set(inst.streams) == {0, 1, 2}
    for number, view in inst.streams.items():
        assert view.metrics["stream"] == number and view.metrics["source"] == f"fake://{number}"
        assert set(view.metrics["engines"]) == {"baseline", "optimized"}
        for figures in view.metrics["engines"].values():
            assert figures["frames_processed"] > 0 and figures["fps"] > 0 and figures["latency_ms"]["p99"] > 0
    text = screen(state)
    for number in range(3):
        assert f"fake://{number}" in text
    shown = inst.streams[1].metrics["engines"]["optimized"]
    assert str(shown["frames_processed"]) in text and "rejected" not in text


@needs_broker
def test_watch_waits_for_a_broker_that_is_down_and_follows_it_once_up(broker: Broker) -> None:
    """The back-off loop: the footer says it is retrying, then what the broker carries arrives."""
    s = settings(broker.url)
    state = WatchState(s.prefix)
    loop = asyncio.new_event_loop()

    async def follow() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # how the test ends it
            await _subscribe_into(s, validate(s), state)

    task = loop.create_task(follow())
    runner = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    runner.start()
    publisher = MetricsPublisher(s, FakePipeline().snapshot)
    try:
        eventually(lambda: "retrying" in state.connection, 5, what="watch reports the absent broker")
        broker.start()
        publisher.start()
        eventually(lambda: state.connection.startswith("connected"), 5, what="watch connects once the broker is up")
        eventually(lambda: "cam1" in state.instances and "optimized" in state.instances["cam1"].engines, 5,
                   what="the publisher's metrics reach watch")  # fmt: skip
    finally:
        publisher.stop()
        loop.call_soon_threadsafe(task.cancel)
        runner.join(5)
        loop.close()
