"""Shared fixtures and helpers. Tests run offline on the CPU; GPU tests are marked `gpu` and
skipped here. Helpers are imported by name: `from conftest import eventually`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from mqtt_broker import Broker  # imported by the fixtures: the GPU machine's tests run without aiomqtt

T = TypeVar("T")

os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_VERBOSE", "False")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One sample-clip cache for the whole session (generating the clip takes a while)."""
    shared = os.environ.get("RTMON_TEST_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("rtmon-cache")


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory) -> Path:
    """One engines/ folder per session, so the ONNX export happens once."""
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def rtmon_env(cache_dir, engines_dir) -> dict[str, str]:
    """Environment and --set options for running the real `rtmon` command in tests."""
    return {
        "sets": [f"paths.cache_dir={cache_dir}", f"paths.engines_dir={engines_dir}"],
        "env": {**os.environ, "YOLO_OFFLINE": "1"},
    }


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory):
    """A throw-away CA with server and client certificates, for the TLS listeners of `broker`."""
    from mqtt_broker import make_certs, missing_tools

    if missing_tools():
        pytest.skip(missing_tools())
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path: Path, certs) -> Iterator[Broker]:
    """A real mosquitto, configured but not started (`broker.start()`); stopped after the test."""
    from mqtt_broker import Broker

    b = Broker(tmp_path, certs)
    b.write_config()
    yield b
    b.stop()


def eventually(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05, what: str = "") -> T:
    """Wait until something another thread or process does has happened, instead of sleeping a
    guessed time: call `predicate()` every `interval` seconds until it returns a truthy value,
    and return that value. After `timeout` seconds, raise AssertionError saying what was awaited
    (`what`, else the predicate's name) and the last value it returned. The predicate is always
    called at least once, and once more at the deadline, so a slow machine fails only when the
    condition really did not hold in time.

        publisher.start()
        eventually(lambda: publisher.connected, timeout=5, what="the publisher connects")
        config = eventually(lambda: config_on_broker(port))  # the predicate's value is returned
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {name}; the last value was {last!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
