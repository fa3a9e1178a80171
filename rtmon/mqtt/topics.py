"""Every topic rtmon publishes to or listens on, in one place (the table in docs/mqtt.md).

Metrics live under `<prefix>/<instance>/`; Home Assistant's discovery config and its birth
message live under the discovery prefix. The instance defaults to the hostname.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from rtmon.config import MqttSettings
from rtmon.errors import UserError


def instance_id(settings: MqttSettings) -> str:
    """The instance's topic level: the setting, else this machine's hostname."""
    return settings.instance or socket.gethostname()


def _level(name: str) -> str:
    """An engine name as one topic level."""
    return "".join("_" if c in "/+#" else c for c in name) or "_"


def object_id(text: str) -> str:
    """`text` as a Home Assistant discovery id: only [a-zA-Z0-9_-]."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text) or "_"


def discovery_topic(discovery_prefix: str, instance: str) -> str:
    """Where the Home Assistant device config of `instance` is kept (retained)."""
    return f"{discovery_prefix}/device/rtmon_{object_id(instance)}/config"


def birth_topic(discovery_prefix: str) -> str:
    """Where Home Assistant says `online` when it (re)starts: the cue to send discovery again."""
    return f"{discovery_prefix}/status"


@dataclass(frozen=True)
class Topics:
    base: str  # <prefix>/<instance>
    discovery: str = ""  # the Home Assistant device config
    birth: str = ""  # Home Assistant's own status

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def gpu(self) -> str:
        return f"{self.base}/gpu"

    def metrics(self, engine: str) -> str:
        return f"{self.base}/engines/{_level(engine)}/metrics"

    def detections(self, engine: str) -> str:
        return f"{self.base}/engines/{_level(engine)}/detections"

    def stream(self, stream: int) -> str:
        return f"{self.base}/streams/{stream}/metrics"


def topics(settings: MqttSettings) -> Topics:
    """The topics of the instance these settings name."""
    instance = instance_id(settings)
    return Topics(
        f"{settings.prefix}/{instance}",
        discovery_topic(settings.discovery_prefix, instance),
        birth_topic(settings.discovery_prefix),
    )


def _check_level(name: str, value: str) -> None:
    if not value or any(c in value for c in "+#\0"):
        raise UserError(f"mqtt: {name} '{value}' must be non-empty and contain no '+', '#'")


def check_names(settings: MqttSettings) -> None:
    """The prefix, instance and discovery prefix make valid topics; UserError on the first that doesn't."""
    for part in settings.prefix.split("/"):
        _check_level("prefix", part)
    _check_level("instance", instance_id(settings))
    for part in settings.discovery_prefix.split("/"):
        _check_level("discovery_prefix", part)
    if "/" in instance_id(settings):
        raise UserError(f"mqtt: instance '{instance_id(settings)}' must not contain '/'")
