"""Where and how to reach the broker: its URL, TLS, the credentials, and the reconnect pace. Shared
by the publisher and `rtmon watch`, so both read the same settings the same way.

Credentials come from the settings or `RTMON_MQTT_USERNAME` / `RTMON_MQTT_PASSWORD` and never
appear in a log message or an error: a URL that carries them is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from rtmon.config import MqttSettings
from rtmon.errors import UserError
from rtmon.mqtt.topics import check_names

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
BACKOFF_FIRST_S = 0.25
# Short enough that a returning broker is used again within a couple of seconds.
BACKOFF_MAX_S = 2.0
# MQTT 3.1.1 CONNACK codes 4/5 and their MQTT 5 equivalents: the login itself was refused.
_AUTH_REFUSED = {4, 5, 134, 135}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]` → BrokerAddress; anything else: UserError."""
    text = url.strip()
    if "://" not in text:
        raise UserError(f"mqtt: '{text}' is not a broker URL; write mqtt://host:port or mqtts://host:port")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"mqtt: cannot parse the broker URL ({exc}); write mqtt://host:port") from None
    if parts.username is not None or parts.password is not None:
        # The URL is printed in logs and errors; secrets belong in the settings or environment.
        raise UserError(
            "mqtt: the broker URL must not contain credentials; set mqtt.username / mqtt.password "
            "or RTMON_MQTT_USERNAME / RTMON_MQTT_PASSWORD"
        )
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UserError(f"mqtt: unknown scheme '{parts.scheme}' in '{text}' (known: mqtt, mqtts)")
    if not parts.hostname:
        raise UserError(f"mqtt: no host in '{text}'; write {scheme}://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"mqtt: '{text}' has a path or query; topics are set with mqtt.prefix")
    if port == 0:
        raise UserError(f"mqtt: port 0 in '{text}' is not a broker port")
    return BrokerAddress(parts.hostname, port or DEFAULT_PORTS[scheme], scheme == "mqtts")


def credentials(settings: MqttSettings) -> tuple[str | None, str | None]:
    """(username, password) from the settings, else from the environment; None when unset."""
    username = settings.username or os.environ.get("RTMON_MQTT_USERNAME", "")
    password = settings.password or os.environ.get("RTMON_MQTT_PASSWORD", "")
    return username or None, password or None


def validate(settings: MqttSettings) -> BrokerAddress:
    """Start-up checks: the URL, the topic names, the TLS files. UserError on the first problem."""
    address = parse_mqtt_url(settings.url)
    check_names(settings)
    tls_files = {"ca_file": settings.ca_file, "cert_file": settings.cert_file, "key_file": settings.key_file}
    for key, path in tls_files.items():
        if path and not address.tls:
            raise UserError(f"mqtt: {key} is set but the URL is mqtt://; use mqtts:// for TLS")
        if path and not Path(path).is_file():
            raise UserError(f"mqtt: {key} {path}: no such file")
    if settings.key_file and not settings.cert_file:
        raise UserError("mqtt: key_file is set without cert_file")
    username, password = credentials(settings)
    if password and not username:
        raise UserError("mqtt: a password is set without a username")
    return address


def client_options(settings: MqttSettings, address: BrokerAddress) -> dict[str, Any]:
    """Where and how to connect, as `aiomqtt.Client` keyword arguments (publisher and watcher)."""
    username, password = credentials(settings)
    tls = None
    if address.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=settings.ca_file or None,  # None: the system's trusted CAs
            certfile=settings.cert_file or None,
            keyfile=settings.key_file or None,
        )
    return {
        "hostname": address.host,
        "port": address.port,
        "username": username,
        "password": password,
        "tls_params": tls,
    }


def login_refused(exc: aiomqtt.MqttError) -> bool:
    """True when the broker answered but refused the credentials (retrying won't help soon)."""
    code = getattr(exc, "rc", None)
    return getattr(code, "value", code) in _AUTH_REFUSED
