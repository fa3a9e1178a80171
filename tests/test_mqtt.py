"""MQTT feed: URL checks and payload builders without a broker; the rest against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import PASSWORD, USER, Broker, FakePipeline, make_certs, missing_tools

from rtmon import homeassistant as ha
from rtmon.config import MqttSettings
from rtmon.core import EngineInfo, EngineState, GpuMemory, Role
from rtmon.errors import UserError
from rtmon.gpu import GpuSample
from rtmon.metrics import EngineSnapshot, LatencyStats, StreamFigures
from rtmon.mqtt import (
    DISCOVERY_ECHO_S,
    DISCOVERY_JITTER_S,
    BrokerAddress,
    MetricsPublisher,
    _until_first_ends,
    detections_payload,
    discovery_topic,
    engine_payload,
    gpu_payload,
    parse_mqtt_url,
    status_payload,
    stream_payload,
    topics,
    validate,
)
from rtmon.snapshot import MonitorSnapshot, SourceStatus, StreamSnapshot
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
    with pytest.raises(UserError, match="discovery_prefix"):
        validate(MqttSettings(url="mqtt://b", discovery_prefix="home+assistant"))
    with pytest.raises(UserError, match="mqtt: "):
        MetricsPublisher(MqttSettings(url="ftp://b"), FakePipeline().snapshot)


def test_topics_default_to_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "jetson-7")
    t = topics(MqttSettings(url="mqtt://b", prefix="site/cam"))
    assert (t.status, t.gpu) == ("site/cam/jetson-7/status", "site/cam/jetson-7/gpu")
    assert t.metrics("optimized") == "site/cam/jetson-7/engines/optimized/metrics"
    assert t.detections("trt/fp16") == "site/cam/jetson-7/engines/trt_fp16/detections"
    assert discovery_topic(MqttSettings(url="mqtt://b")) == "homeassistant/device/rtmon_jetson-7/config"
    assert ha.discovery_topic("ha", "cam.lab 2") == "ha/device/rtmon_cam_lab_2/config"


def sample_stream() -> StreamSnapshot:
    """Stream 2 of several, for the docs' example of a stream's topic."""
    source = SourceStatus("rtsp://cam-2/stream", "stream", 1280, 720, 29.97, 30.0, "running", "", 8990, 1, 2)
    return StreamSnapshot(source, {
        "optimized": StreamFigures(29.9, LatencyStats(mean=9.1, p50=8.7, p95=12.3, p99=15.8), 8950, 3),
        "baseline": StreamFigures(29.6, LatencyStats(mean=31.0, p50=30.1, p95=36.0, p99=40.2), 8870, 118),
    })


def sample_snapshot(gpu: bool = True) -> MonitorSnapshot:
    """Fixed numbers: the examples in docs/mqtt.md are these, through the payload builders."""
    engine = EngineSnapshot(
        name="optimized",
        state=EngineState.RUNNING,
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
        memory=GpuMemory(process_mib=412.5, context_mib=301.0, allocator_peak_mib=88.2, allocator_reserved_mib=96.0),
        role=Role.OPTIMIZED,
        capacity_fps=212.4,
        busy_pct=27.5,
    )
    baseline = EngineSnapshot(
        "baseline", EngineState.RUNNING, "", 1490, 42, 29.9, 29.8, LatencyStats(mean=31.0, p50=30.2, p95=36.4, p99=41.0),
        {"preprocess": 2.1, "inference": 25.3, "postprocess": 1.9}, (), (), {0: 3}, GpuMemory(process_mib=702.0),
        Role.BASELINE, capacity_fps=47.2, busy_pct=63.3,
    )  # fmt: skip
    starting = EngineSnapshot("ort-cpu", EngineState.STARTING, "", 0, 0, None, None, None, {}, (), (), {}, role=Role.PEER)
    sample = GpuSample("NVIDIA H100 80GB HBM3", 41.0, 2351.2, 81559.0, 47.0, 182.3, 1210.0)
    return MonitorSnapshot(
        time=1767225600.25,
        uptime_s=31.0,
        model="yolo11n.pt",
        sources=(SourceStatus("sample", "sample", 1280, 720, 30.0, 30.0, "running", "", 930),),
        engines=(starting, baseline, engine),
        engine_info={"optimized": EngineInfo("optimized", "tensorrt", "fp16", "cuda:0", 640)},
        gpu=sample if gpu else None,
        recording="",
    )


def test_builders_publish_unknown_as_null_never_zero() -> None:
    snap = sample_snapshot(gpu=False)
    starting = engine_payload(snap, snap.engine("ort-cpu"))
    assert starting["fps"] is None and starting["latency_ms"] is None and starting["backend"] is None
    assert starting["gpu_mem_mib"] is None and starting["frames_processed"] == 0
    assert starting["capacity_fps"] is None and starting["busy_pct"] is None
    assert set(starting["gpu_mem"]) == set(GpuMemory().as_dict()) and not any(starting["gpu_mem"].values())
    assert set(gpu_payload(snap)) - {"schema", "ts"} and all(
        v is None for k, v in gpu_payload(snap).items() if k not in ("schema", "ts")
    )
    for payload in (starting, gpu_payload(snap)):
        assert payload["schema"] == 2 and payload["ts"] == snap.time
    assert (status_payload(True), status_payload(False)) == (b"online", b"offline")


def test_metrics_carry_role_capacity_memory_split_and_the_speedup_on_the_compared_engine() -> None:
    snap = sample_snapshot()
    optimized, baseline = engine_payload(snap, snap.engine("optimized")), engine_payload(snap, snap.engine("baseline"))
    assert (optimized["role"], baseline["role"]) == ("optimized", "baseline")
    assert optimized["capacity_fps"] == 212.4 and optimized["busy_pct"] == 27.5
    assert optimized["gpu_mem"]["engine_mib"] == 111.5 and optimized["gpu_mem_mib"] == 412.5
    assert optimized["speedup_vs_baseline"] == round(212.4 / 47.2, 3)
    assert baseline["speedup_vs_baseline"] is None
    assert engine_payload(snap, snap.engine("ort-cpu"))["speedup_vs_baseline"] is None


def test_detection_counts_use_class_names_when_known() -> None:
    snap = sample_snapshot()
    assert detections_payload(snap, snap.engine("optimized"))["counts"] == {"0": 3, "2": 1}
    named = detections_payload(snap, snap.engine("optimized"), {0: "person", 2: "car"})
    assert named["counts"] == {"person": 3, "car": 1}


def sample_discovery(snap: MonitorSnapshot | None = None) -> dict:
    snap = snap or sample_snapshot()
    return ha.device_config(snap, topics(MqttSettings(url="mqtt://b", instance="cam1")), "cam1", 10)


def doc_examples() -> dict[str, dict | str]:
    """The first ```json (or ```text) block under each '#### `…/<kind>`' heading of docs/mqtt.md."""
    examples: dict[str, dict | str] = {}
    for section in DOC.read_text().split("\n#### ")[1:]:
        heading, _, body = section.partition("\n")
        block = re.search(r"```(json|text)\n(.*?)```", body, flags=re.S)
        if block:
            kind = heading.strip("` ").removeprefix("…/")
            examples[kind] = json.loads(block.group(2)) if block.group(1) == "json" else block.group(2).strip()
    return examples


def test_doc_examples_are_what_the_builders_produce() -> None:
    snap = sample_snapshot()
    expected = {
        "status": status_payload(True).decode(),
        "engines/<engine>/metrics": engine_payload(snap, snap.engine("optimized")),
        "streams/<stream>/metrics": stream_payload(snap, sample_stream()),
        "gpu": gpu_payload(snap),
        "engines/<engine>/detections": detections_payload(snap, snap.engine("optimized"), {0: "person", 2: "car"}),
    }
    examples = doc_examples()
    for kind, payload in expected.items():
        assert examples.get(kind) == payload, f"docs/mqtt.md example for {kind} should be:\n" + json.dumps(
            payload, indent=2
        )
    # The discovery example is abridged: the shared part whole, a few components as built.
    config, shown = sample_discovery(), examples["homeassistant/device/rtmon_<instance>/config"]
    assert {k: v for k, v in shown.items() if k != "cmps"} == {k: v for k, v in config.items() if k != "cmps"}
    assert shown["cmps"] and all(config["cmps"][cid] == c for cid, c in shown["cmps"].items())


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


# ---- Home Assistant discovery, without a broker ----

# What Home Assistant requires of a device-based discovery payload and of each sensor in it
# (https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload, sensor.mqtt).
HA_ROOT = {"dev", "o", "cmps"}
HA_SENSOR = {"p", "unique_id", "state_topic", "value_template", "unit_of_measurement", "state_class", "expire_after"}


def assert_home_assistant_config(config: dict, status_topic: str) -> None:
    assert set(config) >= HA_ROOT and config["dev"]["ids"] and config["dev"]["name"] and config["o"]["name"]
    assert config["availability_topic"] == status_topic
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    ids = [c["unique_id"] for c in config["cmps"].values()]
    assert len(ids) == len(set(ids))
    for cid, component in config["cmps"].items():
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", cid)
        assert set(component) >= HA_SENSOR, (cid, HA_SENSOR - set(component))
        assert component["p"] == "sensor" and component["state_class"] == "measurement"
        assert isinstance(component["expire_after"], int) and component["expire_after"] > 0


def test_discovery_has_a_sensor_per_engine_and_figure_and_the_speedup_once() -> None:
    config = sample_discovery()
    assert_home_assistant_config(config, "rtmon/cam1/status")
    cmps = config["cmps"]
    for engine in ("baseline", "optimized", "ort-cpu"):
        for figure in ("fps", "capacity", "p95", "p99", "gpu_memory"):
            assert cmps[f"{engine}_{figure}"]["state_topic"] == f"rtmon/cam1/engines/{engine}/metrics"
    assert [cid for cid in cmps if cid.endswith("_speedup")] == ["optimized_speedup"]
    assert cmps["gpu_utilization"]["state_topic"] == "rtmon/cam1/gpu"
    assert cmps["optimized_p95"]["unit_of_measurement"] == "ms" and cmps["optimized_p95"]["device_class"] == "duration"
    assert "gpu_utilization" not in sample_discovery(sample_snapshot(gpu=False))["cmps"]


def render_template(template: str, payload: dict) -> str:
    """A value_template rendered as Home Assistant's MQTT sensor does (Jinja, `value_json`)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=payload)


def test_discovery_templates_read_the_metrics_payload() -> None:
    snap = sample_snapshot()
    cmps = sample_discovery(snap)["cmps"]
    optimized = engine_payload(snap, snap.engine("optimized"))
    assert render_template(cmps["optimized_fps"]["value_template"], optimized) == "58.41"
    assert render_template(cmps["optimized_capacity"]["value_template"], optimized) == "212.4"
    assert render_template(cmps["optimized_p95"]["value_template"], optimized) == "17.1"
    assert render_template(cmps["optimized_gpu_memory"]["value_template"], optimized) == "412.5"
    assert render_template(cmps["optimized_speedup"]["value_template"], optimized) == str(round(212.4 / 47.2, 3))
    assert render_template(cmps["gpu_utilization"]["value_template"], gpu_payload(snap)) == "41.0"
    # Unknown renders "None", which Home Assistant shows as `unknown` (never a made-up 0).
    starting = engine_payload(snap, snap.engine("ort-cpu"))
    for figure in ("fps", "capacity", "p95", "p99", "gpu_memory"):
        assert render_template(cmps[f"ort-cpu_{figure}"]["value_template"], starting) == "None"


def test_removal_reduces_components_to_their_platform() -> None:
    config = sample_discovery()
    removal = ha.removal_config(config, {"gone_fps"})
    assert removal["cmps"]["gone_fps"] == {"p": "sensor"}
    assert ha.live_components(removal) == ha.live_components(config) == set(config["cmps"])
    assert ha.expire_after_s(2.0) == 10 and ha.expire_after_s(0.2) == 25


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
    return inst.status if inst else None


def retained(port: int, topic: str, seconds: float = 0.4) -> list[tuple[bytes, bool]]:
    """(payload, retain flag) of what arrives on `topic` within `seconds` of subscribing."""
    return listen(port, topic, seconds)


def listen(port: int, topic: str, seconds: float, then=None) -> list[tuple[bytes, bool]]:
    """Subscribe to `topic`, call `then(client)` once subscribed (e.g. to publish), and collect
    (payload, retain flag) for `seconds`."""

    async def main() -> list[tuple[bytes, bool]]:
        got: list[tuple[bytes, bool]] = []
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe(topic, qos=1)
            if then:
                await then(client)

            async def gather() -> None:
                async for message in client.messages:
                    got.append((bytes(message.payload), bool(message.retain)))

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gather(), seconds)
        return got

    return asyncio.run(main())


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
        assert seen["cam1"].status == "online" and seen["cam2"].status == "online"
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


def config_on_broker(port: int, topic: str = "homeassistant/device/rtmon_cam1/config") -> dict | None:
    got = [payload for payload, _ in retained(port, topic) if payload]
    return json.loads(got[-1]) if got else None


@needs_broker
def test_discovery_config_is_retained_complete_and_its_sensors_read_live_metrics(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    publisher = MetricsPublisher(settings(broker.url), pipeline.snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.discovery_sent > 0, 5) is not None
        got = retained(broker.port, "homeassistant/device/rtmon_cam1/config")
        state = collect(settings(broker.url), 0.6)
    finally:
        publisher.stop()
        pipeline.stop()
    assert got and got[0][1], "the config is not retained"
    config = json.loads(got[0][0])
    assert_home_assistant_config(config, "rtmon/cam1/status")
    assert {cid for cid in config["cmps"] if cid.endswith("_speedup")} == {"optimized_speedup"}
    metrics = {name: view.metrics for name, view in state.instances["cam1"].engines.items()}
    for component in config["cmps"].values():
        engine = component["state_topic"].split("/")[-2]
        value = render_template(component["value_template"], metrics[engine])
        assert float(value) >= 0, (component["unique_id"], value)  # a number, as the unit promises


@needs_broker
def test_discovery_is_off_with_the_setting(broker: Broker) -> None:
    broker.start()
    publisher = MetricsPublisher(settings(broker.url, discovery=False), FakePipeline().snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected and publisher.published > 0, 5) is not None
        time.sleep(0.3)
        assert retained(broker.port, "homeassistant/#") == [] and publisher.discovery_sent == 0
    finally:
        publisher.stop()


@needs_broker
def test_home_assistant_birth_message_makes_rtmon_send_discovery_again(broker: Broker) -> None:
    broker.start()
    publisher = MetricsPublisher(settings(broker.url), FakePipeline().snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.discovery_sent > 0, 5) is not None
        sent = publisher.discovery_sent

        async def home_assistant_starts(client: aiomqtt.Client) -> None:
            await client.publish("homeassistant/status", b"online", qos=1)

        got = listen(broker.port, "homeassistant/device/rtmon_cam1/config", DISCOVERY_JITTER_S + 2.0, home_assistant_starts)
    finally:
        publisher.stop()
    assert got[0][1], "first the retained config"
    fresh = [json.loads(payload) for payload, was_retained in got if not was_retained]
    assert fresh and fresh[-1]["cmps"] and publisher.discovery_sent > sent


@needs_broker
def test_an_engine_that_went_away_is_removed_from_home_assistant(broker: Broker) -> None:
    broker.start()
    before = MetricsPublisher(settings(broker.url), FakePipeline(engines=("baseline", "optimized", "ort-cpu")).snapshot)
    before.start()
    assert wait_for(lambda: before.discovery_sent > 0, 5) is not None
    before.stop()
    assert "ort-cpu_fps" in config_on_broker(broker.port)["cmps"]

    after: list[MetricsPublisher] = []

    async def rtmon_starts_again_without_ort_cpu(client: aiomqtt.Client) -> None:
        after.append(MetricsPublisher(settings(broker.url), FakePipeline().snapshot))
        after[0].start()

    try:
        got = listen(broker.port, "homeassistant/device/rtmon_cam1/config", 2.5, rtmon_starts_again_without_ort_cpu)
    finally:
        for publisher in after:
            publisher.stop()
    configs = [json.loads(payload) for payload, was_retained in got if not was_retained]
    removal = next(c for c in configs if c["cmps"].get("ort-cpu_fps") == {"p": "sensor"})
    assert all(removal["cmps"][f"ort-cpu_{f}"] == {"p": "sensor"} for f in ("fps", "capacity", "p95", "p99", "gpu_memory"))
    final = config_on_broker(broker.port)
    assert not any(cid.startswith("ort-cpu") for cid in final["cmps"]) and "optimized_fps" in final["cmps"]


@needs_broker
def test_a_broker_that_refuses_discovery_costs_one_warning_and_metrics_flow(broker: Broker, caplog) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    publisher = MetricsPublisher(settings(broker.acl_url), pipeline.snapshot)
    with caplog.at_level(logging.DEBUG, logger="rtmon.mqtt"):
        publisher.start()
        try:
            assert wait_for(lambda: publisher.connected, 5) is not None
            time.sleep(DISCOVERY_ECHO_S + 1.0)
            state = collect(settings(broker.acl_url), 0.6)
        finally:
            publisher.stop()
            pipeline.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "discovery" in warnings[0] and "still published" in warnings[0], warnings
    assert state.instances["cam1"].engines["optimized"].metrics["frames_processed"] > 0
    assert state.instances["cam1"].status == "online"


@needs_broker
@pytest.mark.slow
def test_home_assistant_availability_goes_offline_after_kill_9_of_rtmon(broker: Broker, tmp_path: Path, rtmon_env) -> None:
    """A real `rtmon record --mqtt`: its sensors are discovered with the status topic as their
    availability, which the broker turns to `offline` (the last will) when rtmon is killed."""
    broker.start()
    cmd = [sys.executable, "-m", "rtmon", "record", "--source", "sample", "--left", "baseline", "--right", "ort-cpu",
           "--duration", "300", "--out", str(tmp_path / "demo.mp4"), "--mqtt", broker.url,
           "--set", "mqtt.instance=homebox"]  # fmt: skip
    for item in rtmon_env["sets"]:
        cmd += ["--set", item]
    env = {**rtmon_env["env"], "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    topic = "homeassistant/device/rtmon_homebox/config"
    try:
        assert wait_for(lambda: config_on_broker(broker.port, topic) is not None, 240, 0.5), "rtmon never announced itself"
        availability = config_on_broker(broker.port, topic)["availability_topic"]
        assert availability == "rtmon/homebox/status"
        assert retained(broker.port, availability) == [(b"online", True)]
        os.kill(child.pid, signal.SIGKILL)  # rtmon itself, as a crash would
        child.wait(10)
        assert wait_for(lambda: retained(broker.port, availability) == [(b"offline", True)], 5) is not None
        assert config_on_broker(broker.port, topic)["cmps"], "the sensors stay, unavailable"
    finally:
        with contextlib.suppress(ProcessLookupError):  # and whatever it started (engine processes)
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)


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
                payload = bytes(msg.payload)
                seen.append((str(msg.topic), payload.decode() if str(msg.topic).endswith("/status") else json.loads(payload)))

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
    assert all(p["schema"] == 2 for t, p in seen if not t.endswith("/status"))
    done = [p for p in metrics if p["state"] == "done"]
    assert done and done[-1]["latency_ms"]["p99"] > 0
    statuses = [p for t, p in seen if t.endswith("/status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"


def test_a_connection_lost_before_the_online_status_is_acknowledged_is_noticed_at_once() -> None:
    """A broker that accepts the login and then dies before it acknowledges `online` (a crash
    right after CONNACK): the publisher notices from the socket, not after aiomqtt's 5 s timeout."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def broker_that_dies() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            conn.recv(1024)  # PUBLISH of `online`, QoS 1: never acknowledged
            time.sleep(0.6)
        server.close()

    threading.Thread(target=broker_that_dies, daemon=True).start()
    publisher = MetricsPublisher(settings(f"mqtt://127.0.0.1:{port}"), FakePipeline().snapshot)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected, 5) is not None
        assert wait_for(lambda: not publisher.connected, 2) is not None
    finally:
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
