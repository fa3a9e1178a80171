"""Home Assistant discovery (rtmon/mqtt/discovery.py): the config without a broker, and how the
publisher keeps it on a real mosquitto (retained, re-sent, cleaned up, refused, offline)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from conftest import eventually
from mqtt_broker import Broker, FakePipeline, config_on_broker, listen, needs_broker, retained, settings
from mqtt_samples import sample_discovery, sample_snapshot

from rtmon.mqtt import discovery as ha
from rtmon.mqtt.payloads import engine_payload, gpu_payload
from rtmon.mqtt.publisher import DISCOVERY_ECHO_S, DISCOVERY_JITTER_S, MetricsPublisher
from rtmon.watch import collect

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


def render_template(template: str, payload: dict) -> str:
    """A value_template rendered as Home Assistant's MQTT sensor does (Jinja, `value_json`)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=payload)


# ---- without a broker ----


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


@needs_broker
def test_discovery_config_is_retained_complete_and_its_sensors_read_live_metrics(broker: Broker) -> None:
    broker.start()
    pipeline = FakePipeline().start()
    publisher = MetricsPublisher(settings(broker.url), pipeline.snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.discovery_sent > 0, 5, what="the discovery config is sent")
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
        # Four rounds of metrics (two engines and the GPU each): with discovery on, its config
        # would have gone out right after `online`, before them.
        eventually(lambda: publisher.connected and publisher.published >= 12, 5, what="four rounds of metrics")
        assert retained(broker.port, "homeassistant/#") == [] and publisher.discovery_sent == 0
    finally:
        publisher.stop()


@needs_broker
def test_home_assistant_birth_message_makes_rtmon_send_discovery_again(broker: Broker) -> None:
    broker.start()
    publisher = MetricsPublisher(settings(broker.url), FakePipeline().snapshot)
    publisher.start()
    try:
        eventually(lambda: publisher.discovery_sent > 0, 5, what="the discovery config is sent")
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
    eventually(lambda: before.discovery_sent > 0, 5, what="the first run's config is sent")
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

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    with caplog.at_level(logging.DEBUG, logger="rtmon.mqtt"):
        publisher.start()
        try:
            eventually(lambda: publisher.connected, 5, what="the publisher connects")
            # The warning comes from a refused subscription at once, or when the config's echo
            # has not come back within DISCOVERY_ECHO_S.
            eventually(warnings, DISCOVERY_ECHO_S + 5, what="the warning about discovery")
            state = collect(settings(broker.acl_url), 0.6)
        finally:
            publisher.stop()
            pipeline.stop()
    assert len(warnings()) == 1 and "discovery" in warnings()[0] and "still published" in warnings()[0], warnings()
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
        config = eventually(lambda: config_on_broker(broker.port, topic), 240, 0.5, what="rtmon announces itself")
        availability = config["availability_topic"]
        assert availability == "rtmon/homebox/status"
        assert retained(broker.port, availability) == [(b"online", True)]
        os.kill(child.pid, signal.SIGKILL)  # rtmon itself, as a crash would
        child.wait(10)
        eventually(lambda: retained(broker.port, availability) == [(b"offline", True)], 5, what="the last will")
        assert config_on_broker(broker.port, topic)["cmps"], "the sensors stay, unavailable"
    finally:
        with contextlib.suppress(ProcessLookupError):  # and whatever it started (engine processes)
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
