"""The publisher (rtmon/mqtt/publisher.py) against a real mosquitto: the schema on the wire, the
status and its last will, outages that never slow the pipeline, `rtmon bench --mqtt`, and the
connection loop's own corner cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiomqtt
import pytest
from conftest import eventually
from mqtt_broker import Broker, FakePipeline, needs_broker, settings, status_of
from mqtt_samples import sample_snapshot

from rtmon.mqtt.payloads import engine_payload, gpu_payload
from rtmon.mqtt.publisher import MetricsPublisher, _until_first_ends
from rtmon.watch import collect
from tests.cli_helpers import run_rtmon

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("mqtt_broker.py")


@needs_broker
def test_messages_follow_the_schema_and_status_goes_offline_on_clean_exit(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    publisher = MetricsPublisher(settings(broker.url, detections=True), pipeline.snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.connected and pipeline.frames > 0, 5, what="connected, with frames")
        state = collect(settings(broker.url), 0.8)
    finally:
        t0 = time.monotonic()
        publisher.stop()
        stop_s = time.monotonic() - t0
        pipeline.stop()
    assert stop_s <= 2.0
    inst = state.instances["cam1"]
    assert state.rejected == 0 and inst.status == "online"
    reference = sample_snapshot()
    assert set(inst.gpu) == set(gpu_payload(reference))
    assert set(inst.engines) == {"baseline", "optimized"}
    for view in inst.engines.values():
        assert set(view.metrics) == set(engine_payload(reference, reference.engine("optimized")))
        assert view.metrics["frames_processed"] > 0 and view.metrics["latency_ms"]["p99"] > 0
        assert view.detections["counts"] == {"0": 2, "2": 1}
    assert publisher.published > 0 and publisher.dropped == 0
    assert status_of(settings(broker.url)) == "offline"


@needs_broker
def test_last_will_says_offline_after_kill_9(broker: Broker) -> None:
    broker.start()
    # The child imports this checkout's rtmon, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, str(HELPER), broker.url, "crashy"], env=env)
    try:
        s = settings(broker.url)
        eventually(lambda: status_of(s, "crashy") == "online", 15, what="the child comes online")
        child.kill()
        child.wait(5)
        eventually(lambda: status_of(s, "crashy") == "offline", 5, what="the broker's last will")
    finally:
        child.kill()


@needs_broker
def test_broker_down_at_start_is_retried(broker: Broker) -> None:
    publisher = MetricsPublisher(settings(broker.url), FakePipeline().snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.connect_failures >= 2, 5, what="two attempts on the absent broker")
        assert not publisher.connected and publisher.published == 0
        broker.start()
        eventually(lambda: publisher.connected, 5, what="the publisher connects once the broker is up")
        assert "optimized" in collect(settings(broker.url), 0.4).instances["cam1"].engines
    finally:
        publisher.stop()


@needs_broker
def test_broker_killed_mid_run_neither_slows_the_pipeline_nor_stops_the_feed(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    try:
        eventually(lambda: pipeline.frames > 0, 5, what="the fake pipeline runs")
        without_mqtt = pipeline.frames_in(1.5)
        publisher = MetricsPublisher(settings(broker.url, rate_hz=20, queue=16), pipeline.snapshot)
        publisher.start()
        eventually(lambda: publisher.connected, 5, what="the publisher connects")
        broker.kill()
        eventually(lambda: not publisher.connected, 3, what="the publisher notices the broker is gone")
        during_outage = pipeline.frames_in(1.5)
        assert publisher.dropped > 0  # the queue stayed bounded
        broker.start()
        t0 = time.monotonic()
        eventually(lambda: publisher.connected, 5, what="the publisher reconnects")
        reconnect_s = time.monotonic() - t0
        publisher.stop()
    finally:
        pipeline.stop()
    assert during_outage >= 0.85 * without_mqtt, (during_outage, without_mqtt)
    assert reconnect_s < 5.0


@needs_broker
def test_rtmon_bench_publishes_progress_and_results(broker: Broker, tmp_path: Path, rtmon_env) -> None:
    """The real `rtmon bench --mqtt`: engines measured in child processes still show on the broker."""
    broker.start()
    seen: list[tuple[str, dict]] = []
    subscribed, stop = threading.Event(), threading.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("rtmon/benchbox/#")
            subscribed.set()
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(anext(aiter(client.messages)), 0.2)
                except asyncio.TimeoutError:
                    continue
                payload = bytes(msg.payload)
                seen.append((str(msg.topic), payload.decode() if str(msg.topic).endswith("/status") else json.loads(payload)))

    listener = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
    listener.start()
    assert subscribed.wait(5), "the listener did not subscribe"
    result = run_rtmon(["bench", "--engines", "baseline,ort-cpu", "--frames", "12", "--warmup", "2",
                        "--min-duration", "0", "--set", "bench.max_duration_s=3", "--set", "bench.timing_probe=0",
                        "--out", str(tmp_path / "report"), "--mqtt", broker.url, "--set", "mqtt.instance=benchbox",
                        "--set", "mqtt.rate_hz=10", "--no-reference"], rtmon_env)  # the reference is tested in test_cli
    try:
        if result.returncode == 0:  # its last word, `offline`, may still be on its way to the listener
            eventually(lambda: ("rtmon/benchbox/status", "offline") in seen, 5, what="the final offline")
    finally:
        stop.set()
        listener.join(5)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = [p for t, p in seen if t.endswith("/metrics")]
    assert {p["engine"] for p in metrics} == {"torch-fp32", "ort-cpu"}
    assert all(p["schema"] == 2 for t, p in seen if not t.endswith("/status"))
    done = [p for p in metrics if p["state"] == "done"]
    assert done and done[-1]["latency_ms"]["p99"] > 0
    statuses = [p for t, p in seen if t.endswith("/status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"


def test_a_connection_lost_before_the_online_status_is_acknowledged_is_noticed_at_once() -> None:
    """A broker that accepts the login and then dies before it acknowledges `online` (a crash
    right after CONNACK): the publisher notices from the socket, not after aiomqtt's 5 s timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen_connected = threading.Event()

    def broker_that_dies() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            conn.recv(1024)  # PUBLISH of `online`, QoS 1: never acknowledged
            seen_connected.wait(5)  # die only once the test has seen the publisher connected
        server.close()

    threading.Thread(target=broker_that_dies, daemon=True).start()
    publisher = MetricsPublisher(settings(f"mqtt://127.0.0.1:{port}"), FakePipeline().snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.connected, 5, what="the publisher connects")
        seen_connected.set()
        eventually(lambda: not publisher.connected, 2, what="the publisher notices the lost connection")
    finally:
        seen_connected.set()
        publisher.stop()
        server.close()


def test_a_job_that_swallows_its_cancellation_does_not_hold_up_the_connection() -> None:
    """Before Python 3.12 `asyncio.wait_for` can drop a cancellation (when what it waits for
    completes at the same moment) and its task runs on to its next wait: the discovery task did
    that in CI and the publisher kept saying "connected" after the broker died. The connection's
    jobs end anyway, and the error that ended the connection is the one raised."""

    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        await asyncio.sleep(60)  # ran on, as after a swallowed cancellation

    async def connection_lost() -> None:
        await asyncio.sleep(0.01)
        raise aiomqtt.MqttError("Disconnected during message iteration")

    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(aiomqtt.MqttError, match="Disconnected"):
            await asyncio.wait_for(_until_first_ends([swallows_once(), connection_lost()]), 5)
        return time.monotonic() - start

    assert asyncio.run(main()) < 1.0
