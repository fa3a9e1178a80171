from __future__ import annotations

import numpy as np
import pytest

from rtmon.core import Detections, Frame, Result, StageTimes
from rtmon.metrics import EngineMetrics, LatencyStats


def _result(t_capture: float, t_done: float, stages=(1.0, 2.0, 3.0), n_boxes: int = 2) -> Result:
    frame = Frame(0, np.zeros((2, 2, 3), np.uint8), t_capture)
    det = Detections(np.zeros((n_boxes, 4)), np.ones(n_boxes), np.arange(n_boxes) % 2)
    return Result("e", frame, det, StageTimes(*stages), t_done)


def test_percentiles_match_numpy_on_known_data():
    values = np.random.default_rng(0).lognormal(1.0, 0.5, 5000)
    stats = LatencyStats.of(values)
    assert stats.mean == pytest.approx(values.mean())
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert getattr(stats, name) == pytest.approx(np.percentile(values, q))
    assert LatencyStats.of(np.array([])) is None


def test_record_accumulates_latency_stages_fps_and_skips():
    m = EngineMetrics("e")
    # 101 frames done 10 ms apart, each with 5 ms latency
    for i in range(101):
        t = 100.0 + i * 0.01
        m.record(_result(t - 0.005, t), skipped=1 if i % 10 == 0 else 0)
    snap = m.snapshot(now=101.0)
    assert snap.processed == 101 and snap.skipped == 11
    assert snap.fps_overall == pytest.approx(100.0)
    assert snap.fps == pytest.approx(100.0)
    assert snap.latency.mean == pytest.approx(5.0)
    assert snap.stages_ms == pytest.approx({"preprocess": 1.0, "inference": 2.0, "postprocess": 3.0})
    assert snap.class_counts == {0: 1, 1: 1}


def test_stalled_engine_reports_zero_fps_and_unknown_is_none():
    m = EngineMetrics("e")
    assert m.snapshot(now=0.0).fps is None and m.snapshot(now=0.0).latency is None
    for i in range(5):
        m.record(_result(i * 0.1 - 0.001, i * 0.1))
    assert m.snapshot(now=10.0).fps == 0.0


def test_memory_is_bounded_in_live_mode():
    m = EngineMetrics("e", window=100)
    for i in range(10_000):
        m.record(_result(i * 0.001, i * 0.001 + 0.002))
    assert len(m.latencies()) == 100
    assert len(m.snapshot().fps_history) <= m.history_len
