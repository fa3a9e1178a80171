"""Shared fixtures. Tests run offline on the CPU; GPU tests are marked `gpu` and skipped here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
