"""`rtmon eval`: mAP of the baseline and ort-cpu on the sample, their agreement, eval.json, and
one-line refusals for sources it cannot evaluate."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from rtmon.config import load_settings
from rtmon.core import Detections
from rtmon.errors import UserError
from rtmon.evaluate import agreement_rate, coco_map, run_eval
from rtmon.models import ModelRef, resolve_model
from rtmon.sources import SourceSpec, resolve_source

# 60 of the sample's 600 frames keep the two CPU engines to about 20 s on a slow 2-core machine.
# On these frames the demo detector scores mAP50 ≈ 0.97, mAP50-95 ≈ 0.86 (ultralytics val on
# the full clip's rendered frames: 0.954 / 0.850), so the targets hold with room.
FRAMES = 60


@pytest.fixture(scope="module")
def evaluated(cache_dir, engines_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir), "paths.cache_dir": str(cache_dir)})
    model = resolve_model("demo", engines_dir)
    spec = resolve_source("sample", cache_dir)
    console = Console(file=io.StringIO(), width=140)
    report = run_eval(settings, model, spec, [["torch-fp32"], ["ort-cpu"]], out, console, FRAMES)
    return report, out, console.file.getvalue()


def _engine(report: dict, name: str) -> dict:
    return next(e for e in report["engines"] if e["name"] == name)


def test_eval_json_has_the_documented_schema(evaluated):
    report, out, printed = evaluated
    written = json.loads((out / "eval.json").read_text())
    assert written == report
    assert {"created", "model", "source", "frames", "conf", "engines"} <= written.keys()
    assert written["frames"] == FRAMES and written["conf"] == 0.001 and written["source"]["uri"] == "sample"
    assert written["model"]["kind"] == "demo"
    assert [e["name"] for e in written["engines"]] == ["torch-fp32", "ort-cpu"]
    for e in written["engines"]:
        assert set(e) == {"name", "mAP50", "mAP50-95", "agreement_vs_baseline", "agreement_vs_baseline_iou50"}
        assert 0 <= e["mAP50-95"] <= e["mAP50"] <= 1
    assert _engine(written, "torch-fp32")["agreement_vs_baseline"] is None
    assert not list(out.glob(".*partial")), "no temporary file left behind"
    assert "torch-fp32" in printed and "ort-cpu" in printed and "mAP50-95" in printed


def test_baseline_meets_the_accuracy_targets_on_the_sample(evaluated):
    base = _engine(evaluated[0], "torch-fp32")
    assert base["mAP50"] >= 0.90
    assert base["mAP50-95"] >= 0.70


def test_ort_cpu_is_as_accurate_as_the_baseline(evaluated):
    report = evaluated[0]
    base, ort = _engine(report, "torch-fp32"), _engine(report, "ort-cpu")
    assert abs(ort["mAP50-95"] - base["mAP50-95"]) <= 0.005
    assert ort["agreement_vs_baseline"] >= 0.99


def test_agreement_is_null_without_the_baseline_in_the_run(cache_dir, engines_dir, tmp_path):
    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir)})
    model = resolve_model("demo", engines_dir)
    spec = resolve_source("sample", cache_dir)
    report = run_eval(settings, model, spec, [["ort-cpu"]], tmp_path, Console(file=io.StringIO()), 3)
    assert report["engines"][0]["agreement_vs_baseline"] is None


def test_optimized_falls_back_to_the_next_engine_in_eval_too_with_its_notice(cache_dir, engines_dir, tmp_path):
    """As in `rtmon bench` and the live view (e.g. trt-rtx on a GPU TensorRT-RTX does not run on):
    the row is the engine that ran, and the report and the console say why."""
    from tests.fake_engines import make

    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir)})
    model = resolve_model("demo", engines_dir)
    spec = resolve_source("sample", cache_dir)
    console = Console(file=io.StringIO(), width=200)
    report = run_eval(settings, model, spec, [["fail-load", "echo"]], tmp_path, console, 3, factory=make)
    assert [e["name"] for e in report["engines"]] == ["echo"]
    (note,) = report["notes"]
    assert note.startswith("echo: fail-load did not load (load failed: RuntimeError: weights are gone); using echo")
    assert "fail-load did not load" in console.file.getvalue()


def test_an_unlabeled_source_is_a_one_line_error_from_the_cli(tmp_path, rtmon_env):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    sets = [arg for s in rtmon_env["sets"] for arg in ("--set", s)]
    run = subprocess.run(
        [sys.executable, "-m", "rtmon", "eval", "--source", str(folder), "--model", "demo", "--engines", "baseline",
         "--out", str(tmp_path / "out"), *sets],
        capture_output=True, text=True, env=rtmon_env["env"], timeout=300,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: eval: ") and "has no ground-truth labels" in lines[0]
    assert "--source sample" in lines[0]
    assert not (tmp_path / "out" / "eval.json").exists()


def test_labels_that_do_not_match_the_video_are_a_one_line_error(cache_dir, tmp_path):
    sample = resolve_source("sample", cache_dir)
    labels = tmp_path / "other.labels.json"
    labels.write_text(json.dumps({"size": [640, 480], "labels": [[] for _ in range(10)]}))
    spec = SourceSpec(sample.target, "file", sample.target, "clip", labels)
    model = ModelRef(Path("never-loaded.pt"), "m", "user", "0" * 64)
    with pytest.raises(UserError) as err:
        run_eval(load_settings(), model, spec, [["ort-cpu"]], tmp_path / "out", Console(file=io.StringIO()), None)
    message = str(err.value)
    assert message.startswith("labels: other.labels.json describes 10 frames of 640x480 but the video has 600 frames")
    assert "\n" not in message
    assert not (tmp_path / "out" / "eval.json").exists()


def test_a_model_for_other_classes_is_refused(cache_dir, tmp_path):
    spec = resolve_source("sample", cache_dir)
    model = ModelRef(Path("never-loaded.pt"), "yolo11n.pt", "official", "0" * 64, {0: "person", 1: "bicycle"})
    with pytest.raises(UserError, match=r"yolo11n\.pt detects 2 classes \(person, bicycle\) but .* --model demo"):
        run_eval(load_settings(), model, spec, [["ort-cpu"]], tmp_path, Console(file=io.StringIO()), None)


def test_frames_must_be_positive(cache_dir, tmp_path):
    spec = resolve_source("sample", cache_dir)
    model = ModelRef(Path("never-loaded.pt"), "m", "user", "0" * 64)
    with pytest.raises(UserError, match="--frames must be at least 1"):
        run_eval(load_settings(), model, spec, [["ort-cpu"]], tmp_path, Console(file=io.StringIO()), 0)


NAMES = {0: "disc", 1: "square"}


def _dets(rows: list[list[float]]) -> Detections:
    """Rows of x1, y1, x2, y2, confidence, class id."""
    return Detections.from_array(np.array(rows, np.float32).reshape(-1, 6))


def test_exclusive_ground_truth_boxes_match_the_same_continuous_box_exactly():
    # A label [10, 20) covers pixels 10…19: the continuous box 10…20, ten pixels wide.
    truth = [np.array([[0, 10, 10, 20, 20]], np.float32)]
    assert coco_map(truth, [_dets([[10, 10, 20, 20, 0.9, 0]])], NAMES) == (1.0, 1.0)
    # Reading x2 as inclusive (width + 1) costs IoU 100/121 ≈ 0.83: below 1.0 at the strict thresholds.
    ap50, ap = coco_map(truth, [_dets([[10, 10, 21, 21, 0.9, 0]])], NAMES)
    assert ap50 == 1.0 and ap < 0.9


def test_map_punishes_wrong_classes_and_missed_frames():
    truth = [np.array([[0, 10, 10, 50, 50]], np.float32), np.array([[1, 100, 100, 160, 140]], np.float32)]
    found = [_dets([[10, 10, 50, 50, 0.9, 0]]), _dets([[100, 100, 160, 140, 0.5, 0]])]  # second: wrong class
    assert coco_map(truth, found, NAMES)[0] == pytest.approx(0.5)
    assert coco_map(truth, [Detections.empty(), Detections.empty()], NAMES) == (0.0, 0.0)


def test_agreement_counts_boxes_over_all_frames_not_a_mean_of_frames():
    box = [0, 0, 10, 10, 0.9, 0]
    far = [[20 * k, 50, 20 * k + 10, 60, 0.8, 0] for k in range(3)]
    reference = [_dets([box]), _dets(far)]
    other = [_dets([box]), _dets(far[:1])]
    assert agreement_rate(reference, other) == pytest.approx(2 / 4)  # the mean of frames would say 2/3
    assert agreement_rate([Detections.empty()], [Detections.empty()]) == 1.0
    assert agreement_rate([Detections.empty()], [_dets([box])]) == 0.0
