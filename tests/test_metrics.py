"""How rtmon computes its figures, on synthetic timestamps whose answers are known: one FPS, one
capacity, percentiles, the live window, the headline, and the benchmarks' stability and MLPerf
early-stopping rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rtmon.bench.harness import Measured, early_stopping_estimate, stability
from rtmon.core import Detections, Frame, Result, Role, StageTimes
from rtmon.metrics import (
    EngineMetrics,
    EngineSnapshot,
    LatencyStats,
    busy_seconds,
    capacity_fps,
    headline,
    throughput_fps,
)


def _result(t_capture: float, t_done: float, stages=(1.0, 2.0, 3.0), n_boxes: int = 2,
            t_handed: float | None = None) -> Result:
    frame = Frame(0, np.zeros((2, 2, 3), np.uint8), t_capture)
    det = Detections(np.zeros((n_boxes, 4)), np.ones(n_boxes), np.arange(n_boxes) % 2)
    handed = t_capture if t_handed is None else t_handed
    return Result("e", frame, det, StageTimes(*stages), t_done, handed, handed, t_done)


def test_percentiles_on_known_values():
    stats = LatencyStats.of(np.arange(1, 101, dtype=float))  # 1 … 100 ms
    assert stats.mean == 50.5 and stats.max == 100 and stats.count == 100
    # Linear interpolation between the closest ranks: q/100 × 99 positions past the first value.
    assert (stats.p50, stats.p90, stats.p95, stats.p99) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert LatencyStats.of([7.0]).p99 == 7.0
    assert LatencyStats.of(np.array([])) is None


def test_throughput_counts_the_frames_answered_in_the_stretch():
    assert throughput_fps(100, 10.0, 12.0) == 50.0
    assert throughput_fps(0, 10.0, 12.0) is None and throughput_fps(5, 3.0, 3.0) is None


def test_capacity_counts_overlapping_busy_time_once():
    # Three frames busy [0, 2], [1, 3] (overlapping) and [5, 6]: 4 busy seconds.
    begin, end = np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0])
    assert busy_seconds(begin, end) == 4.0
    assert capacity_fps(begin, end) == 0.75
    assert busy_seconds(np.array([1.0, 0.0]), np.array([1.5, 4.0])) == 4.0  # one inside another, any order
    assert capacity_fps(np.array([]), np.array([])) is None


def test_closed_loop_fps_times_mean_latency_is_one():
    """Back to back frames (each handed over when the last boxes arrived): FPS × mean = 1."""
    lat = np.array([0.010, 0.012, 0.008, 0.011])
    t_handed = np.concatenate(([0.0], np.cumsum(lat)[:-1]))
    t_received = t_handed + lat
    m = Measured(lat * 1e3, t_handed, t_handed, t_handed, t_received, t_received, np.zeros(4, int), np.zeros(4, int),
                 np.zeros((4, 4)))
    assert m.fps * m.latency_ms.mean() / 1e3 == pytest.approx(1.0)
    assert m.capacity_fps == pytest.approx(m.fps)  # always busy


def test_the_hand_over_legs_say_which_direction_makes_a_tail():
    n = 200
    t_handed = np.arange(n) * 0.010
    t_start = t_handed + 0.00005  # 0.05 ms to the engine
    t_start[7] += 0.004  # one frame 4 ms late into the engine
    t_done = t_start + 0.008
    t_received = t_done + 0.0001  # 0.1 ms back
    m = Measured((t_received - t_handed) * 1e3, t_handed, t_handed, t_start, t_done, t_received, np.zeros(n, int),
                 np.zeros(n, int), np.zeros((n, 4)))
    legs = m.handover_legs()
    assert legs["to_engine"] == pytest.approx(0.05 + 4.0 / n) and legs["to_main"] == pytest.approx(0.1)
    assert legs["to_engine_over_1ms"] == 1 and legs["to_main_over_1ms"] == 0
    assert legs["to_main_p99"] == pytest.approx(0.1) and legs["to_engine_p99"] < 1.0  # one frame in 200 is under 1%


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
    assert snap.capacity_fps == pytest.approx(1 / 0.005)  # busy 5 ms per frame
    assert snap.busy_pct == pytest.approx(25.25)  # all 101 frames × 5 ms inside the 2 s window
    assert snap.stages_ms == pytest.approx({"handover": 0.0, "preprocess": 1.0, "inference": 2.0, "postprocess": 3.0})
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


def _snap(name: str, role: Role, capacity: float | None, p95: float | None) -> EngineSnapshot:
    lat = None if p95 is None else LatencyStats(p95, p95, p95, p95)
    from rtmon.core import EngineState

    return EngineSnapshot(name, EngineState.RUNNING, "", 10, 0, None, None, lat, {}, (), (), {}, role=role,
                          capacity_fps=capacity)


def test_headline_is_the_ratio_of_the_figures_on_screen_and_says_slower_below_one():
    base, opt = _snap("torch-fp32", Role.BASELINE, 100.0, 20.0), _snap("fast", Role.OPTIMIZED, 450.0, 4.0)
    h = headline([base, opt])
    assert (h.speedup, h.p95_ratio) == (4.5, 5.0)
    assert "4.5" in h.text() and "faster" in h.text()
    slow = headline([base, _snap("slow", Role.OPTIMIZED, 80.0, 25.0)])
    assert slow.speedup == 0.8 and "slower" in slow.text() and "faster" not in slow.text()
    probe = headline([base, _snap("null", Role.PROBE, 1e5, 0.02)])
    assert probe is None  # the null engine measures rtmon, it is in no headline


def test_stability_needs_three_windows_within_ten_percent():
    def run(fps_per_window: list[float]) -> Measured:
        t, ends = 0.0, []
        for fps in fps_per_window:
            n = int(fps)
            ends.extend(t + (np.arange(n) + 0.5) / n)
            t += 1.0
        ends = np.array(ends)
        starts = ends - 0.001
        return Measured(np.full(len(ends), 1.0), starts, starts, starts, ends, ends, np.zeros(len(ends), int),
                        np.zeros(len(ends), int), np.zeros((len(ends), 4)))

    assert stability(run([100, 100, 100, 100, 100]), 1.0).stable
    wobbly = stability(run([100, 100, 100, 130, 100]), 1.0)
    assert not wobbly.stable and wobbly.spread_pct == pytest.approx(30.0, abs=1.0)


def test_early_stopping_discards_the_slowest_frames_by_mlperfs_binomial_rule():
    assert early_stopping_estimate(np.ones(63)) is None  # loadgen's minimum is 64 queries
    lat = np.arange(1, 1001, dtype=float)  # 1 … 1000 ms
    est = early_stopping_estimate(lat, 0.90, 0.99)
    # With 1000 frames, t = the largest count with P[Binomial(1000, 0.1) ≤ t] ≤ 1%: 78 (that
    # probability is 0.0097 at 78 and 0.0131 at 79, summed exactly); the estimate is the slowest
    # frame left once the 78 slowest are discarded.
    assert est["discarded"] == 78 and est["estimate_ms"] == 922.0
    assert est["estimate_ms"] >= np.percentile(lat, 90)


def _closed_loop_run(t0: float, frames: int, latency_s: float) -> Measured:
    """A closed loop of `frames` frames from `t0`, each answered `latency_s` after its hand-over."""
    handed = t0 + np.arange(frames) * latency_s
    done = handed + latency_s
    return Measured(np.full(frames, latency_s * 1e3), handed, handed, handed, done, done, np.zeros(frames, int),
                    np.zeros(frames, int), np.zeros((frames, 4)))


def test_segments_joined_count_their_own_time_and_none_of_the_gaps_between_them():
    """Single-stream's rounds: 100 frames at 10 ms, a 5 s reference segment, 100 frames at 20 ms:
    the joined stretch lasts 1 s + 2 s, so 200 / 3 FPS, and FPS × mean latency stays 1."""
    a, b = _closed_loop_run(100.0, 100, 0.010), _closed_loop_run(106.0, 100, 0.020)
    joined = Measured.joined([a, b])
    assert joined.frames == 200 and joined.wall_s == pytest.approx(3.0)
    assert joined.fps == pytest.approx(200 / 3.0)
    assert joined.fps * joined.latency_ms.mean() / 1e3 == pytest.approx(1.0)
    assert np.all(np.diff(joined.t_handed) > 0)  # one continuous stretch, in order
    assert Measured.joined([]).frames == 0 and Measured.joined([a]).wall_s == pytest.approx(a.wall_s)


def test_the_yardstick_pairs_each_engine_segment_with_the_reference_segments_around_it():
    from rtmon.bench.yardstick import rounds, yardstick

    # The machine slows down during the run; the engine is always 2% behind the script beside it.
    ref = {"name": "plain", "for": "torch-fp32", "fps": 100.0, "latency_ms": {"p50": 10.0},
           "runs": [{"fps": f, "p50_ms": 1e3 / f} for f in (120.0, 100.0, 80.0, 60.0)]}
    engine = {"name": "torch-fp32", "fps": 98.0, "latency_ms": {"p50": 10.2},
              "segments": [{"fps": 0.98 * f, "p50_ms": 1e3 / (0.98 * f)} for f in (110.0, 90.0, 70.0)]}
    paired = rounds(engine, ref)
    assert [r["reference_fps"] for r in paired] == [110.0, 90.0, 70.0]
    assert [r["fps_ratio"] for r in paired] == pytest.approx([0.98, 0.98, 0.98])
    assert [r["reference_p50_ms"] for r in paired] == pytest.approx([(1e3 / a + 1e3 / b) / 2 for a, b in
                                                                     ((120, 100), (100, 80), (80, 60))])
    check = yardstick([engine], [ref], "single-stream")["baseline_vs_reference"]
    assert check["pass"] and check["rounds"] == paired and check["judged_on"] == "rounds"
    assert check["paired"]["fps_ratio"] == pytest.approx(0.98) and check["paired"]["rounds"] == 3
    assert check["paired"]["fps_ci95"] == pytest.approx([0.98, 0.98])  # the same ratio every round: no doubt
    assert check["paired"]["decides"] == {"fps": "within", "p50": "within"}
    assert rounds({"segments": [{"fps": 1.0}]}, {"runs": [{"fps": 1.0}]}) == []  # not alternated: no pairs


def test_the_yardstick_is_judged_on_the_rounds_not_on_frames_pooled_from_a_drifting_machine():
    """A machine fast for the script's long segments and slow for the engine's: the whole run's
    ratios say 'slower', every round says 'the same' — and the other way round: an engine 5%
    behind in every round fails even when the pooled figures happen to agree."""
    from rtmon.bench.yardstick import yardstick

    ref = {"name": "plain", "for": "torch-fp32", "fps": 120.0, "latency_ms": {"p50": 8.0},
           "runs": [{"fps": 100.0, "p50_ms": 10.0}] * 4}
    same = {"name": "torch-fp32", "fps": 100.0, "latency_ms": {"p50": 10.0},
            "segments": [{"fps": 100.0, "p50_ms": 10.0}] * 3}
    check = yardstick([same], [ref], "single-stream")["baseline_vs_reference"]
    assert abs(check["fps_ratio"] - 1) > 0.03 and check["pass"]
    behind = dict(same, fps=120.0, latency_ms={"p50": 8.0}, segments=[{"fps": 95.0, "p50_ms": 10.5}] * 3)
    check = yardstick([behind], [ref], "single-stream")["baseline_vs_reference"]
    assert check["fps_ratio"] == pytest.approx(1.0) and not check["pass"]
    from rtmon.bench.report import warnings

    # Rounds that scatter ±20% around 1: the median passes, its interval says the machine cannot tell.
    noisy = dict(same, segments=[{"fps": f, "p50_ms": 1e3 / f} for f in (80.0, 120.0, 100.0, 85.0, 115.0)])
    ref5 = dict(ref, runs=[{"fps": 100.0, "p50_ms": 10.0}] * 6)
    yard = yardstick([noisy], [ref5], "single-stream")
    lo, hi = yard["baseline_vs_reference"]["paired"]["fps_ci95"]
    assert yard["pass"] and lo < 0.97 and hi > 1.03 and yard["baseline_vs_reference"]["paired"]["decides"]["fps"] is None
    said = warnings({"engines": [noisy], "reference": [], "yardstick": yard, "scenario": "offline"})
    assert any("not decisive" in w for w in said)  # its interval straddles 3%
    lone = dict(same, segments=[])  # not alternated: the whole run decides
    check = yardstick([lone], [ref], "single-stream")["baseline_vs_reference"]
    assert check["judged_on"] == "whole run" and check["paired"] is None and not check["pass"]


def test_rounds_stay_inside_their_pair_of_processes_and_the_interval_carries_the_spread_between_pairs():
    """Three pairs of processes: the engine even with its script in two, 6% ahead in the third,
    steady round by round within each. A bootstrap over rounds alone calls that decided (the
    median of the pooled rounds never moves); drawing the pairs first shows the run cannot tell."""
    from rtmon.bench.yardstick import decided, median_interval, paired, rounds

    shift = {0: 1.0, 1: 1.0, 2: 1.06}
    ref = {"runs": [{"fps": 100.0 * (p + 1), "p50_ms": 10.0 / (p + 1), "process": p} for p in range(3) for _ in range(11)]}
    jitter = np.linspace(-0.002, 0.002, 10)
    engine = {"segments": [{"fps": 100.0 * (p + 1) * (shift[p] + j), "p50_ms": 10.0 / (p + 1) / (shift[p] + j), "process": p}
                           for p in range(3) for j in jitter]}
    by_round = rounds(engine, ref)
    assert [r["reference_fps"] for r in by_round] == [100.0 * (p + 1) for p in range(3) for _ in range(10)]  # never across pairs
    pairs = paired(by_round)
    assert pairs["processes"] == 3 and pairs["rounds"] == 30
    assert [e["fps_ratio"] for e in pairs["per_process"]] == pytest.approx([1.0, 1.0, 1.06])
    assert decided(median_interval([r["fps_ratio"] for r in by_round])) == "within"  # rounds alone: no doubt
    lo, hi = pairs["fps_ci95"]
    assert lo < 1.0 < 1.03 < hi and decided(pairs["fps_ci95"]) is None  # pairs first: it cannot tell
    broken = dict(ref, runs=ref["runs"][:-1])  # the last pair has no closing reference segment
    assert rounds(engine, broken) == []


def test_bench_json_keeps_at_most_20000_latencies_evenly_spaced():
    from rtmon.bench.scenarios import STORED_LATENCIES, stored_latencies

    few = stored_latencies(np.arange(1000.0))
    assert few["latencies_every"] == 1 and len(few["latencies_ms"]) == 1000
    many = stored_latencies(np.arange(310_001.0))
    assert many["latencies_every"] == 16 and len(many["latencies_ms"]) <= STORED_LATENCIES
    assert many["latencies_ms"][:3] == [0.0, 16.0, 32.0]


def test_stage_percentiles_say_which_stage_makes_the_tail():
    m = _closed_loop_run(0.0, 100, 0.010)
    m.stages[:, 2] = 5.0
    m.stages[-1, 2] = 50.0  # one slow inference
    m.stages[:, 0] = np.linspace(0.1, 0.2, 100)
    p99 = m.stage_percentiles(99)
    assert p99["inference"] == pytest.approx(np.percentile(m.stages[:, 2], 99)) and p99["inference"] > 5.0
    assert p99["handover"] == pytest.approx(np.percentile(m.stages[:, 0], 99))
    assert Measured.joined([]).stage_percentiles(99) == dict.fromkeys(("handover", "preprocess", "inference",
                                                                       "postprocess"))


def test_the_check_is_undecided_while_an_interval_straddles_a_bound_and_decided_once_none_does():
    """`until_decided`'s question, on synthetic segments: a steady engine 1% behind its script is
    decided (within) after a few rounds; one whose rounds scatter ±10% around 0.97 is not."""
    from types import SimpleNamespace

    from rtmon.bench.yardstick import undecided

    def segment(fps: float, n: int = 50):  # n frames at 1/fps each, back to back
        lat = np.full(n, 1e3 / fps)
        return SimpleNamespace(fps=fps, latency_ms=lat, frames=n)

    def script_run(fps: float, n: int = 50):
        return {"latencies_ms": [1e3 / fps] * n, "wall_s": n / fps}

    speeds = [100.0 + 2 * k for k in range(13)]  # the machine speeds up, slowly, during the run
    steady = [segment(0.99 * (a + b) / 2) for a, b in itertools.pairwise(speeds)]  # 1% behind the script around it
    runs = [script_run(f) for f in speeds]
    assert not undecided(steady, [0] * len(steady), runs)
    assert undecided(steady[:1], [0], runs[:1])  # no round has a script segment after it yet
    rng = np.random.default_rng(1)
    scattered = [segment((a + b) / 2 * (0.97 + rng.uniform(-0.1, 0.1))) for a, b in itertools.pairwise(speeds)]
    assert undecided(scattered, [0] * len(scattered), runs)


def test_segment_edges_say_how_each_segments_first_and_last_frames_compare_with_its_median():
    from rtmon.bench.yardstick import engine_segments, segment_edges

    segments = [[12.0, 11.0, 10.0, 10.0, 10.0, 10.5], [14.0, 10.0, 10.0, 10.0, 10.0, 10.0], [1.0, 2.0]]  # medians 10.25, 10
    edges = segment_edges(segments)  # the 2-frame segment is too short to say anything
    assert edges == {"first_ms": pytest.approx(2.875), "second_ms": pytest.approx(0.375), "last_ms": pytest.approx(0.125),
                     "segments": 2}
    assert segment_edges([[1.0]]) is None
    engine = {"latencies_ms": [1.0, 2.0, 3.0, 4.0, 5.0], "latencies_every": 1, "segments": [{"frames": 2}, {"frames": 3}]}
    assert engine_segments(engine) == [[1.0, 2.0], [3.0, 4.0, 5.0]]
    assert engine_segments({**engine, "latencies_every": 2}) == []  # not every frame stored: no segments
