"""MQTT metrics feed: one publisher the pipeline never waits on.

`MetricsPublisher` runs its own asyncio loop in a daemon thread. At `rate_hz` it reads one
`MonitorSnapshot`, turns it into JSON payloads (the pure `*_payload` builders below, schema in
docs/mqtt.md) and puts them in a bounded queue that drops the oldest message when full. A
sender drains the queue into an `aiomqtt.Client`; when the broker is unreachable or goes away
it reconnects with exponential back-off, and a broker that is down at start is just the first
outage. The status topic carries a retained `online`, and a retained `offline` as the client's
last will, so a crash shows as `offline`.

Credentials come from the settings or `RTMON_MQTT_USERNAME` / `RTMON_MQTT_PASSWORD` and never
appear in a log message or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from rtmon.config import MqttSettings
from rtmon.errors import UserError
from rtmon.metrics import EngineSnapshot
from rtmon.snapshot import MonitorSnapshot

log = logging.getLogger(__name__)

SCHEMA = 1
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
BACKOFF_FIRST_S = 0.25
# Short enough that a returning broker is used again within a couple of seconds.
BACKOFF_MAX_S = 2.0
STOP_GRACE_S = 1.5
STATUS_QOS = 1
METRICS_QOS = 0
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


def _check_topic_level(name: str, value: str) -> None:
    if not value or any(c in value for c in "+#\0"):
        raise UserError(f"mqtt: {name} '{value}' must be non-empty and contain no '+', '#'")


def validate(settings: MqttSettings) -> BrokerAddress:
    """Start-up checks: the URL, the topic names, the TLS files. UserError on the first problem."""
    address = parse_mqtt_url(settings.url)
    for part in settings.prefix.split("/"):
        _check_topic_level("prefix", part)
    _check_topic_level("instance", instance_id(settings))
    if "/" in instance_id(settings):
        raise UserError(f"mqtt: instance '{instance_id(settings)}' must not contain '/'")
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


def instance_id(settings: MqttSettings) -> str:
    return settings.instance or socket.gethostname()


def _level(name: str) -> str:
    """An engine name as one topic level."""
    return "".join("_" if c in "/+#" else c for c in name) or "_"


@dataclass(frozen=True)
class Topics:
    base: str  # <prefix>/<instance>

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


def topics(settings: MqttSettings) -> Topics:
    return Topics(f"{settings.prefix}/{instance_id(settings)}")


# ---- payloads: pure functions of a snapshot, schema v1 (docs/mqtt.md) ----


def _header(ts: float) -> dict[str, Any]:
    return {"schema": SCHEMA, "ts": round(float(ts), 3)}


def _num(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def status_payload(online: bool, ts: float) -> dict[str, Any]:
    return {**_header(ts), "status": "online" if online else "offline"}


def engine_payload(snapshot: MonitorSnapshot, engine: EngineSnapshot) -> dict[str, Any]:
    info = snapshot.engine_info.get(engine.name)
    lat = engine.latency
    return {
        **_header(snapshot.time),
        "engine": engine.name,
        "backend": info.backend if info else None,
        "precision": info.precision if info else None,
        "device": info.device if info else None,
        "model": snapshot.model,
        "state": engine.state,
        "error": engine.error,
        "fps": _num(engine.fps),
        "fps_overall": _num(engine.fps_overall),
        "latency_ms": None
        if lat is None
        else {"mean": _num(lat.mean), "p50": _num(lat.p50), "p95": _num(lat.p95), "p99": _num(lat.p99)},
        "stages_ms": {stage: _num(ms) for stage, ms in engine.stages_ms.items()},
        "frames_processed": engine.processed,
        "frames_skipped": engine.skipped,
        "gpu_mem_mib": _num(engine.gpu_mem_mib, 1),
    }


def gpu_payload(snapshot: MonitorSnapshot) -> dict[str, Any]:
    """Device telemetry; every field null when there is no GPU (unknown, not zero)."""
    gpu = snapshot.gpu
    return {
        **_header(snapshot.time),
        "name": gpu.name if gpu else None,
        "utilization_pct": _num(gpu.utilization_pct, 1) if gpu else None,
        "memory_used_mib": _num(gpu.memory_used_mib, 1) if gpu else None,
        "memory_total_mib": _num(gpu.memory_total_mib, 1) if gpu else None,
        "temperature_c": _num(gpu.temperature_c, 1) if gpu else None,
        "power_w": _num(gpu.power_w, 1) if gpu else None,
        "process_mem_mib": _num(gpu.process_mem_mib, 1) if gpu else None,
        "allocator_peak_mib": _num(gpu.allocator_peak_mib, 1) if gpu else None,
    }


def detections_payload(
    snapshot: MonitorSnapshot, engine: EngineSnapshot, class_names: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Per-class counts in the engine's latest frame, keyed by class name (or id as text)."""
    names = class_names or {}
    return {
        **_header(snapshot.time),
        "engine": engine.name,
        "counts": {names.get(cid, str(cid)): n for cid, n in sorted(engine.class_counts.items())},
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


# ---- the publisher ----


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes


class MetricsPublisher:
    """Publishes snapshots to a broker from a daemon thread; `start()` / `stop()` from sync code.

    `published`, `dropped` and `connected` are plain attributes for tests and the TUI.
    """

    def __init__(
        self,
        settings: MqttSettings,
        snapshot: Callable[[], MonitorSnapshot],
        class_names: Mapping[int, str] | None = None,
    ) -> None:
        self.address = validate(settings)
        self.settings = settings
        self.topics = topics(settings)
        self._snapshot = snapshot
        self._class_names = dict(class_names or {})
        self.published = 0
        self.dropped = 0
        self.connected = False
        self._queue: deque[_Message] = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._warned_auth = False
        self._warned_unreachable = False

    # -- sync side --

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="rtmon-mqtt", daemon=True)
        self._thread.start()
        ready.wait(2.0)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish a retained `offline`, disconnect, join; never longer than `timeout_s`."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has already closed
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)
        self._thread = None

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    # -- loop side --

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        ready.set()
        sampler = asyncio.create_task(self._sample_forever())
        connection = asyncio.create_task(self._connect_forever())
        await self._stopping.wait()
        sampler.cancel()
        # A connected client says `offline` and disconnects by itself once it sees `_stopping`.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(connection), STOP_GRACE_S)
        connection.cancel()
        await asyncio.gather(sampler, connection, return_exceptions=True)

    def _enqueue(self, topic: str, payload: dict[str, Any]) -> None:
        if len(self._queue) >= self.settings.queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(_Message(topic, encode(payload)))
        assert self._wake is not None
        self._wake.set()

    def _sample_once(self) -> None:
        snap = self._snapshot()
        for engine in snap.engines:
            self._enqueue(self.topics.metrics(engine.name), engine_payload(snap, engine))
            if self.settings.detections:
                payload = detections_payload(snap, engine, self._class_names)
                self._enqueue(self.topics.detections(engine.name), payload)
        self._enqueue(self.topics.gpu, gpu_payload(snap))

    async def _sample_forever(self) -> None:
        period = 1.0 / self.settings.rate_hz
        next_t = time.monotonic()
        while True:
            try:
                self._sample_once()
            except Exception:  # a bad snapshot must not end the feed
                log.exception("mqtt: could not build the metrics payloads")
            next_t += period
            now = time.monotonic()
            if next_t < now:  # fell behind (e.g. the machine was suspended): don't burst
                next_t = now
            await asyncio.sleep(next_t - now)

    def _new_client(self) -> aiomqtt.Client:
        offline = encode(status_payload(False, time.time()))
        return aiomqtt.Client(
            **client_options(self.settings, self.address),
            identifier=f"rtmon-{instance_id(self.settings)}-{os.getpid()}",
            will=aiomqtt.Will(self.topics.status, offline, qos=STATUS_QOS, retain=True),
            timeout=5.0,
            keepalive=15,
        )

    async def _connect_forever(self) -> None:
        assert self._stopping is not None
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            try:
                async with self._new_client() as client:
                    self.connected = True
                    backoff = BACKOFF_FIRST_S
                    self._warned_unreachable = False
                    log.info("mqtt: connected to %s, publishing under %s", self.address, self.topics.base)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._report_failure(exc)
            finally:
                self.connected = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish `online`, drain the queue until the connection drops or a stop is asked for;
        on a stop, publish a retained `offline` before the clean disconnect."""
        assert self._stopping is not None
        online = encode(status_payload(True, time.time()))
        await client.publish(self.topics.status, online, qos=STATUS_QOS, retain=True)
        watcher = asyncio.create_task(self._until_disconnected(client))
        sender = asyncio.create_task(self._drain(client))
        stop = asyncio.create_task(self._stopping.wait())
        done, pending = await asyncio.wait({watcher, sender, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        errors = [exc for task in done if (exc := task.exception())]
        if errors:
            raise errors[0]  # the MqttError that ended the connection
        offline = encode(status_payload(False, time.time()))
        await client.publish(self.topics.status, offline, qos=STATUS_QOS, retain=True, timeout=1.0)

    @staticmethod
    async def _until_disconnected(client: aiomqtt.Client) -> None:
        # aiomqtt's message iterator is its documented way of noticing a lost connection;
        # nothing is subscribed, so it yields nothing until it raises.
        async for _ in client.messages:
            pass

    async def _drain(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None
        while True:
            while self._queue:
                message = self._queue[0]
                await client.publish(message.topic, message.payload, qos=METRICS_QOS)
                if self._queue and self._queue[0] is message:  # not dropped meanwhile
                    self._queue.popleft()
                self.published += 1
            self._wake.clear()
            await self._wake.wait()

    def _report_failure(self, exc: aiomqtt.MqttError) -> None:
        if login_refused(exc):
            if not self._warned_auth:
                self._warned_auth = True
                log.warning(
                    "mqtt: %s refused the login (%s); check mqtt.username / mqtt.password "
                    "(or RTMON_MQTT_USERNAME / RTMON_MQTT_PASSWORD). Still retrying; the pipeline runs on.",
                    self.address,
                    exc,
                )
            return
        if not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning("mqtt: lost or cannot reach %s (%s); retrying in the background", self.address, exc)
        else:
            log.debug("mqtt: %s still unreachable (%s)", self.address, exc)
