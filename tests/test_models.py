"""Model resolution offline: the fallback to the demo detector, refusals that say why, and
a run from model resolution to detections with every network call blocked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import ultralytics.utils

from rtmon import models
from rtmon.errors import UserError
from rtmon.models import resolve_model


@pytest.fixture
def no_local_yolo11n(tmp_path, monkeypatch):
    """No yolo11n.pt in the working folder nor in ultralytics' weights folder (YOLO_OFFLINE is set)."""
    monkeypatch.chdir(tmp_path)
    settings = {**ultralytics.utils.SETTINGS, "weights_dir": str(tmp_path / "weights")}
    monkeypatch.setattr(ultralytics.utils, "SETTINGS", settings)


def test_auto_without_yolo11n_falls_back_to_the_demo_detector_with_a_notice(no_local_yolo11n, tmp_path):
    ref = resolve_model("auto", tmp_path / "engines")
    assert ref.kind == "demo" and ref.path == models.DEMO_WEIGHTS
    assert ref.notice == "yolo11n.pt is not available offline; using the rtmon demo detector"
    assert ref.class_names == {0: "disc", 1: "square", 2: "triangle", 3: "star", 4: "ring", 5: "cross"}


def test_auto_uses_yolo11n_when_it_is_on_disk(no_local_yolo11n, tmp_path):
    shutil.copy(models.DEMO_WEIGHTS, tmp_path / "yolo11n.pt")  # any valid weights file will do
    ref = resolve_model("auto", tmp_path / "engines")
    assert (ref.kind, ref.label, ref.notice) == ("official", "yolo11n.pt", "")


def _demo_copy(tmp_path, monkeypatch, checksum: str | None) -> Path:
    weights = tmp_path / "demo.pt"
    shutil.copy(models.DEMO_WEIGHTS, weights)
    sha_file = tmp_path / "demo.pt.sha256"
    if checksum is not None:
        sha_file.write_text(f"{checksum}  demo.pt\n")
    monkeypatch.setattr(models, "DEMO_WEIGHTS", weights)
    monkeypatch.setattr(models, "DEMO_SHA256", sha_file)
    return weights


def test_demo_weights_with_a_wrong_sha256_are_refused_and_the_error_says_why(tmp_path, monkeypatch):
    _demo_copy(tmp_path, monkeypatch, "0" * 64)
    with pytest.raises(UserError) as err:
        resolve_model("demo", tmp_path / "engines")
    message = str(err.value)
    assert "fails its sha256 check" in message and "expected 000000000000" in message
    assert models.sha256_of(models.DEMO_WEIGHTS)[:12] in message and "\n" not in message


def test_auto_does_not_fall_back_to_tampered_demo_weights(no_local_yolo11n, tmp_path, monkeypatch):
    _demo_copy(tmp_path, monkeypatch, "f" * 64)
    with pytest.raises(UserError, match="fails its sha256 check"):
        resolve_model("auto", tmp_path / "engines")


def test_demo_weights_without_their_checksum_file_are_refused(tmp_path, monkeypatch):
    _demo_copy(tmp_path, monkeypatch, None)
    with pytest.raises(UserError, match="expected a checksum file"):
        resolve_model("demo", tmp_path / "engines")


def test_intact_demo_weights_pass_their_check(tmp_path):
    ref = resolve_model("demo", tmp_path / "engines")
    assert ref.sha256 == models.DEMO_SHA256.read_text().split()[0]


def test_a_missing_pt_path_the_user_asked_for_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(UserError, match=r"missing\.pt: no such file"):
        resolve_model(str(tmp_path / "missing.pt"), tmp_path / "engines")


def test_a_file_that_is_not_a_model_is_an_error(tmp_path):
    fake = tmp_path / "x.pt"
    fake.write_text("not a model\n")
    with pytest.raises(UserError, match="is not a model ultralytics can load") as err:
        resolve_model(str(fake), tmp_path / "engines")
    assert "\n" not in str(err.value)


def test_an_official_name_that_is_not_on_disk_is_an_error_offline(no_local_yolo11n, tmp_path):
    with pytest.raises(UserError, match=r"yolo11n\.pt is not on this machine and cannot be downloaded \(YOLO_OFFLINE is set\)"):
        resolve_model("yolo11n.pt", tmp_path / "engines")


def test_a_folder_is_not_a_weights_file(tmp_path):
    (tmp_path / "w.pt").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        resolve_model(str(tmp_path / "w.pt"), tmp_path / "engines")


def test_yaml_is_built_once_and_every_build_has_the_same_weights(tmp_path):
    first = resolve_model("yolo11n.yaml", tmp_path / "a")
    again = resolve_model("yolo11n.yaml", tmp_path / "a")
    assert (again.path, again.sha256) == (first.path, first.sha256)
    assert first.kind == "untrained" and not first.trained and "untrained" in first.label
    # A build elsewhere has identical weights. Its file's sha256 differs: ultralytics stamps the
    # save date into the checkpoint and torch.save's pickle is not byte-stable between processes.
    other = resolve_model("yolo11n.yaml", tmp_path / "b")
    a, b = (torch.load(r.path, weights_only=False)["model"].state_dict() for r in (first, other))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_yaml_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        resolve_model(str(tmp_path / "nope.yaml"), tmp_path / "engines")


def _io(path: Path) -> list[tuple[str, int, list[int]]]:
    import onnx

    graph = onnx.load(str(path)).graph
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in [*graph.input, *graph.output]]


def test_the_fp16_io_export_is_fp16_through_and_through_and_matches_the_fp32_one(engines_dir):
    import numpy as np
    import onnx
    import onnxruntime as ort

    demo = resolve_model("demo", engines_dir)
    fp32 = models.export_onnx(demo, engines_dir, 640, "fp32")
    fp16 = models.export_onnx_fp16_io(demo, engines_dir, 640)
    assert "-fp16io-" in fp16.name and fp16 != models.onnx_path(demo, engines_dir, 640, "fp16")
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert _io(fp16) == [("images", f16, [1, 3, 640, 640]), ("output0", f16, [1, 10, 8400])]
    assert [(name, shape) for name, _, shape in _io(fp32)] == [(name, shape) for name, _, shape in _io(fp16)]
    weights = onnx.load(str(fp16)).graph.initializer
    assert sum(w.data_type == f16 for w in weights) > 100 and sum(w.data_type == f32 for w in weights) <= 1
    assert not [n for n in onnx.load(str(fp16)).graph.node if n.op_type == "Cast"]
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    (ref,) = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    (half,) = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"]).run(None, {"images": x.astype(np.float16)})
    assert half.dtype == np.float16
    assert np.abs(half[0, 4:].astype(np.float32) - ref[0, 4:]).max() < 0.02  # class scores
    assert np.abs(half[0, :4].astype(np.float32) - ref[0, :4]).max() < 1.0  # boxes, in pixels


def test_the_fp16_io_export_is_cached_and_a_corrupt_one_is_made_again(engines_dir):
    demo = resolve_model("demo", engines_dir)
    first = models.export_onnx_fp16_io(demo, engines_dir, 640)
    made = first.stat().st_mtime_ns
    assert models.export_onnx_fp16_io(demo, engines_dir, 640).stat().st_mtime_ns == made
    first.write_bytes(b"half an onnx file")
    again = models.export_onnx_fp16_io(demo, engines_dir, 640)
    assert again == first and _io(again)[0][0] == "images"
    assert not [p for p in engines_dir.iterdir() if ".partial" in p.name]


NO_NETWORK = textwrap.dedent(
    """
    import json, socket, sys

    attempts = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append(f"{what}{args[1:2] if what == 'connect' else args[:1]}")
            raise OSError(f"network blocked by the test: {what}")
        return blocked

    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect_ex")
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")

    from pathlib import Path
    import numpy as np
    from rtmon.config import load_settings
    from rtmon.engines import create
    from rtmon.core import Frame
    from rtmon.models import resolve_model
    from rtmon.sources import read_frames, resolve_source

    cache_dir, engines_dir = Path(sys.argv[1]), Path(sys.argv[2])
    model = resolve_model("auto", engines_dir)
    spec = resolve_source("sample", cache_dir)
    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir)})
    images = list(read_frames(spec, 2))
    for name in ("baseline", "ort-cpu"):
        engine = create(name, model, settings)
        engine.load()
        boxes = [len(engine.infer(Frame(i, image, 0.0)).detections) for i, image in enumerate(images)]
        engine.close()
        print(json.dumps({"engine": name, "boxes": boxes}))
    print(json.dumps({"model": model.kind, "notice": model.notice, "attempts": attempts}))
    """
)


def test_nothing_reaches_the_network(cache_dir, tmp_path):
    """From a fresh interpreter whose sockets refuse to connect or resolve from the first line:
    resolve `auto`, the sample, export to ONNX, and run the baseline and ort-cpu on two frames.
    Attempts are recorded as well as refused, since ultralytics swallows network errors."""
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, str(cache_dir), str(tmp_path / "engines")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    *engines, summary = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert summary["attempts"] == []
    # The demo detector unless this machine happens to hold yolo11n.pt in ultralytics' weights folder.
    assert summary["model"] in {"demo", "official"}
    assert [e["engine"] for e in engines] == ["baseline", "ort-cpu"]
    if summary["model"] == "demo":
        assert all(n > 0 for e in engines for n in e["boxes"]), engines
    assert any((tmp_path / "engines").glob("*.onnx")), "ort-cpu exported its ONNX file offline"
