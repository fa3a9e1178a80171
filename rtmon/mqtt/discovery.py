"""Home Assistant MQTT discovery: one retained device config that turns rtmon's metrics topics
into Home Assistant sensors. Pure functions of a snapshot; `rtmon/mqtt/publisher.py` keeps the
result on the broker, and `rtmon/mqtt/topics.py` names the topics.

This is Home Assistant's *device-based* discovery
(https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload): one message at
`<discovery_prefix>/device/rtmon_<instance>/config` carrying the device (`dev`) and origin (`o`)
blocks, the availability topic every sensor shares (rtmon's plain `online`/`offline` status,
which is also the client's last will) and, under `cmps`, one sensor per engine and figure. A
sensor reads the engine's existing metrics topic and picks one field of its JSON with a
`value_template`, so discovery adds no topic of its own besides the config.

A component that must go away (an engine that is no longer there) is removed the documented
way: the config is sent once more with that component reduced to its platform (`{"p":
"sensor"}`), then again without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtmon import __version__
from rtmon.mqtt.payloads import OFFLINE, ONLINE
from rtmon.mqtt.topics import Topics, object_id
from rtmon.snapshot import MonitorSnapshot

# A template that renders Python's None makes Home Assistant show the sensor as `unknown`
# (its MQTT sensor treats the rendered text "None" as no value), which is what a null means.
_LATENCY = "{{{{ value_json.latency_ms.{q} if value_json.latency_ms else None }}}}"


@dataclass(frozen=True)
class Figure:
    """One number of a metrics payload shown as one Home Assistant sensor."""

    key: str  # the component id's suffix
    name: str  # shown after the device name
    template: str  # Jinja over the payload's JSON
    unit: str
    device_class: str | None = None
    precision: int = 1
    icon: str | None = None


ENGINE_FIGURES = (
    Figure("fps", "FPS", "{{ value_json.fps }}", "fps", icon="mdi:speedometer"),
    Figure("capacity", "capacity", "{{ value_json.capacity_fps }}", "fps", icon="mdi:speedometer"),
    Figure("p95", "P95 latency", _LATENCY.format(q="p95"), "ms", device_class="duration", precision=2),
    Figure("p99", "P99 latency", _LATENCY.format(q="p99"), "ms", device_class="duration", precision=2),
    Figure("gpu_memory", "GPU memory", "{{ value_json.gpu_mem_mib }}", "MiB", device_class="data_size", precision=0),
)
# Only on the engine the headline compares with the baseline (its payload carries the figure).
SPEEDUP = Figure("speedup", "speed-up vs baseline", "{{ value_json.speedup_vs_baseline }}", "×", icon="mdi:rocket-launch")
GPU_FIGURES = (
    Figure("gpu_utilization", "GPU utilization", "{{ value_json.utilization_pct }}", "%", precision=0, icon="mdi:expansion-card"),
    Figure("gpu_memory_used", "GPU memory used", "{{ value_json.memory_used_mib }}", "MiB", device_class="data_size", precision=0),
)


def expire_after_s(rate_hz: float) -> int:
    """Seconds without a metrics message after which Home Assistant shows a sensor unavailable:
    several publishing periods, and never less than 10 s."""
    return max(10, math.ceil(5 / rate_hz))


def _sensor(figure: Figure, state_topic: str, unique_id: str, name: str, expire_after: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "p": "sensor",
        "name": name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "value_template": figure.template,
        "unit_of_measurement": figure.unit,
        "state_class": "measurement",
        "suggested_display_precision": figure.precision,
        "expire_after": expire_after,
    }
    if figure.device_class:
        config["device_class"] = figure.device_class
    if figure.icon:
        config["icon"] = figure.icon
    return config


def components(snapshot: MonitorSnapshot, topics: Topics, instance: str, expire_after: int) -> dict[str, dict[str, Any]]:
    """Every sensor of this snapshot by component id: the engines' figures, the speed-up on the
    compared engine, and the GPU's when there is one."""
    device = f"rtmon_{object_id(instance)}"
    head = snapshot.headline
    out: dict[str, dict[str, Any]] = {}
    for engine in snapshot.engines:
        figures = ENGINE_FIGURES + ((SPEEDUP,) if head and head.optimized == engine.name else ())
        for figure in figures:
            cid = f"{object_id(engine.name)}_{figure.key}"
            out[cid] = _sensor(figure, topics.metrics(engine.name), f"{device}_{cid}", f"{engine.name} {figure.name}",
                               expire_after)  # fmt: skip
    if snapshot.gpu is not None:
        for figure in GPU_FIGURES:
            out[figure.key] = _sensor(figure, topics.gpu, f"{device}_{figure.key}", figure.name, expire_after)
    return out


def device_config(snapshot: MonitorSnapshot, topics: Topics, instance: str, expire_after: int) -> dict[str, Any]:
    """The device discovery payload for `snapshot`."""
    device: dict[str, Any] = {
        "ids": [f"rtmon_{object_id(instance)}"],
        "name": f"rtmon {instance}",
        "mf": "rtmon",
        "mdl": "object-detection monitor",
        "sw": __version__,
    }
    if snapshot.gpu is not None:
        device["hw"] = snapshot.gpu.name
    return {
        "dev": device,
        "o": {"name": "rtmon", "sw": __version__},
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 0,
        "cmps": components(snapshot, topics, instance, expire_after),
    }


def live_components(config: dict[str, Any]) -> set[str]:
    """The component ids a config sets up (a component reduced to its platform removes one)."""
    cmps = config.get("cmps")
    if not isinstance(cmps, dict):
        return set()
    return {cid for cid, c in cmps.items() if isinstance(c, dict) and set(c) - {"p", "platform"}}


def removal_config(config: dict[str, Any], removed: set[str]) -> dict[str, Any]:
    """`config` plus each of `removed` as `{"p": "sensor"}`: Home Assistant's way of removing
    one component of a device; send `config` itself afterwards."""
    return {**config, "cmps": {**config["cmps"], **{cid: {"p": "sensor"} for cid in sorted(removed)}}}
