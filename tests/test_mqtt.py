"""MQTT feed: URL checks and payload builders without a broker; the rest against a real mosquitto."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORD, USER, Broker, FakePipeline, make_certs, missing_tools

from rtmon.config import MqttSettings
from rtmon.core import EngineInfo, GpuMemory
from rtmon.errors import UserError
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot, LatencyStats
from rtmon.mqtt import (
    BrokerAddress,
    MetricsPublisher,
    detections_payload,
    engine_payload,
    gpu_payload,
    parse_mqtt_url,
    status_payload,
    topics,
    validate,
)
from rtmon.snapshot import MonitorSnapshot, SourceStatus
from rtmon.watch import WatchState, collect, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"
HELPER = Path(__file__).with_name("mqtt_broker.py")


# ---- without a broker ----


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.lan", BrokerAddress("broker.lan", 1883, False)),
        ("mqtts://broker.lan", BrokerAddress("broker.lan", 8883, True)),
        ("MQTT://10.0.0.2:1999/", BrokerAddress("10.0.0.2", 1999, False)),
        ("mqtts://[::1]:8884", BrokerAddress("::1", 8884, True)),
    ],
)
def test_parse_mqtt_url(url: str, expected: BrokerAddress) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("broker.lan:1883", "not a broker URL"),
        ("http://broker.lan", "unknown scheme 'http'"),
        ("mqtt://:1883", "no host"),
        ("mqtt://broker.lan:99999", "cannot parse"),
        ("mqtt://broker.lan:port", "cannot parse"),
        ("mqtt://broker.lan/topic", "path or query"),
    ],
)
def test_bad_urls_are_user_errors(url: str, why: str) -> None:
    with pytest.raises(UserError, match=re.escape(why)) as err:
        parse_mqtt_url(url)
    assert str(err.value).startswith("mqtt: ")


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(UserError) as err:
        parse_mqtt_url("mqtt://user:hunter2@broker.lan")
    assert "hunter2" not in str(err.value)


def test_validate_checks_tls_files_and_topics(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"ca_file .*missing\.pem: no such file"):
        validate(MqttSettings(url="mqtts://b", ca_file=str(tmp_path / "missing.pem")))
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(UserError, match="use mqtts://"):
        validate(MqttSettings(url="mqtt://b", ca_file=str(tmp_path / "ca.pem")))
    with pytest.raises(UserError, match="instance"):
        validate(MqttSettings(url="mqtt://b", instance="a/b"))
    with pytest.raises(UserError, match="prefix"):
        validate(MqttSettings(url="mqtt://b", prefix="rtmon/#"))
    with pytest.raises(UserError, match="mqtt: "):
        MetricsPublisher(MqttSettings(url="ftp://b"), FakePipeline().snapshot)


def test_topics_default_to_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "jetson-7")
    t = topics(MqttSettings(url="mqtt://b", prefix="site/cam"))
    assert (t.status, t.gpu) == ("site/cam/jetson-7/status", "site/cam/jetson-7/gpu")
    assert t.metrics("optimized") == "site/cam/jetson-7/engines/optimized/metrics"
    assert t.detections("trt/fp16") == "site/cam/jetson-7/engines/trt_fp16/detections"


def sample_snapshot(gpu: bool = True) -> MonitorSnapshot:
    """Fixed numbers: the examples in docs/mqtt.md are these, through the payload builders."""
    engine = EngineSnapshot(
        name="optimized",
        state="running",
        error="",
        processed=1520,
        skipped=12,
        fps=58.41,
        fps_overall=57.9,
        latency=LatencyStats(mean=14.2, p50=13.8, p95=17.1, p99=21.46),
        stages_ms={"preprocess": 1.21, "inference": 10.52, "postprocess": 0.83},
        fps_history=(),
        latency_window_ms=(),
        class_counts={0: 3, 2: 1},
        memory=GpuMemory(process_mib=412.5),
    )
    starting = EngineSnapshot("baseline", "starting", "", 0, 0, None, None, None, {}, (), (), {})
    sample = GpuSample("NVIDIA H100 80GB HBM3", 41.0, 2351.2, 81559.0, 47.0, 182.3, 1210.0)
    return MonitorSnapshot(
        time=1767225600.25,
        uptime_s=31.0,
        model="yolo11n.pt",
        sources=(SourceStatus("sample", "sample", 1280, 720, 30.0, 30.0, "running", "", 930),),
        engines=(starting, engine),
        engine_info={"optimized": EngineInfo("optimized", "tensorrt", "fp16", "cuda:0", 640)},
        gpu=sample if gpu else None,
        recording="",
    )


def test_builders_publish_unknown_as_null_never_zero() -> None:
    snap = sample_snapshot(gpu=False)
    starting = engine_payload(snap, snap.engines[0])
    assert starting["fps"] is None and starting["latency_ms"] is None and starting["backend"] is None
    assert starting["gpu_mem_mib"] is None and starting["frames_processed"] == 0
    assert set(gpu_payload(snap)) - {"schema", "ts"} and all(
        v is None for k, v in gpu_payload(snap).items() if k not in ("schema", "ts")
    )
    for payload in (starting, gpu_payload(snap), status_payload(True, snap.time)):
        assert payload["schema"] == 1 and payload["ts"] == snap.time


def test_detection_counts_use_class_names_when_known() -> None:
    snap = sample_snapshot()
    assert detections_payload(snap, snap.engines[1])["counts"] == {"0": 3, "2": 1}
    named = detections_payload(snap, snap.engines[1], {0: "person", 2: "car"})
    assert named["counts"] == {"person": 3, "car": 1}


def doc_examples() -> dict[str, dict]:
    """The first ```json block under each '#### `…/<kind>`' heading of docs/mqtt.md, by kind."""
    examples = {}
    for section in DOC.read_text().split("\n#### ")[1:]:
        heading, _, body = section.partition("\n")
        block = re.search(r"```json\n(.*?)```", body, flags=re.S)
        if block:
            examples[heading.strip("` ").rsplit("/", 1)[-1]] = json.loads(block.group(1))
    return examples


def test_doc_examples_are_what_the_builders_produce() -> None:
    snap = sample_snapshot()
    expected = {
        "status": status_payload(True, snap.time),
        "metrics": engine_payload(snap, snap.engines[1]),
        "gpu": gpu_payload(snap),
        "detections": detections_payload(snap, snap.engines[1], {0: "person", 2: "car"}),
    }
    examples = doc_examples()
    for kind, payload in expected.items():
        assert examples.get(kind) == payload, f"docs/mqtt.md example for {kind} should be:\n" + json.dumps(
            payload, indent=2
        )


def test_watch_accepts_schema_v1_only() -> None:
    snap = sample_snapshot()
    state = WatchState("rtmon")
    metrics = json.dumps(engine_payload(snap, snap.engines[1])).encode()
    assert state.update("rtmon/cam1/engines/optimized/metrics", metrics)
    assert state.update("rtmon/cam1/status", json.dumps(status_payload(True, 1.0)).encode())
    assert not state.update("rtmon/cam1/status", b"online")
    assert not state.update("rtmon/cam1/gpu", json.dumps({"schema": 2, "ts": 1.0}).encode())
    assert not state.update("rtmon/cam1/engines/x/other", metrics)
    assert (state.accepted, state.rejected) == (2, 3)
    assert state.instances["cam1"].engines["optimized"].metrics["fps"] == 58.41
    render(state)  # draws without a terminal


# ---- against a real broker ----

needs_broker = pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    if missing_tools():
        pytest.skip(missing_tools())
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path: Path, certs):
    b = Broker(tmp_path, certs)
    b.write_config()
    yield b
    b.stop()


def settings(url: str, **kw) -> MqttSettings:
    return MqttSettings(url=url, instance=kw.pop("instance", "cam1"), rate_hz=kw.pop("rate_hz", 10), **kw)


def status_of(s: MqttSettings, instance: str = "cam1") -> str | None:
    inst = collect(s, 0.3).instances.get(instance)
    return inst.status["status"] if inst and inst.status else None


def wait_for(predicate, timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, or None if it never did within `timeout_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


@needs_broker
def test_messages_follow_the_schema_and_status_goes_offline_on_clean_exit(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    publisher = MetricsPublisher(settings(broker.url, detections=True), pipeline.snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected and pipeline.frames > 0, 5) is not None
        state = collect(settings(broker.url), 0.8)
    finally:
        t0 = time.monotonic()
        publisher.stop()
        stop_s = time.monotonic() - t0
        pipeline.stop()
    assert stop_s <= 2.0
    inst = state.instances["cam1"]
    assert state.rejected == 0 and inst.status["status"] == "online"
    reference = sample_snapshot()
    assert set(inst.gpu) == set(gpu_payload(reference))
    assert set(inst.engines) == {"baseline", "optimized"}
    for view in inst.engines.values():
        assert set(view.metrics) == set(engine_payload(reference, reference.engines[1]))
        assert view.metrics["frames_processed"] > 0 and view.metrics["latency_ms"]["p99"] > 0
        assert view.detections["counts"] == {"0": 2, "2": 1}
    assert publisher.published > 0 and publisher.dropped == 0
    assert status_of(settings(broker.url)) == "offline"


@needs_broker
def test_last_will_says_offline_after_kill_9(broker: Broker) -> None:
    broker.start()
    child = subprocess.Popen([sys.executable, str(HELPER), broker.url, "crashy"])
    try:
        s = settings(broker.url)
        assert wait_for(lambda: status_of(s, "crashy") == "online", 15), "the child never came online"
        child.kill()
        child.wait(5)
        assert wait_for(lambda: status_of(s, "crashy") == "offline", 5) is not None
    finally:
        child.kill()


@needs_broker
def test_broker_down_at_start_is_retried(broker: Broker) -> None:
    publisher = MetricsPublisher(settings(broker.url), FakePipeline().snapshot)
    publisher.start()
    try:
        time.sleep(0.8)
        assert not publisher.connected and publisher.published == 0
        broker.start()
        assert wait_for(lambda: publisher.connected, 5) is not None
        assert "optimized" in collect(settings(broker.url), 0.4).instances["cam1"].engines
    finally:
        publisher.stop()


@needs_broker
def test_broker_killed_mid_run_neither_slows_the_pipeline_nor_stops_the_feed(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    try:
        time.sleep(0.3)
        without_mqtt = pipeline.frames_in(1.5)
        publisher = MetricsPublisher(settings(broker.url, rate_hz=20, queue=16), pipeline.snapshot)
        publisher.start()
        assert wait_for(lambda: publisher.connected, 5) is not None
        broker.kill()
        assert wait_for(lambda: not publisher.connected, 3) is not None
        during_outage = pipeline.frames_in(1.5)
        assert publisher.dropped > 0  # the queue stayed bounded
        broker.start()
        reconnect_s = wait_for(lambda: publisher.connected, 5)
        publisher.stop()
    finally:
        pipeline.stop()
    assert during_outage >= 0.85 * without_mqtt, (during_outage, without_mqtt)
    assert reconnect_s is not None and reconnect_s < 5.0


@needs_broker
def test_tls_with_password_and_with_client_certificate(broker: Broker, certs) -> None:
    broker.start()
    pipeline = FakePipeline()
    by_password = settings(broker.tls_url, username=USER, password=PASSWORD, ca_file=str(certs.ca))
    by_certificate = settings(
        broker.cert_url, instance="cam2", ca_file=str(certs.ca),
        cert_file=str(certs.client_cert), key_file=str(certs.client_key),
    )  # fmt: skip
    publishers = [MetricsPublisher(s, pipeline.snapshot) for s in (by_password, by_certificate)]
    for p in publishers:
        p.start()
    try:
        assert wait_for(lambda: all(p.connected for p in publishers), 5) is not None
        seen = collect(by_password, 0.4).instances
        assert seen["cam1"].status["status"] == "online" and seen["cam2"].status["status"] == "online"
    finally:
        for p in publishers:
            p.stop()


@needs_broker
def test_credentials_come_from_the_environment(broker: Broker, certs, monkeypatch) -> None:
    monkeypatch.setenv("RTMON_MQTT_USERNAME", USER)
    monkeypatch.setenv("RTMON_MQTT_PASSWORD", PASSWORD)
    broker.start()
    publisher = MetricsPublisher(settings(broker.tls_url, ca_file=str(certs.ca)), FakePipeline().snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected, 5) is not None
    finally:
        publisher.stop()


@needs_broker
def test_wrong_password_warns_once_and_the_pipeline_runs_on(broker: Broker, certs, caplog) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    wrong = settings(broker.tls_url, username=USER, password="not-the-password", ca_file=str(certs.ca))
    publisher = MetricsPublisher(wrong, pipeline.snapshot)
    with caplog.at_level(logging.DEBUG, logger="rtmon.mqtt"):
        publisher.start()
        try:
            frames = pipeline.frames_in(2.5)  # several connection attempts
        finally:
            publisher.stop()
            pipeline.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "refused the login" in warnings[0].getMessage()
    assert not publisher.connected and frames > 100
    assert not any("not-the-password" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["record", "--mqtt", "mqtt//broker"], "not a broker URL"),
        (["record", "--mqtt", "amqp://broker"], "unknown scheme"),
        (["record", "--mqtt", "mqtts://broker", "--set", "mqtt.ca_file=/no/such/ca.pem"], "ca_file"),
        (["watch", "--mqtt", "mqtt://broker:http"], "cannot parse"),
    ],
)
def test_bad_mqtt_input_on_the_command_line_is_one_line_and_exit_2(args: list[str], why: str) -> None:
    run = subprocess.run([sys.executable, "-m", "rtmon", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mqtt: ") and why in lines[0]


@needs_broker
def test_rtmon_bench_publishes_progress_and_results(broker: Broker, tmp_path: Path, rtmon_env) -> None:
    """The real `rtmon bench --mqtt`: engines measured in child processes still show on the broker."""
    import asyncio
    import threading

    from tests.cli_helpers import run_rtmon

    broker.start()
    seen: list[tuple[str, dict]] = []
    stop = threading.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("rtmon/benchbox/#")
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(anext(aiter(client.messages)), 0.2)
                except asyncio.TimeoutError:
                    continue
                seen.append((str(msg.topic), json.loads(msg.payload)))

    listener = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
    listener.start()
    time.sleep(0.5)
    result = run_rtmon(["bench", "--engines", "baseline,ort-cpu", "--frames", "12", "--warmup", "2",
                        "--min-duration", "0", "--set", "bench.max_duration_s=3", "--set", "bench.timing_probe=0",
                        "--out", str(tmp_path / "report"), "--mqtt", broker.url, "--set", "mqtt.instance=benchbox",
                        "--set", "mqtt.rate_hz=10"], rtmon_env)
    time.sleep(0.5)
    stop.set()
    listener.join(5)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = [p for t, p in seen if t.endswith("/metrics")]
    assert {p["engine"] for p in metrics} == {"torch-fp32", "ort-cpu"}
    assert all(p["schema"] == 1 for _, p in seen)
    done = [p for p in metrics if p["state"] == "done"]
    assert done and done[-1]["latency_ms"]["p99"] > 0
    statuses = [p["status"] for t, p in seen if t.endswith("/status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"
