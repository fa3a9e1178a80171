"""The Prometheus endpoint: the live figures at `http://ADDR:PORT/metrics`, for Grafana and friends.

`start_exporter(settings, snapshot)` serves prometheus_client's text format from a small HTTP
server in a daemon thread. Its one collector reads ONE `MonitorSnapshot` per scrape and turns
it into metric families (`families.py`); nothing writes gauges in the background, so a scrape
costs nothing between scrapes. The listen address is checked before any slow work
(`check_listen`); it defaults to this machine only.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from rtmon.config import PrometheusSettings
from rtmon.errors import UserError
from rtmon.prometheus.families import families
from rtmon.snapshot import MonitorSnapshot

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # reachable from this machine only, unless an address is given


def parse_listen(text: str) -> tuple[str, int]:
    """`PORT`, `ADDR:PORT` or `[IPv6]:PORT` → (host, port); anything else: UserError."""
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UserError(f"prometheus: write an IPv6 address in brackets, e.g. [::1]:9464 (got '{raw}')")
    if not host:
        raise UserError(f"prometheus: no address before ':' in '{raw}'; write PORT or ADDR:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise UserError(f"prometheus: '{raw}' is not [ADDR:]PORT (e.g. 9464 or 0.0.0.0:9464)") from None
    if not 0 <= port <= 65535:
        raise UserError(f"prometheus: port {port} is not between 0 and 65535")
    return host, port


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cannot_listen(host: str, port: int, exc: OSError) -> UserError:
    return UserError(f"prometheus: cannot listen on {_where(host, port)} ({exc.strerror or exc})")


def check_listen(settings: PrometheusSettings) -> tuple[str, int]:
    """Start-up check, before any slow work: the address parses and can be bound now."""
    host, port = parse_listen(settings.listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]  # fmt: skip
        with socket.socket(family, kind, proto) as probe:
            # The HTTP server binds with SO_REUSEADDR too, so a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None
    return host, port


@dataclass
class Exporter:
    """A running /metrics endpoint; `stop()` closes its port."""

    host: str
    port: int  # the bound port (the one asked for, or the one chosen for port 0)
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{_where(self.host, self.port)}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


def start_exporter(settings: PrometheusSettings, snapshot: Callable[[], MonitorSnapshot]) -> Exporter:
    """Serve `snapshot()`'s figures at `settings.listen`; UserError when it cannot listen there."""
    host, port = parse_listen(settings.listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None
    exporter = Exporter(host, server.server_port, server, thread)
    log.info("prometheus: serving %s", exporter.url)
    return exporter


class SnapshotCollector(Collector):
    """Reads one snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], MonitorSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot())
