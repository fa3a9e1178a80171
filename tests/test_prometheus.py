"""The Prometheus endpoint: address parsing, a real HTTP scrape of a running fake pipeline parsed
with prometheus_client's own parser, one snapshot per scrape, and bad addresses as one-line
errors."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import eventually
from mqtt_broker import FakePipeline
from prometheus_client.parser import text_string_to_metric_families

from rtmon import __version__
from rtmon.config import PrometheusSettings
from rtmon.errors import UserError
from rtmon.gpu import GpuSample
from rtmon.prometheus.exporter import check_listen, parse_listen, start_exporter
from rtmon.prometheus.families import families
from tests.cli_helpers import assert_one_line_error

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("metrics", "is not [ADDR:]PORT"),
        ("::1:9464", "IPv6 address in brackets"),
        (":9464", "no address before ':'"),
        ("70000", "between 0 and 65535"),
        ("host:", "is not [ADDR:]PORT"),
    ],
)
def test_bad_listen_addresses(text: str, why: str) -> None:
    with pytest.raises(UserError, match=re.escape(why)) as err:
        parse_listen(text)
    assert str(err.value).startswith("prometheus: ")


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} from one scrape, parsed by prometheus_client."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]


def test_the_endpoint_serves_the_live_figures_one_snapshot_per_scrape() -> None:
    pipeline = FakePipeline(streams=True).start()
    calls = []

    def snapshot():
        calls.append(time.monotonic())
        return pipeline.snapshot()

    exporter = start_exporter(PrometheusSettings(listen="127.0.0.1:0"), snapshot)
    try:
        eventually(lambda: pipeline.frames > 100, 5, what="the fake pipeline's first frames")
        first = scrape(exporter.url)
        assert len(calls) == 1
        time.sleep(0.5)  # time passes, not a wait for anything: nothing may sample meanwhile
        assert len(calls) == 1  # nothing is sampled between scrapes
        second = scrape(exporter.url)
        assert len(calls) == 2
    finally:
        exporter.stop()
        pipeline.stop()
    base, opt = {"engine": "baseline", "role": "baseline"}, {"engine": "optimized", "role": "optimized"}
    assert value(second, "rtmon_engine_fps", **opt) > 50
    assert value(second, "rtmon_engine_capacity_fps", **base) > 50
    assert 0 < value(second, "rtmon_engine_busy_ratio", **opt) <= 1
    p50 = value(second, "rtmon_engine_latency_seconds", **opt, quantile="0.5")
    p99 = value(second, "rtmon_engine_latency_seconds", **opt, quantile="0.99")
    assert 0.001 < p50 <= p99 < 1  # seconds, not milliseconds
    assert value(second, "rtmon_engine_stage_seconds", **opt, stage="inference") == pytest.approx(0.002)
    assert value(second, "rtmon_engine_state", **opt, state="running") == 1
    assert value(second, "rtmon_engine_state", **opt, state="failed") == 0
    assert value(second, "rtmon_engine_gpu_memory_bytes", **opt, counter="process") == 512 * MIB
    assert value(second, "rtmon_engine_gpu_memory_bytes", **opt, counter="engine") == 212 * MIB
    processed = "rtmon_engine_frames_processed_total"
    assert value(second, processed, **opt) > value(first, processed, **opt) > 0  # a counter
    assert value(second, "rtmon_stream_fps", stream="0", **opt) > 50
    assert value(second, "rtmon_stream_frames_processed_total", stream="0", **base) > 0
    assert value(second, "rtmon_headline_speedup_ratio", baseline="baseline", optimized="optimized") > 0
    assert value(second, "rtmon_source_frames_total", stream="0", kind="sample") > 0
    assert value(second, "rtmon_info", version=__version__, model="fake") == 1
    # No GPU here: its figures are absent, not 0.
    assert not any(name.startswith("rtmon_gpu_") for name in second)


def test_gpu_figures_in_base_units() -> None:
    snap = dataclasses.replace(FakePipeline().snapshot(), gpu=GpuSample("NVIDIA GeForce RTX 5070", 41.0, 2351.2, 12227.0,
                                                                         47.0, 182.3, 1210.0))  # fmt: skip
    samples = {(s.name, s.labels.get("gpu")): s.value for f in families(snap) for s in f.samples}
    gpu = "NVIDIA GeForce RTX 5070"
    assert samples[("rtmon_gpu_utilization_ratio", gpu)] == pytest.approx(0.41)
    assert samples[("rtmon_gpu_memory_total_bytes", gpu)] == 12227.0 * MIB
    assert samples[("rtmon_gpu_temperature_celsius", gpu)] == 47.0
    assert samples[("rtmon_gpu_power_watts", gpu)] == 182.3


def test_stop_closes_the_port() -> None:
    exporter = start_exporter(PrometheusSettings(listen="127.0.0.1:0"), FakePipeline().snapshot)
    port = exporter.port
    exporter.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_a_user_error(busy_port: int) -> None:
    settings = PrometheusSettings(listen=f"127.0.0.1:{busy_port}")
    for attempt in (check_listen, lambda s: start_exporter(s, FakePipeline().snapshot)):
        with pytest.raises(UserError, match=f"prometheus: cannot listen on 127.0.0.1:{busy_port}"):
            attempt(settings)


@pytest.mark.parametrize(
    ("listen", "fragment"),
    [
        ("127.0.0.1:{busy}", "cannot listen on 127.0.0.1:{busy}"),
        ("192.0.2.1:9464", "cannot listen on 192.0.2.1:9464"),  # TEST-NET: not an address of this machine
        ("metrics", "is not [ADDR:]PORT"),
    ],
)
def test_bad_prometheus_input_on_the_command_line_is_one_line_and_exit_2(listen: str, fragment: str, busy_port: int) -> None:
    listen, fragment = listen.format(busy=busy_port), fragment.format(busy=busy_port)
    result = subprocess.run([sys.executable, "-m", "rtmon", "--prometheus", listen], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "YOLO_OFFLINE": "1"})  # fmt: skip
    assert_one_line_error(result, "prometheus: ", fragment)
