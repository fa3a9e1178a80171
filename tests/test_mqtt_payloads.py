"""The schema-v2 payloads (rtmon/mqtt/payloads.py), without a broker: unknown is null, the docs'
examples are what the builders produce."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mqtt_samples import sample_discovery, sample_snapshot, sample_stream

from rtmon.core import GpuMemory
from rtmon.mqtt.payloads import detections_payload, engine_payload, gpu_payload, status_payload, stream_payload

DOC = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"


def test_builders_publish_unknown_as_null_never_zero() -> None:
    snap = sample_snapshot(gpu=False)
    starting = engine_payload(snap, snap.engine("ort-cpu"))
    assert starting["fps"] is None and starting["latency_ms"] is None and starting["backend"] is None
    assert starting["gpu_mem_mib"] is None and starting["frames_processed"] == 0
    assert starting["capacity_fps"] is None and starting["busy_pct"] is None
    assert set(starting["gpu_mem"]) == set(GpuMemory().as_dict()) and not any(starting["gpu_mem"].values())
    assert set(gpu_payload(snap)) - {"schema", "ts"} and all(
        v is None for k, v in gpu_payload(snap).items() if k not in ("schema", "ts")
    )
    for payload in (starting, gpu_payload(snap)):
        assert payload["schema"] == 2 and payload["ts"] == snap.time
    assert (status_payload(True), status_payload(False)) == (b"online", b"offline")


def test_metrics_carry_role_capacity_memory_split_and_the_speedup_on_the_compared_engine() -> None:
    snap = sample_snapshot()
    optimized, baseline = engine_payload(snap, snap.engine("optimized")), engine_payload(snap, snap.engine("baseline"))
    assert (optimized["role"], baseline["role"]) == ("optimized", "baseline")
    assert optimized["capacity_fps"] == 212.4 and optimized["busy_pct"] == 27.5
    assert optimized["gpu_mem"]["engine_mib"] == 111.5 and optimized["gpu_mem_mib"] == 412.5
    assert optimized["speedup_vs_baseline"] == round(212.4 / 47.2, 3)
    assert baseline["speedup_vs_baseline"] is None
    assert engine_payload(snap, snap.engine("ort-cpu"))["speedup_vs_baseline"] is None


def test_detection_counts_use_class_names_when_known() -> None:
    snap = sample_snapshot()
    assert detections_payload(snap, snap.engine("optimized"))["counts"] == {"0": 3, "2": 1}
    named = detections_payload(snap, snap.engine("optimized"), {0: "person", 2: "car"})
    assert named["counts"] == {"person": 3, "car": 1}


def doc_examples() -> dict[str, dict | str]:
    """The first ```json (or ```text) block under each '#### `…/<kind>`' heading of docs/mqtt.md."""
    examples: dict[str, dict | str] = {}
    for section in DOC.read_text().split("\n#### ")[1:]:
        heading, _, body = section.partition("\n")
        block = re.search(r"```(json|text)\n(.*?)```", body, flags=re.S)
        if block:
            kind = heading.strip("` ").removeprefix("…/")
            examples[kind] = json.loads(block.group(2)) if block.group(1) == "json" else block.group(2).strip()
    return examples


def test_doc_examples_are_what_the_builders_produce() -> None:
    snap = sample_snapshot()
    expected = {
        "status": status_payload(True).decode(),
        "engines/<engine>/metrics": engine_payload(snap, snap.engine("optimized")),
        "streams/<stream>/metrics": stream_payload(snap, sample_stream()),
        "gpu": gpu_payload(snap),
        "engines/<engine>/detections": detections_payload(snap, snap.engine("optimized"), {0: "person", 2: "car"}),
    }
    examples = doc_examples()
    for kind, payload in expected.items():
        assert examples.get(kind) == payload, f"docs/mqtt.md example for {kind} should be:\n" + json.dumps(
            payload, indent=2
        )
    # The discovery example is abridged: the shared part whole, a few components as built.
    config, shown = sample_discovery(), examples["homeassistant/device/rtmon_<instance>/config"]
    assert {k: v for k, v in shown.items() if k != "cmps"} == {k: v for k, v in config.items() if k != "cmps"}
    assert shown["cmps"] and all(config["cmps"][cid] == c for cid, c in shown["cmps"].items())
