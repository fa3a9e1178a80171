"""The MQTT publisher: one object the pipeline never waits on.

`MetricsPublisher` runs its own asyncio loop in a daemon thread. At `rate_hz` it reads one
`MonitorSnapshot`, turns it into JSON payloads (`payloads.py`, schema in docs/mqtt.md) and puts
them in a bounded queue that drops the oldest message when full. A sender drains the queue into
an `aiomqtt.Client`; when the broker is unreachable or goes away it reconnects with exponential
back-off (`rtmon.retry`), and a broker that is down at start is just the first outage. The
status topic carries a plain retained `online`, and a retained `offline` as the client's last
will, so a crash shows as `offline` (the convention Home Assistant and Frigate use).

With `discovery` on, the publisher also keeps Home Assistant's device config (`discovery.py`)
retained on the broker: it sends it on connect and whenever the sensors change, again when Home
Assistant announces itself on its birth topic, and it removes components a previous run left
behind. A broker that refuses the discovery topics costs one warning; the metrics flow on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiomqtt

from rtmon.config import MqttSettings
from rtmon.errors import one_line
from rtmon.mqtt import discovery as ha
from rtmon.mqtt.address import BACKOFF_FIRST_S, BACKOFF_MAX_S, client_options, login_refused, validate
from rtmon.mqtt.payloads import (
    ONLINE,
    detections_payload,
    encode,
    engine_payload,
    gpu_payload,
    status_payload,
    stream_payload,
)
from rtmon.mqtt.topics import instance_id, topics
from rtmon.retry import delays
from rtmon.snapshot import MonitorSnapshot

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.5
STATUS_QOS = 1
METRICS_QOS = 0
DISCOVERY_QOS = 1
# Home Assistant asks for a random delay before answering its birth message, so that many
# devices do not answer at once.
DISCOVERY_JITTER_S = 1.0
# How long the broker may take to deliver our own discovery config back to us; no echo means
# it did not take it (typically an ACL).
DISCOVERY_ECHO_S = 3.0


async def _until_first_ends(jobs: list) -> None:
    """Run the coroutines until one ends; cancel the others; raise the first error (the
    MqttError that ended the connection)."""
    tasks = {asyncio.create_task(job) for job in jobs}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_all(tasks)
    errors = [exc for task in done if not task.cancelled() and (exc := task.exception())]
    if errors:
        raise errors[0]


async def _cancel_all(tasks: set[asyncio.Task]) -> None:
    """Cancel the tasks and wait until every one has ended. A task can swallow a cancellation:
    before Python 3.12, `asyncio.wait_for` (ours, and aiomqtt's in `publish`) drops it when what
    it waits for completes at the same moment, and the task runs on to its next wait. Such a
    task is cancelled again, so a lost connection is never stuck behind it (seen in CI: the
    publisher kept saying "connected" after the broker died). A cancellation of this coroutine
    itself waits for the cleanup and is raised afterwards."""
    interrupted = False
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=0.05)
        except asyncio.CancelledError:
            interrupted = True
    for task in tasks:  # retrieve their errors: none is reported as "never retrieved"
        if not task.cancelled():
            task.exception()
    if interrupted:
        raise asyncio.CancelledError


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes


def _refused(granted: Any) -> bool:
    """True when a SUBACK refused the subscription (0x80 and up; paho gives ReasonCodes or ints)."""
    codes = granted if isinstance(granted, (list, tuple)) else [granted]
    return any(getattr(code, "is_failure", None) or (isinstance(code, int) and code >= 0x80) for code in codes)


class MetricsPublisher:
    """Publishes snapshots to a broker from a daemon thread; `start()` / `stop()` from sync code.

    `published`, `dropped`, `connected`, `connect_failures` and `discovery_sent` are plain
    attributes for tests and the TUI.
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
        self.connect_failures = 0  # attempts that ended in an MqttError (refused, unreachable, lost)
        self.discovery_sent = 0
        self._queue: deque[_Message] = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._warned_auth = False
        self._warned_unreachable = False
        # Home Assistant discovery: the latest config the sampler built, and what the broker holds.
        self._config: dict[str, Any] | None = None
        self._announce: asyncio.Event | None = None
        self._resend = False  # Home Assistant asked for the config again
        self._on_broker: set[str] = set()  # components set up by configs seen on the broker
        self._sent_config = b""  # the last config this run published
        self._echoed: asyncio.Event | None = None
        self._warned_discovery = False

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
        self._announce, self._echoed = asyncio.Event(), asyncio.Event()
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
        for stream in snap.streams:
            self._enqueue(self.topics.stream(stream.source.stream), stream_payload(snap, stream))
        self._enqueue(self.topics.gpu, gpu_payload(snap))
        if self.settings.discovery:
            expire_after = ha.expire_after_s(self.settings.rate_hz)
            config = ha.device_config(snap, self.topics, instance_id(self.settings), expire_after)
            if config != self._config:
                self._config = config
                assert self._announce is not None
                self._announce.set()

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
        return aiomqtt.Client(
            **client_options(self.settings, self.address),
            identifier=f"rtmon-{instance_id(self.settings)}-{os.getpid()}",
            will=aiomqtt.Will(self.topics.status, status_payload(False), qos=STATUS_QOS, retain=True),
            timeout=5.0,
            keepalive=15,
        )

    async def _connect_forever(self) -> None:
        assert self._stopping is not None
        backoff = delays(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        while not self._stopping.is_set():
            try:
                async with self._new_client() as client:
                    self.connected = True
                    backoff = delays(BACKOFF_FIRST_S, BACKOFF_MAX_S)  # a new outage starts short again
                    self._warned_unreachable = False
                    log.info("mqtt: connected to %s, publishing under %s", self.address, self.topics.base)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.connect_failures += 1
                self._report_failure(exc)
            finally:
                self.connected = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), next(backoff))

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish `online`, drain the queue (and keep discovery up to date) until the connection
        drops or a stop is asked for; on a stop, publish a retained `offline` before the clean
        disconnect."""
        assert self._stopping is not None
        # `_receive` runs from the start: it is what notices a lost connection, also while the
        # `online` status waits for its PUBACK (aiomqtt would otherwise wait out its timeout).
        jobs = [self._receive(client), self._publish(client), self._stopping.wait()]
        await _until_first_ends(jobs)
        await client.publish(self.topics.status, status_payload(False), qos=STATUS_QOS, retain=True, timeout=1.0)

    async def _publish(self, client: aiomqtt.Client) -> None:
        """Say `online`, then drain the queue (and keep the discovery config up to date)."""
        await client.publish(self.topics.status, status_payload(True), qos=STATUS_QOS, retain=True)
        jobs = [self._drain(client)]
        if self.settings.discovery:
            can_confirm = await self._subscribe_discovery(client)
            jobs.append(self._announce_forever(client, can_confirm))
        await _until_first_ends(jobs)

    async def _receive(self, client: aiomqtt.Client) -> None:
        # aiomqtt's message iterator is also its documented way of noticing a lost connection:
        # without discovery nothing is subscribed and it yields nothing until it raises.
        async for message in client.messages:
            payload = bytes(message.payload) if isinstance(message.payload, (bytes, bytearray)) else b""
            if message.topic.matches(self.topics.birth):
                if payload == ONLINE.encode():
                    assert self._loop is not None
                    self._loop.call_later(random.uniform(0, DISCOVERY_JITTER_S), self._request_discovery)
            elif message.topic.matches(self.topics.discovery):
                self._on_config_seen(payload)

    def _request_discovery(self) -> None:
        assert self._announce is not None
        self._resend = True
        self._announce.set()

    def _on_config_seen(self, payload: bytes) -> None:
        """A config on our discovery topic: our own coming back (the broker took it), or one a
        previous run left retained, whose components we may have to remove."""
        assert self._echoed is not None and self._announce is not None
        if payload and payload == self._sent_config:
            self._echoed.set()
            return
        try:
            seen = ha.live_components(json.loads(payload)) if payload else set()
        except ValueError:
            return
        current = ha.live_components(self._config or {})
        if seen - current - self._on_broker:
            self._on_broker |= seen
            self._announce.set()

    async def _subscribe_discovery(self, client: aiomqtt.Client) -> bool:
        """Listen for Home Assistant's birth message and for our own config topic (retained
        leftovers, and the echo that proves the broker took our config). Returns whether the
        echo can be expected."""
        can_confirm = True
        for topic in (self.topics.birth, self.topics.discovery):
            if _refused(await client.subscribe(topic, qos=DISCOVERY_QOS)):
                self._warn_discovery(f"the broker refused the subscription to {topic}")
                can_confirm = can_confirm and topic != self.topics.discovery
        return can_confirm

    async def _announce_forever(self, client: aiomqtt.Client, can_confirm: bool) -> None:
        """Publish the config whenever it changed, Home Assistant asked for it, or components
        on the broker are no longer ours; removed components first go out as `{"p": ...}`."""
        assert self._announce is not None and self._echoed is not None
        sent_here = b""
        while True:
            self._announce.clear()
            config = self._config
            if config is not None:
                payload = encode(config)
                removed = self._on_broker - ha.live_components(config)
                if payload != sent_here or self._resend or removed:
                    self._resend = False
                    if removed:
                        removal = encode(ha.removal_config(config, removed))
                        await client.publish(self.topics.discovery, removal, qos=DISCOVERY_QOS, retain=True)
                    self._echoed.clear()
                    self._sent_config = sent_here = payload
                    await client.publish(self.topics.discovery, payload, qos=DISCOVERY_QOS, retain=True)
                    # Leftovers seen while publishing stay in `_on_broker`, for the next round.
                    self._on_broker = (self._on_broker - removed) | ha.live_components(config)
                    self.discovery_sent += 1
                    if can_confirm:
                        await self._expect_echo()
            await self._announce.wait()

    async def _expect_echo(self) -> None:
        assert self._echoed is not None
        try:
            await asyncio.wait_for(self._echoed.wait(), DISCOVERY_ECHO_S)
        except asyncio.TimeoutError:
            self._warn_discovery(f"the broker did not take the discovery config on {self.topics.discovery}")

    def _warn_discovery(self, what: str) -> None:
        if self._warned_discovery:
            log.debug("mqtt: %s", what)
            return
        self._warned_discovery = True
        log.warning(
            "mqtt: %s (an ACL?); Home Assistant may not discover this instance. Metrics are still published under %s/",
            what,
            self.topics.base,
        )

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
                    one_line(exc),
                )
            return
        if not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning("mqtt: lost or cannot reach %s (%s); retrying in the background", self.address, one_line(exc))
        else:
            log.debug("mqtt: %s still unreachable (%s)", self.address, one_line(exc))
