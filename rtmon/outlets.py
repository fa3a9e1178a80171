"""Where a running pipeline's figures go besides the screen: the MQTT publisher and the Prometheus
endpoint. Both read `MonitorSnapshot`s on their own schedule; the pipeline never waits on them.
Each command checks them before any slow work (`factory`), starts them once the engines run and
stops them, whatever happens, when it ends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from rtmon.config import PrometheusSettings, Settings
from rtmon.snapshot import MonitorSnapshot

SnapshotFn = Callable[[], MonitorSnapshot]


class Outlet(Protocol):
    """What `Outlets` starts and stops: the MQTT publisher, the Prometheus endpoint."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Prometheus:
    """The endpoint as an outlet: it binds its port only when started."""

    def __init__(self, settings: PrometheusSettings, snapshot: SnapshotFn) -> None:
        self.settings, self.snapshot, self.exporter = settings, snapshot, None

    def start(self) -> None:
        from rtmon.prometheus.exporter import start_exporter

        self.exporter = start_exporter(self.settings, self.snapshot)

    def stop(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None


class Outlets:
    """Started together, stopped together (in reverse), each at most once."""

    def __init__(self, items: list[Outlet]) -> None:
        self.items = items
        self._started: list[Outlet] = []

    def start(self) -> None:
        for item in self.items:
            item.start()
            self._started.append(item)

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()


def factory(settings: Settings) -> Callable[[SnapshotFn, Mapping[int, str]], Outlets] | None:
    """`(snapshot_fn, class_names) -> Outlets` for the outlets the settings ask for, or None. The
    broker URL, TLS files and the Prometheus address are checked here (a UserError on the first
    problem), before anything slow starts."""
    wants_mqtt, wants_prometheus = bool(settings.mqtt.url), bool(settings.prometheus.listen)
    if not (wants_mqtt or wants_prometheus):
        return None
    if wants_mqtt:
        from rtmon.mqtt.address import validate

        validate(settings.mqtt)
    if wants_prometheus:
        from rtmon.prometheus.exporter import check_listen

        check_listen(settings.prometheus)

    def build(snapshot: SnapshotFn, class_names: Mapping[int, str]) -> Outlets:
        items: list[Outlet] = []
        if wants_mqtt:
            from rtmon.mqtt.publisher import MetricsPublisher

            items.append(MetricsPublisher(settings.mqtt, snapshot, class_names))
        if wants_prometheus:
            items.append(_Prometheus(settings.prometheus, snapshot))
        return Outlets(items)

    return build
