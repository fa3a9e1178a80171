"""Reaching the broker (rtmon/mqtt/address.py): URL checks without a broker; TLS, client
certificates and credentials against a real mosquitto; bad input on the command line."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import eventually
from mqtt_broker import PASSWORD, USER, Broker, FakePipeline, needs_broker, settings

from rtmon.config import MqttSettings
from rtmon.errors import UserError
from rtmon.mqtt.address import BrokerAddress, parse_mqtt_url, validate
from rtmon.mqtt.publisher import MetricsPublisher
from rtmon.watch import collect


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
        eventually(lambda: all(p.connected for p in publishers), 5, what="both publishers connect")
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
        eventually(lambda: publisher.connected, 5, what="the publisher logs in")
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
            frames = pipeline.frames_in(2.5)  # the pipeline's rate while the publisher keeps trying
            eventually(lambda: publisher.connect_failures >= 3, 5, what="several refused logins")
        finally:
            publisher.stop()
            pipeline.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "refused the login" in warnings[0].getMessage()
    assert not publisher.connected and frames > 100
    assert not any("not-the-password" in r.getMessage() for r in caplog.records)
