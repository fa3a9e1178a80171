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
    result = run_rtmon(["bench", "--engines", "baseline,ort-cpu", "--source", "sample", "--frames", "40",
                        "--warmup", "3", "--out", str(out)], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_bench_writes_the_four_outputs_with_the_schema(bench_report):
    out, result = bench_report
    for name in ("bench.json", "bench.csv", "bench.md", "latency.png", "timeline.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "bench.json").read_text())
    assert {"device", "model", "source", "frames", "created", "engines"} <= report.keys()
    assert report["frames"] == 40 and report["source"]["uri"] == "sample"
    names = [e["name"] for e in report["engines"]]
    assert names == ["torch-fp32", "ort-cpu"]
    for engine in report["engines"]:
        assert engine.keys() >= BENCH_KEYS
        assert set(engine["latency_ms"]) == {"mean", "p50", "p95", "p99"}
        assert set(engine["stages_ms"]) == {"preprocess", "inference", "postprocess"}
        assert engine["gpu_mem_mib"] is None  # no GPU here: unknown, never 0
        lat = engine["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert report["engines"][0]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert "torch-fp32" in result.stdout and "ort-cpu" in result.stdout


def test_bench_shows_ort_cpu_faster_than_the_baseline(bench_report):
    report = json.loads((bench_report[0] / "bench.json").read_text())
    ort = next(e for e in report["engines"] if e["name"] == "ort-cpu")
    assert ort["speedup_vs_baseline"] > 1.0, ort


def test_bench_markdown_has_the_brief_layout(bench_report):
    text = (bench_report[0] / "bench.md").read_text()
    assert "| | baseline (torch-fp32) | optimized (ort-cpu) | improvement |" in text
    for row in ("| FPS |", "| mean latency |", "| P95 latency |", "| P99 latency |", "| GPU memory |"):
        assert row in text


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
