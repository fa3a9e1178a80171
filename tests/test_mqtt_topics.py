"""Topic names (rtmon/mqtt/topics.py): the table in docs/mqtt.md."""

from __future__ import annotations

import pytest

from rtmon.config import MqttSettings
from rtmon.mqtt.topics import discovery_topic, topics


def test_topics_default_to_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "jetson-7")
    t = topics(MqttSettings(url="mqtt://b", prefix="site/cam"))
    assert (t.status, t.gpu) == ("site/cam/jetson-7/status", "site/cam/jetson-7/gpu")
    assert t.metrics("optimized") == "site/cam/jetson-7/engines/optimized/metrics"
    assert t.detections("trt/fp16") == "site/cam/jetson-7/engines/trt_fp16/detections"
    assert t.stream(2) == "site/cam/jetson-7/streams/2/metrics"
    assert topics(MqttSettings(url="mqtt://b")).discovery == "homeassistant/device/rtmon_jetson-7/config"
    assert discovery_topic("ha", "cam.lab 2") == "ha/device/rtmon_cam_lab_2/config"
    assert topics(MqttSettings(url="mqtt://b", discovery_prefix="ha")).birth == "ha/status"
