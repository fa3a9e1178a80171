"""The real `rtmon` command end to end: bench, record, doctor, and every bad input's one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from tests.cli_helpers import assert_one_line_error, run_rtmon

BENCH_KEYS = {"name", "fps", "latency_ms", "stages_ms", "gpu_mem_mib", "speedup_vs_baseline"}


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory, rtmon_env):
    out = tmp_path_factory.mktemp("bench")
    result = run_rtmon(["bench", "--engines", "baseline,ort-cpu", "--source", "sample", "--frames", "64",
                        "--warmup", "3", "--min-duration", "0", "--set", "bench.max_duration_s=8",
                        "--set", "bench.timing_probe=0", "--set", "bench.reference_rounds=4",
                        "--set", "bench.reference_processes=2", "--out", str(out)],
                       rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_bench_writes_the_four_outputs_with_the_schema(bench_report):
    out, result = bench_report
    for name in ("bench.json", "bench.csv", "bench.md", "latency_cdf.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "bench.json").read_text())
    assert {"device", "model", "source", "frames", "created", "engines", "scenario"} <= report.keys()
    assert report["frames"] == 64 and report["source"]["uri"] == "sample" and report["scenario"] == "single-stream"
    software = report["software"]  # the code that measured: this checkout's commit, the runtimes' versions
    assert len(software["commit"]) == 40 and software["packages"]["torch"] and software["packages"]["ultralytics"]
    assert f"commit {software['commit'][:12]}" in (out / "bench.md").read_text()
    names = [e["name"] for e in report["engines"]]
    assert names == ["torch-fp32", "ort-cpu"]
    for engine in report["engines"]:
        assert engine.keys() >= BENCH_KEYS
        assert {"mean", "p50", "p90", "p95", "p99", "std", "max", "count"} <= set(engine["latency_ms"])
        assert set(engine["stages_ms"]) == {"handover", "preprocess", "inference", "postprocess"}
        assert engine["stages_ms"]["handover"] > 0  # the frame's way to the engine's process and back
        assert engine["fps_x_latency"]["value"] == pytest.approx(1.0, abs=0.03)  # no time lost between frames
        assert engine["gpu_mem_mib"] is None  # no GPU here: unknown, never 0
        assert set(engine["gpu_mem"]) == {"process_mib", "context_mib", "engine_mib", "allocator_peak_mib",
                                          "allocator_reserved_mib"}
        lat = engine["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["count"] >= 64 and engine["valid"] is False  # under 1,024 frames: not VALID, and it says why
        assert engine["validity"] and "< 1024" in engine["validity"][0]
        assert engine["early_stopping_p90"]["estimate_ms"] >= lat["p90"]
    assert report["engines"][0]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert "torch-fp32" in result.stdout and "ort-cpu" in result.stdout


def test_bench_runs_plain_ultralytics_beside_the_engines_and_checks_the_yardstick(bench_report):
    """The reference: a plain subprocess running ultralytics' predict on the same frames; the
    yardstick check compares the baseline with it (its verdict on a loaded 2-core machine is
    not asserted: speed is measured, not asserted)."""
    report = json.loads((bench_report[0] / "bench.json").read_text())
    (ref,) = report["reference"]  # no ONNX Runtime CUDA here: the baseline's reference only
    assert ref["for"] == "torch-fp32" and ref["frames"] >= 64 and ref["fps"] > 0
    # reference, baseline, reference, ..., reference in each of two pairs of fresh processes (more
    # pairs while it is not yet stable): two baseline segments each, each between two of the script's
    baseline = report["engines"][0]
    pairs = baseline["processes"]
    assert pairs >= 2 and len(baseline["segments"]) == 2 * pairs and len(ref["runs"]) == len(baseline["segments"]) + pairs
    assert [s["process"] for s in baseline["segments"]] == [k for k in range(pairs) for _ in range(2)]
    assert [r["process"] for r in ref["runs"]] == [k for k in range(pairs) for _ in range(3)] and ref["processes"] == pairs
    # each side's minor page faults per frame, read from /proc between segments
    assert all(s["faults_per_frame"] >= 0 for s in baseline["segments"]) and baseline["faults_per_frame"] >= 0
    assert all(r["faults_per_frame"] >= 0 for r in ref["runs"]) and ref["faults_per_frame"] >= 0
    assert sum(s["frames"] for s in baseline["segments"]) == baseline["frames"] >= 64
    assert {"p50", "p95", "p99", "mean"} <= set(ref["latency_ms"])
    yard = report["yardstick"]
    assert {"pass", "baseline_vs_reference"} <= yard.keys() and isinstance(yard["pass"], bool)
    check = yard["baseline_vs_reference"]
    assert check["engine"] == "torch-fp32"
    assert check["fps_ratio"] == pytest.approx(report["engines"][0]["fps"] / ref["fps"])
    decided = check["paired"] or check  # round by round where the two alternated
    assert check["judged_on"] == ("rounds" if check["paired"] else "whole run")
    assert check["pass"] == (abs(decided["fps_ratio"] - 1) <= 0.03 and abs(decided["p50_ratio"] - 1) <= 0.03)
    assert len(check["rounds"]) == len(baseline["segments"]) and all(r["fps_ratio"] > 0 for r in check["rounds"])
    assert check["paired"]["processes"] == pairs and [e["process"] for e in check["paired"]["per_process"]] == \
        list(range(pairs))
    for engine in report["engines"]:
        assert engine["speedup_vs_reference"] == pytest.approx(engine["fps"] / ref["fps"])
        legs = engine["handover_legs_ms"]  # the hand-over's two directions add up to it
        assert legs["to_engine"] + legs["to_main"] == pytest.approx(engine["stages_ms"]["handover"], rel=1e-6)
    # stage by stage beside the script: ultralytics' own stage times on both sides, and the rest
    stages = check["stages_ms"]
    assert set(stages) == {"preprocess", "inference", "postprocess", "outside", "handover", "frame"}
    assert stages["frame"]["reference"] == pytest.approx(ref["latency_ms"]["mean"])
    assert stages["handover"]["reference"] == 0.0 and stages["inference"]["reference"] > 0
    assert sum(stages[k]["engine"] for k in ("preprocess", "inference", "postprocess", "outside", "handover")) == \
        pytest.approx(stages["frame"]["engine"])
    assert ref["stages_ms"]["inference"] == pytest.approx(stages["inference"]["reference"])
    # each side's segment edges: the first, second and last timed frames against the segment's median
    assert len(ref["segment_latencies_ms"]) == len(ref["runs"])
    edges = check["edges"]
    assert edges["engine"]["segments"] == len(baseline["segments"]) and edges["reference"]["segments"] == len(ref["runs"])
    text = (bench_report[0] / "bench.md").read_text()
    assert "Stage by stage (mean ms per frame)" in text
    assert "A segment's first, second and last timed frames" in text and "Rounds: 2 pairs of fresh processes" in text
    assert "Pair by pair: each pair is a fresh engine process and a fresh plain-script process" in text
    assert "## Yardstick" in text and "plain ultralytics predict (PyTorch FP32)" in text
    assert ("Yardstick check: **PASS**" in text) == yard["pass"]
    # a FAIL is a warning at the top; a PASS may carry one too, when its interval is not decisive
    assert ("> **Warning** — yardstick: torch-fp32 is not ultralytics as users run it" in text) == (not yard["pass"])


def test_bench_markdown_has_the_brief_layout(bench_report):
    text = (bench_report[0] / "bench.md").read_text()
    assert ("| | plain ultralytics script | baseline (`torch-fp32`) | optimized (`ort-cpu`) | optimized vs baseline "
            "| optimized vs plain script |") in text
    for row in ("| FPS |", "| P50 latency |", "| P95 latency |", "| P99 latency |", "| GPU memory (NVML, process) |"):
        assert row in text
    assert "| engine | hand-over | to the engine | back | preprocess | inference | postprocess |" in text


def test_a_stopped_bench_ends_its_engine_processes_frees_their_memory_and_writes_nothing(tmp_path, rtmon_env):
    """SIGTERM (what `timeout` and service managers send) mid-run: exit 130 with one line, no
    report, no engine process left, and nothing the resource tracker has to clean up after it."""
    import signal
    import time

    import psutil

    from tests.cli_helpers import rtmon_command

    out = tmp_path / "bench"
    cmd, env = rtmon_command(["bench", "--engines", "null", "--frames", "1000000", "--min-duration", "60",
                              "--no-reference", "--out", str(out)], rtmon_env)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until its engine process runs
            children = psutil.Process(proc.pid).children(recursive=True)
            if any("rtmon.runner" in " ".join(c.cmdline()) or "multiprocessing" in " ".join(c.cmdline())
                   for c in children if c.is_running()):
                break
            time.sleep(0.2)
        time.sleep(2.0)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "leaked" not in stderr, stderr[-2000:]  # the ring and the mailbox were closed, not left to the tracker
    assert not out.exists()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_bench_without_reference_says_the_yardstick_was_not_checked(tmp_path, rtmon_env):
    out = tmp_path / "noref"
    result = run_rtmon(["bench", "--engines", "null", "--frames", "64", "--warmup", "3", "--min-duration", "0",
                        "--set", "bench.max_duration_s=2", "--set", "bench.timing_probe=0", "--no-reference",
                        "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["reference"] == [] and report["yardstick"]["pass"] is None
    (null,) = report["engines"]
    assert null["role"] == "probe" and null["frames"] >= 64
    assert null["latency_ms"]["mean"] == pytest.approx(null["stages_ms"]["handover"], rel=0.05)


def test_a_short_soak_writes_its_report_and_logs_as_it_goes(tmp_path, rtmon_env):
    """`--scenario soak` end to end on the CPU (seconds instead of minutes): both phases, the
    report's three files, and, when the output is not a terminal, a line when each phase has loaded."""
    out = tmp_path / "soak"
    result = run_rtmon(["bench", "--scenario", "soak", "--engines", "null", "--source", "sample",
                        "--set", "bench.soak_minutes=0.05", "--set", "bench.soak_streams=2",
                        "--set", "bench.soak_sample_s=0.5", "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "soak.json").read_text())
    assert [p["phase"] for p in report["phases"]] == ["record", "streams"]
    assert report["phases"][1]["sources"] == 2 and len(report["phases"][0]["samples"]) >= 3
    assert isinstance(report["pass"], bool) and (out / "soak.png").stat().st_size > 0
    printed = result.stdout + result.stderr
    assert "soak record: loaded in" in printed and "soak streams: loaded in" in printed


def test_record_writes_a_playable_h264_split_screen(tmp_path, rtmon_env):
    out = tmp_path / "demo.mp4"
    result = run_rtmon(["record", "--source", "sample", "--frames", "30", "--left", "baseline", "--right", "ort-cpu",
                        "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    assert len(frames) == 30
    assert frames[-1].shape == (540, 1920, 3)
    assert not list(tmp_path.glob(".*partial*"))
    # each half carries its own dark overlay panel in its top-left corner
    last = frames[-1].astype(float)
    for x0 in (0, 960):
        panel, scene = last[5:40, x0 + 5 : x0 + 150], last[200:400, x0 + 200 : x0 + 700]
        assert panel.mean() < scene.mean()


def test_doctor_lists_engines_and_says_no_gpu(rtmon_env):
    result = run_rtmon(["doctor"], rtmon_env)
    assert result.returncode == 0
    assert "torch-fp32" in result.stdout and "ort-cpu" in result.stdout
    assert "GPU: n/a" in result.stdout


@pytest.fixture
def not_a_video(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(50_000))
    return path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["bench", "--source", "/nonexistent/clip.mp4"], ["source:", "no such file"]),
        (["bench", "--source", "{corrupt}"], ["source:"]),
        (["bench", "--source", "9"], ["camera 9 does not open"]),
        (["bench", "--engines", "baseline,warp-drive"], ["unknown engine 'warp-drive'"]),
        (["bench", "--engines", "trt"], ["trt is not available", "pip install"]),
        (["bench", "--model", "/nonexistent/model.pt"], ["model:", "no such file"]),
        (["bench", "--model", "{notamodel}"], ["model:", "not a model"]),
        (["bench", "--set", "model.imgsz=33"], ["model.imgsz:", "multiple of 32"]),
        (["bench", "--frames", "0"], ["bench.frames:"]),
        (["bench", "--out", "{unwritable}"], ["out: cannot write"]),
        (["record", "--source", "{corrupt}", "--frames", "5"], ["source:"]),
        (["record", "--out", "{tmp}/video.avi", "--frames", "5"], ["out:", ".mp4"]),
        (["bench", "--bogus-option"], ["No such option"]),
        (["bench", "--scenario", "marathon"], ["bench.scenario:"]),
        (["bench", "--scenario", "offline", "--batches", "0,2"], ["bench.batches:", "between 1 and 256"]),
        (["bench", "--batches", "a,b"], ["--batches:", "separated by commas"]),
        (["bench", "--strict", "--frames", "100"], ["--strict:", "at least 1024"]),
        (["bench", "--source", "sample", "--source", "/nonexistent/cam2.mp4"], ["source:", "cam2.mp4", "no such file"]),
        (["record", "--source", "sample", "--source", "9", "--frames", "5"], ["camera 9 does not open"]),
        (["record", "--baseline-streams", "3", "--frames", "5"], ["--baseline-streams:", "no stream 3"]),
        (["record", "--left", "ort-cpu", "--right", "ort-cpu", "--frames", "5"], ["same engine"]),
        (["bench", "--concurrent", "0"], ["--concurrent:"]),
    ],
)
def test_bad_input_gives_one_line_error_and_leaves_nothing(args, fragments, tmp_path, not_a_video, rtmon_env):
    (tmp_path / "notamodel.pt").write_text("this is not a model")
    (tmp_path / "afile").write_text("x")
    subs = {"{corrupt}": str(not_a_video), "{notamodel}": str(tmp_path / "notamodel.pt"),
            "{unwritable}": str(tmp_path / "afile" / "out"), "{tmp}": str(tmp_path)}
    args = [subs.get(a, a).replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "bench" and "--out" not in args:
        args += ["--out", str(tmp_path / "report")]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_rtmon(args, rtmon_env, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before] == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--config", "/nonexistent/rtmon.toml", "doctor"], "config: /nonexistent/rtmon.toml: no such file"),
        (["--mqtt", "foo://broker"], "mqtt: unknown scheme 'foo'"),
        (["--engines", "baseline,warp-drive"], "unknown engine 'warp-drive'"),
    ],
)
def test_top_level_bad_input(argv, fragment):
    result = subprocess.run([sys.executable, "-m", "rtmon", *argv], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    assert_one_line_error(result, fragment)


def test_offline_scenario_sweeps_batches(tmp_path, rtmon_env):
    out = tmp_path / "offline"
    result = run_rtmon(["bench", "--scenario", "offline", "--engines", "ort-cpu", "--batches", "1,2", "--frames", "12",
                        "--warmup", "2", "--no-reference", "--out", str(out)], rtmon_env)  # the reference: test_bench_*
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    (engine,) = report["engines"]
    assert report["scenario"] == "offline" and (out / "offline.png").stat().st_size > 0
    assert [row["batch"] for row in engine["sweep"]] == [1, 2]
    assert engine["sweep"][0]["fps"] > 0
    assert engine["sweep"][1]["fps"] is None and "at most 1" in engine["sweep"][1]["note"]  # ort-cpu takes one frame
    assert engine["batch"] == 1 and engine["fps"] == engine["sweep"][0]["fps"]


def test_multi_stream_capacity_search(tmp_path, rtmon_env):
    out = tmp_path / "multi"
    result = run_rtmon(["bench", "--scenario", "multi-stream", "--engines", "ort-cpu", "--camera-fps", "1",
                        "--max-streams", "3", "--set", "bench.trial_s=3", "--set", "bench.trial_warmup_s=0.5",
                        "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    (engine,) = report["engines"]
    assert report["scenario"] == "multi-stream" and report["camera_fps"] == 1
    assert 1 <= engine["max_streams"] <= 3
    assert {"streams", "p99_ms", "drop_pct"} <= engine["curve"][0].keys()
    passed = [t["streams"] for t in engine["curve"] if t["passed"]]
    assert max(passed) == engine["max_streams"]
    assert report["decoding"]["rows"][0]["fps"] > 0 and report["decoding"]["verdict"]
    assert (out / "capacity.png").stat().st_size > 0


def test_record_three_sources_as_a_mosaic(tmp_path, rtmon_env):
    out = tmp_path / "mosaic.mp4"
    result = run_rtmon(["record", "--source", "sample", "--source", "sample", "--source", "sample", "--frames", "20",
                        "--left", "baseline", "--right", "ort-cpu", "--baseline-streams", "0", "--pace", "realtime",
                        "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (1080, 1920, 3)  # 2×2 tiles of 960×540
    figures = json.loads(out.with_suffix(".json").read_text())
    assert [s["stream"] for s in figures["streams"]] == [0, 1, 2]
    assert set(figures["streams"][0]["engines"]) == {"torch-fp32", "ort-cpu"}
    assert set(figures["streams"][1]["engines"]) == {"ort-cpu"}  # the baseline takes stream 0 only
    assert all(s["engines"]["ort-cpu"]["processed"] > 0 for s in figures["streams"])


def test_concurrent_measures_each_engine_alone_and_together(tmp_path, rtmon_env):
    out = tmp_path / "concurrent"
    result = run_rtmon(["bench", "--concurrent", "2", "--engines", "baseline,ort-cpu", "--set",
                        "bench.concurrent_warmup_s=1", "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "concurrent.json").read_text())
    assert {"gpu", "created"} <= report.keys() | report["device"].keys()
    for pace in ("realtime", "max"):
        engines = report["paces"][pace]["engines"]
        assert [(e["name"], e["role"]) for e in engines] == [("torch-fp32", "baseline"), ("ort-cpu", "optimized")]
        for e in engines:
            for phase in ("alone", "together"):
                assert {"fps", "capacity_fps", "p95_ms", "p99_ms", "gpu_mem_mib"} <= e[phase].keys()
                assert e[phase]["capacity_fps"] > 0
    assert set(report["checks"]) == {"realtime", "max"}
    assert "## Checks" in (out / "concurrent.md").read_text()
