"""`rtmon watch`: an external display of what a broker carries from one or several rtmon instances.

It subscribes to `<prefix>/#`, keeps the latest message of each kind per instance, engine and
stream in a `WatchState`, and redraws rich tables a few times a second (plain terminal output,
so it works over SSH): one row per instance and engine and, for a publisher with several
sources, one row per stream and engine. Only the status words `online`/`offline` and schema-v2
JSON payloads on rtmon's topics (docs/mqtt.md) are accepted; anything else is counted as
rejected, which makes this view the schema's first consumer. `collect()` is the same loop
without a screen, for tests and scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rtmon.config import MqttSettings
from rtmon.errors import one_line
from rtmon.formatting import NA, fmt
from rtmon.mqtt.address import BACKOFF_FIRST_S, BACKOFF_MAX_S, BrokerAddress, client_options, login_refused, validate
from rtmon.mqtt.payloads import OFFLINE, ONLINE, SCHEMA
from rtmon.retry import delays

REFRESH_HZ = 4.0
STALE_S = 5.0  # no metrics for this long: the row is dimmed


@dataclass
class EngineView:
    metrics: dict[str, Any] | None = None
    detections: dict[str, Any] | None = None
    received: float = 0.0  # monotonic time of the last metrics message


@dataclass
class StreamView:
    metrics: dict[str, Any]  # the latest `…/streams/<n>/metrics` payload
    received: float  # monotonic time it came


@dataclass
class InstanceView:
    status: str | None = None  # online | offline
    gpu: dict[str, Any] | None = None
    engines: dict[str, EngineView] = field(default_factory=dict)
    streams: dict[int, StreamView] = field(default_factory=dict)  # only from a publisher with several sources


@dataclass
class WatchState:
    """The latest status and schema-v2 message per instance, kind and engine."""

    prefix: str
    connection: str = "connecting…"  # how the feed stands, for the footer
    instances: dict[str, InstanceView] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    last_rejection: str = ""

    def update(self, topic: str, payload: bytes, now: float | None = None) -> bool:
        """Take one message; False (and counted) when its topic or payload is not schema v2."""
        why = self._apply(topic, payload, time.monotonic() if now is None else now)
        if why:
            self.rejected += 1
            self.last_rejection = f"{topic}: {why}"
            return False
        self.accepted += 1
        return True

    def _apply(self, topic: str, payload: bytes, now: float) -> str:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return "outside the prefix"
        levels = topic[len(head) :].split("/")
        if levels[1:] == ["status"]:
            if payload.decode(errors="replace") not in (ONLINE, OFFLINE):
                return f"status is not {ONLINE} or {OFFLINE}"
            self.instances.setdefault(levels[0], InstanceView()).status = payload.decode()
            return ""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            return "not JSON"
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            return f"not schema {SCHEMA}"
        if not isinstance(data.get("ts"), (int, float)):
            return "no timestamp"
        instance = self.instances.setdefault(levels[0], InstanceView())
        match levels[1:]:
            case ["gpu"]:
                instance.gpu = data
            case ["engines", engine, "metrics"]:
                view = instance.engines.setdefault(engine, EngineView())
                view.metrics, view.received = data, now
            case ["engines", engine, "detections"]:
                instance.engines.setdefault(engine, EngineView()).detections = data
            case ["streams", stream, "metrics"] if stream.isdigit():
                engines = data.get("engines")
                if not isinstance(engines, dict) or not all(isinstance(fig, dict) for fig in engines.values()):
                    return "no engines object"
                instance.streams[int(stream)] = StreamView(data, now)
            case _:
                return "unknown topic"
        return ""


async def _subscribe_into(settings: MqttSettings, address: BrokerAddress, state: WatchState) -> None:
    """Feed `state` from the broker forever, reconnecting with back-off."""
    backoff = delays(BACKOFF_FIRST_S, BACKOFF_MAX_S)
    while True:
        try:
            async with aiomqtt.Client(**client_options(settings, address), timeout=5.0) as client:
                await client.subscribe(f"{settings.prefix}/#", qos=1)
                state.connection = f"connected to {address}"
                backoff = delays(BACKOFF_FIRST_S, BACKOFF_MAX_S)  # a new outage starts short again
                async for message in client.messages:
                    state.update(str(message.topic), bytes(message.payload))
        except aiomqtt.MqttError as exc:
            why = "login refused: check the username/password" if login_refused(exc) else one_line(exc)
            state.connection = f"{address}: {why}; retrying"
        await asyncio.sleep(next(backoff))


async def _collect(settings: MqttSettings, seconds: float) -> WatchState:
    address = validate(settings)
    state = WatchState(settings.prefix)
    task = asyncio.create_task(_subscribe_into(settings, address, state))
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return state


def collect(settings: MqttSettings, seconds: float) -> WatchState:
    """Listen for `seconds` and return what arrived (retained messages included)."""
    return asyncio.run(_collect(settings, seconds))


def _top_counts(detections: dict[str, Any] | None, n: int = 3) -> str:
    if not detections:
        return ""
    counts = sorted(detections.get("counts", {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {count}" for name, count in counts[:n]) or "none"


def _gpu_line(gpu: dict[str, Any] | None) -> str:
    if not gpu or gpu.get("name") is None:
        return f"GPU {NA}"
    return (
        f"{gpu['name']}  util {fmt(gpu['utilization_pct'], '.0f')}%  "
        f"mem {fmt(gpu['memory_used_mib'], ',.0f')}/{fmt(gpu['memory_total_mib'], ',.0f')} MiB  "
        f"{fmt(gpu['temperature_c'], '.0f')} °C  {fmt(gpu['power_w'], '.0f')} W"
    )


def _percentiles(latency: dict[str, Any] | None) -> str:
    return "/".join(fmt(latency.get(k)) for k in ("p50", "p95", "p99")) if latency else NA


def _instance_label(name: str, inst: InstanceView) -> Text:
    status = inst.status or "?"
    return Text(f"{name} ({status})", style="green" if status == ONLINE else "red")


def _engines_table(state: WatchState, now: float) -> Table:
    """A row per instance and engine, the GPU in the instance's first row."""
    table = Table(expand=True)
    for column in ("instance", "engine", "state", "FPS", "lat p50/p95/p99 ms", "frames", "skipped",
                   "GPU mem", "detections", "GPU"):  # fmt: skip
        table.add_column(column, no_wrap=column != "GPU", justify="right" if column == "FPS" else "left")
    for name, inst in sorted(state.instances.items()):
        label = _instance_label(name, inst)
        if not inst.engines:
            table.add_row(label, "", "", "", "", "", "", "", "", _gpu_line(inst.gpu))
        for i, (engine, view) in enumerate(sorted(inst.engines.items())):
            m = view.metrics or {}
            stale = inst.status != ONLINE or now - view.received > STALE_S
            table.add_row(
                label if i == 0 else "",
                engine,
                m.get("state", "?"),
                fmt(m.get("fps")),
                _percentiles(m.get("latency_ms")),
                str(m.get("frames_processed", NA)),
                str(m.get("frames_skipped", NA)),
                fmt(m.get("gpu_mem_mib"), ",.0f"),
                _top_counts(view.detections),
                _gpu_line(inst.gpu) if i == 0 else "",
                style="dim" if stale else None,
            )
    return table


def _streams_table(state: WatchState, now: float) -> Table | None:
    """A row per instance, stream and engine that takes it; None when no publisher has several sources."""
    if not any(inst.streams for inst in state.instances.values()):
        return None
    table = Table(expand=True)
    for column in ("instance", "stream", "source", "state", "reconnects", "source FPS", "engine", "FPS",
                   "lat p50/p95/p99 ms", "frames", "dropped"):  # fmt: skip
        table.add_column(column, no_wrap=True, justify="right" if "FPS" in column else "left")
    for name, inst in sorted(state.instances.items()):
        label = _instance_label(name, inst)
        for i, (number, view) in enumerate(sorted(inst.streams.items())):
            m = view.metrics
            stale = inst.status != ONLINE or now - view.received > STALE_S
            source = [str(number), str(m.get("source", "?")), str(m.get("state", "?")), str(m.get("reconnects", NA)),
                      fmt(m.get("source_fps"))]  # fmt: skip
            engines = sorted(m["engines"].items()) or [("", {})]  # a stream no engine takes: its source row alone
            for j, (engine, fig) in enumerate(engines):
                table.add_row(
                    label if i == j == 0 else "",
                    *(source if j == 0 else [""] * len(source)),
                    engine,
                    fmt(fig.get("fps")),
                    _percentiles(fig.get("latency_ms")),
                    str(fig.get("frames_processed", NA)),
                    str(fig.get("frames_dropped", NA)),
                    style="dim" if stale else None,
                )
    return table


def render(state: WatchState, now: float | None = None) -> Group:
    """One screen: the engines' table, the streams' table when a publisher has several sources,
    and a footer with the connection and the message counts."""
    now = time.monotonic() if now is None else now
    tables = [table for table in (_engines_table(state, now), _streams_table(state, now)) if table is not None]
    footer = f"{state.connection}   messages {state.accepted}"
    if state.rejected:
        footer += f", rejected {state.rejected} (last: {state.last_rejection})"
    return Group(*tables, Text(footer + "   Ctrl-C quits", style="dim"))


async def _watch(settings: MqttSettings, address: BrokerAddress) -> None:
    state = WatchState(settings.prefix, connection=f"connecting to {address}…")
    feed = asyncio.create_task(_subscribe_into(settings, address, state))
    try:
        with Live(render(state), auto_refresh=False) as live:
            while not feed.done():
                live.update(render(state), refresh=True)
                await asyncio.sleep(1 / REFRESH_HZ)
        feed.result()
    finally:
        feed.cancel()


def run_watch(settings: MqttSettings) -> int:
    """Show the broker's rtmon feeds until Ctrl-C; exit code 0. Bad settings raise UserError."""
    address = validate(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(settings, address))
    return 0
