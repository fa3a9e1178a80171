"""rtmon on Triton Inference Server: `rtmon serve` (a real tritonserver through PyTriton, with
ort-cpu), the `triton` engine against it, `rtmon export --triton`, and every bad input's
one-line error. Servers listen on free loopback ports and must leave no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from rtmon.config import load_settings
from rtmon.core import Frame
from rtmon.engines import create
from rtmon.engines.parity import match_pairs
from rtmon.engines.triton import Endpoint, ServedModel
from rtmon.errors import UserError
from rtmon.models import ModelRef, resolve_model
from rtmon.scene import SAMPLE_SEED, render_scene
from rtmon.triton import perf_analyzer, preferred_batch_sizes
from rtmon.triton.loadtest import ServeProcess, free_ports, run_loadtest
from rtmon.triton.repository import OnnxInterface, RepositoryOptions, model_config
from rtmon.triton.serve import RUN_ROOT, check_answer, check_ports, remove_leftovers
from tests.cli_helpers import assert_one_line_error, run_rtmon

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 240  # engine load and warm-up, then tritonserver and its Python stub


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for init to reap it has ended)."""
    out = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def start_server(rtmon_env: dict) -> ServeProcess:
    """`python -m rtmon serve --engine ort-cpu` on free loopback ports, with the session's folders."""
    sets = [a for item in rtmon_env["sets"] for a in ("--set", item)]
    return ServeProcess(["--engine", "ort-cpu", "--model", "demo", *sets], env={**rtmon_env["env"], "PYTHONPATH": str(ROOT)})


def family(server: ServeProcess) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children(recursive=True)


def stop_everything(server: ServeProcess) -> None:
    if server.proc.poll() is None:
        for p in living(family(server)):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    server.kill()


@pytest.fixture(scope="module")
def server(rtmon_env):
    """One `rtmon serve` for the module; stopping it with SIGTERM is itself tested at the end."""
    srv = start_server(rtmon_env)
    try:
        srv.wait_ready(READY_TIMEOUT_S)
        yield srv
    finally:
        stop_everything(srv)


@pytest.fixture(scope="module")
def demo(engines_dir) -> ModelRef:
    return resolve_model("demo", engines_dir)


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [Frame(i, image, time.perf_counter()) for i, (image, _) in enumerate(render_scene(SAMPLE_SEED, 30, stride=10))]


def settings_for(server: ServeProcess, engines_dir: Path, **overrides):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), "triton.url": server.url, **overrides})


# --- the engine against the server ------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_cpu_detections(demo, frames, engines_dir) -> list:
    local = create("ort-cpu", demo, load_settings(overrides={"paths.engines_dir": str(engines_dir)}))
    local.load()
    try:
        return [local.infer(frame).detections for frame in frames]
    finally:
        local.close()


@pytest.mark.parametrize("shm", ["on", "off"])
def test_triton_engine_finds_the_boxes_ort_cpu_finds(server, demo, frames, ort_cpu_detections, engines_dir, shm):
    remote = create("triton", demo, settings_for(server, engines_dir, **{"triton.shm": shm}))
    remote.load()
    try:
        for frame, ours in zip(frames, ort_cpu_detections, strict=True):
            theirs = remote.infer(frame).detections
            pairs = match_pairs(ours, theirs, iou=0.99)
            assert len(pairs) == len(ours) == len(theirs), frame.index
            i, j = np.array(pairs).T
            assert np.abs(ours.confidence[i] - theirs.confidence[j]).max() < 1e-4
        assert sum(map(len, ort_cpu_detections)) > 10  # the demo detector sees the sample scene's objects
        info = remote.info
        assert info.device == f"remote: 127.0.0.1:{server.grpc}" and info.precision == "fp32"
        assert ("shared memory" in info.backend) == (shm == "on")
        assert any("round trip" in note for note in info.notes)
    finally:
        remote.close()


def test_shm_auto_uses_shared_memory_on_loopback(server, demo, engines_dir):
    engine = create("triton", demo, settings_for(server, engines_dir))
    engine.load()
    try:
        assert "shared memory" in engine.info.backend
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"triton.model": "nosuch"}, "does not serve model 'nosuch'"),
        ({"model.imgsz": 320}, "rtmon sends [3, 320, 320]"),
    ],
)
def test_engine_refuses_a_model_that_does_not_fit(server, demo, engines_dir, overrides, fragment):
    engine = create("triton", demo, settings_for(server, engines_dir, **overrides))
    with pytest.raises(UserError) as err:
        engine.load()
    assert fragment in str(err.value) and "\n" not in str(err.value)
    engine.close()


def test_engine_refuses_a_model_with_other_classes(server, demo, engines_dir):
    other = ModelRef(demo.path, "other", "user", demo.sha256, {i: f"c{i}" for i in range(80)})
    engine = create("triton", other, settings_for(server, engines_dir))
    with pytest.raises(UserError, match=r"expected \[84, anchors\] for 80 classes"):
        engine.load()
    engine.close()


def test_engine_says_when_no_server_answers(demo, engines_dir):
    (port,) = free_ports(1)
    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir), "triton.url": f"grpc://127.0.0.1:{port}",
                                        "triton.timeout_s": 2})
    engine = create("triton", demo, settings)
    with pytest.raises(UserError, match=f"cannot reach a Triton server at grpc://127.0.0.1:{port}"):
        engine.load()
    engine.close()


def test_bench_races_ort_cpu_and_the_triton_engine(server, rtmon_env, tmp_path):
    result = run_rtmon(["bench", "--engines", "ort-cpu,triton", "--frames", "6", "--warmup", "2", "--out", str(tmp_path),
                        "--min-duration", "0", "--set", "bench.max_duration_s=3", "--set", "bench.timing_probe=0",
                        "--no-reference", "--set", f"triton.url={server.url}"], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [e["name"] for e in report["engines"]] == ["ort-cpu", "triton"]
    assert all(e["fps"] > 0 for e in report["engines"])


def test_loadtest_measures_the_server_and_writes_its_report(server, engines_dir, tmp_path):
    settings = load_settings(overrides={"paths.engines_dir": str(engines_dir), "model.name": "demo"})
    report = run_loadtest(settings, "ort-cpu", [1, 2], ["on"], tmp_path, warmup_s=0.2, seconds=0.6,
                          url=server.url, use_perf_analyzer=True, sets=[], echo=lambda _: None)
    assert json.loads((tmp_path / "triton.json").read_text()) == report
    rounds = report["served"]["rounds"]
    assert [(r["streams"], r["shm"]) for r in rounds] == [(1, "on"), (2, "on")]
    assert all(r["latency_ms"]["p99"] is None or r["latency_ms"]["p99"] > 0 for r in rounds)
    assert sum(r["frames"] for r in rounds) > 0
    for row in rounds:  # where a client's frame goes: letterbox, the call, NMS, within its latency
        stages = row["stages_ms"]
        assert set(stages) == {"preprocess", "round_trip", "postprocess"} and all(v > 0 for v in stages.values())
        assert sum(stages.values()) <= row["latency_ms"]["mean"] * 1.05
    assert report["in_process"]["stream"]["mode"] == "one at a time"
    assert [a["batch"] for a in report["in_process"]["network_alone"]] == [1, 2]
    assert report["perf_analyzer"]["ran"] or report["perf_analyzer"]["why"]
    assert "| 2 | shared memory |" in (tmp_path / "triton.md").read_text()
    assert (tmp_path / "triton.png").stat().st_size > 10_000


def test_perf_analyzer_csv_is_read_in_milliseconds():
    text = ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
            "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
            "4,840.5,10,200,1500,30,2500,20,5,4700,5100,5300,6100\n"
            "1,300.2,10,200,40,30,2400,20,5,3300,3400,3500,3900\n")
    rows = perf_analyzer.parse_csv(text)
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert rows[1] == {"concurrency": 4, "fps": 840.5, "p50_ms": 4.7, "p90_ms": 5.1, "p95_ms": 5.3, "p99_ms": 6.1,
                       "server_queue_ms": 1.5, "server_compute_ms": 2.5}


def test_serve_checks_the_answer_of_the_running_server(server, demo, engines_dir):
    local = create("ort-cpu", demo, load_settings(overrides={"paths.engines_dir": str(engines_dir)}))
    local.load()
    try:
        zeros = np.zeros((1, 3, 640, 640), np.float32)
        expected = local.network(1).run(zeros)
    finally:
        local.close()
    address = f"127.0.0.1:{server.grpc}"
    assert check_answer(address, "rtmon", zeros, expected) is None
    assert check_answer(address, "rtmon", zeros, expected[:, :, :100]) == "output shape [1, 10, 8400], expected [1, 10, 100]"
    assert check_answer(address, "rtmon", zeros, expected + 1) == "output values differ from the engine's own"


def test_serve_on_a_port_in_use_is_a_one_line_error(server, rtmon_env):
    result = run_rtmon(["serve", "--engine", "ort-cpu", "--address", "127.0.0.1", "--grpc-port", str(server.grpc),
                        *("--http-port", str(free_ports(1)[0]), "--metrics-port", str(free_ports(1)[0]))], rtmon_env)
    assert_one_line_error(result, f"grpc port 127.0.0.1:{server.grpc} is not available")


def test_serving_the_baseline_is_refused(engines_dir):
    from rich.console import Console

    from rtmon.triton.serve import run_serve

    http, grpc, metrics = free_ports(3)
    settings = load_settings(overrides={
        "paths.engines_dir": str(engines_dir), "model.name": "demo", "serve.engine": "baseline", "serve.address": "127.0.0.1",
        "serve.grpc_port": grpc, "serve.http_port": http, "serve.metrics_port": metrics,
    })
    with pytest.raises(UserError, match=r"torch-fp32 cannot be served .* serve one of: ort-cpu, .*torch-fp16"):
        run_serve(settings, Console())


def test_sigterm_stops_the_server_and_everything_it_started(server):
    """Runs last of the tests on the shared server (pytest keeps file order): it stops it."""
    started = family(server)
    names = {p.name() for p in living(started)}
    assert "tritonserver" in names and "triton_python_backend_stub" in names, names
    folder = RUN_ROOT / str(server.proc.pid)
    assert folder.is_dir()
    assert server.stop() == 0, "".join(server.stderr)[-3000:]
    assert "stopped" in "".join(server.stdout) and "Traceback" not in "".join(server.stderr)
    gone_by = time.monotonic() + 15
    while living(started) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not living(started)
    assert not folder.exists()


# --- a server that is killed ---------------------------------------------------------------------


def test_killed_server_takes_tritonserver_along_and_the_engine_says_so(rtmon_env, demo, frames, engines_dir):
    srv = start_server(rtmon_env)
    try:
        srv.wait_ready(READY_TIMEOUT_S)
        engine = create("triton", demo, settings_for(srv, engines_dir, **{"triton.timeout_s": 5}))
        engine.load()
        started = family(srv)
        srv.proc.kill()  # SIGKILL: rtmon gets no chance to stop anything
        srv.proc.wait()
        gone_by = time.monotonic() + 20
        while living(started) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert not living(started), [p.name() for p in living(started)]
        with pytest.raises(ConnectionError) as err:
            engine.infer(frames[0])
        assert "did not answer" in str(err.value) and "\n" not in str(err.value)
        engine.close()
    finally:
        stop_everything(srv)
    # the next `rtmon serve` removes what the killed one left on disk; here, at once
    assert (RUN_ROOT / str(srv.proc.pid)).is_dir()
    remove_leftovers(srv.proc.pid)
    assert not (RUN_ROOT / str(srv.proc.pid)).exists() and not list(Path("/dev/shm").glob(f"pytrtion{srv.proc.pid}-*"))


# --- what a GPU engine serves (GPU machine only) ------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["torch-graph", "ort-cuda"])
def test_a_gpu_engines_served_network_answers_each_batch_as_it_answers_one_image(name, demo, frames, engines_dir):
    from rtmon.engines.prepost import preprocess_cpu

    engine = create(name, demo, load_settings(overrides={"paths.engines_dir": str(engines_dir)}))
    engine.load()
    try:
        network = engine.network(4)
        batch = np.concatenate([preprocess_cpu(f.image, 640, network.input_dtype)[0] for f in frames[:3]])
        together = network.run(batch)  # 3 images on the batch-4 runner, one row of padding
        assert together.shape == (3, 10, 8400)
        for i in range(3):
            alone = network.run(batch[i : i + 1]).astype(np.float32)
            scores = np.abs(together[i].astype(np.float32)[4:] - alone[0][4:]).max()
            boxes = np.abs(together[i].astype(np.float32)[:4] - alone[0][:4]).max()
            assert scores < 0.02 and boxes < 1.0, (i, scores, boxes)  # FP16, other kernels per batch size
    finally:
        engine.close()


# --- export --triton ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory, rtmon_env):
    out = tmp_path_factory.mktemp("repo")
    result = run_rtmon(["export", "--triton", str(out), "--model", "demo", "--precision", "fp32", "--max-batch", "8",
                        "--instances", "2"], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_export_writes_a_repository_whose_config_parses(repository):
    config = text_format.Parse((repository / "rtmon" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.name == "rtmon" and config.backend == "onnxruntime" and config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", mc.TYPE_FP32, [3, 640, 640])
    assert (out.name, out.data_type, list(out.dims)) == ("output0", mc.TYPE_FP32, [10, 8400])  # 6 demo classes
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 2 and not group.gpus
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert not [p for p in repository.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_exported_model_batches_and_matches_ort_cpu(repository, demo, frames, engines_dir):
    import onnxruntime as ort

    from rtmon.engines.prepost import preprocess_cpu

    session = ort.InferenceSession(str(repository / "rtmon" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.concatenate([preprocess_cpu(f.image, 640)[0] for f in frames[:3]])
    (batched,) = session.run(None, {"images": batch})
    local = create("ort-cpu", demo, load_settings(overrides={"paths.engines_dir": str(engines_dir)}))
    local.load()
    try:
        single = local.network(4).run(batch)
    finally:
        local.close()
    assert batched.shape == single.shape == (3, 10, 8400)
    np.testing.assert_allclose(batched, single, rtol=1e-3, atol=1e-2)


def test_tensorrt_option_adds_the_accelerator_with_one_profile_for_every_batch():
    settings = load_settings(overrides={"serve.max_batch": 16})
    options = RepositoryOptions(precision="fp16", gpus=(0, 1), tensorrt=True)
    config = model_config(settings, options, OnnxInterface("images", True, "output0", True), (84, 8400))
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_min_shapes"] == "images:1x3x640x640"
    assert trt.parameters["trt_profile_max_shapes"] == "images:16x3x640x640"
    assert list(config.instance_group[0].gpus) == [0, 1]
    assert config.input[0].data_type == mc.TYPE_FP16
    text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--precision", "fp8"], "--precision fp8: choose one of fp16, fp32"),
        (["--cpu", "--tensorrt"], "--cpu does not go with --gpus or --tensorrt"),
        (["--gpus", "0,x"], "--gpus 0,x: expected GPU ids"),
    ],
)
def test_export_bad_options_are_one_line_errors(args, fragment, tmp_path, rtmon_env):
    result = run_rtmon(["export", "--triton", str(tmp_path / "repo"), *args], rtmon_env)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "repo").exists()


# --- small parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address", "local"),
    [
        ("grpc://localhost:8001", "localhost:8001", True),
        ("grpc://127.0.0.2:9001", "127.0.0.2:9001", True),
        ("gpu-box:8001", "gpu-box:8001", False),
        ("grpc://10.1.2.3", "10.1.2.3:8001", False),
        ("grpc://[::1]:8001", "[::1]:8001", True),
    ],
)
def test_endpoint_parses_grpc_urls(url, address, local):
    endpoint = Endpoint.parse(url)
    assert endpoint.address == address and endpoint.is_local == local


@pytest.mark.parametrize("url", ["http://localhost:8000", "grpc://:8001", "grpc://host:port", "grpc://host:70000"])
def test_endpoint_refuses_other_urls(url):
    with pytest.raises(UserError, match=r"triton\.url"):
        Endpoint.parse(url)


def _metadata(inputs, outputs) -> service_pb2.ModelMetadataResponse:
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name="m", platform="python",
        inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in inputs],
        outputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in outputs],
    )


def test_served_model_reads_names_types_and_shapes_from_metadata():
    served = ServedModel.describe(_metadata([("x", "FP16", [-1, 3, 640, 640])], [("y", "FP16", [-1, 10, 8400])]))
    assert (served.input_name, served.input_shape, served.output_shape) == ("x", (3, 640, 640), (10, 8400))
    assert served.precision == "fp16" and served.input_bytes == 3 * 640 * 640 * 2 and served.output_bytes == 10 * 8400 * 2
    served.check("m", 640, 6)
    unbatched = ServedModel.describe(_metadata([("x", "FP32", [1, 3, 640, 640])], [("y", "FP32", [1, 10, 8400])]))
    assert unbatched.input_shape == (3, 640, 640)


@pytest.mark.parametrize(
    ("inputs", "outputs", "fragment"),
    [
        ([("x", "UINT8", [-1, 3, 640, 640])], [("y", "FP32", [-1, 10, 8400])], "is UINT8; rtmon needs FP16 or FP32"),
        ([("x", "FP32", [-1, 3, 640, 640]), ("z", "FP32", [-1])], [("y", "FP32", [-1, 10, 8400])], "has 2 inputs"),
    ],
)
def test_served_model_refuses_other_interfaces(inputs, outputs, fragment):
    with pytest.raises(UserError, match=fragment):
        ServedModel.describe(_metadata(inputs, outputs))


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("echo \"ModuleNotFoundError: No module named 'zmq'\" >&2; exit 1", "No module named 'zmq'"),
        ("echo 2.4.6", "it has numpy 2.4.6"),
    ],
)
def test_serve_refuses_a_python_whose_model_process_would_fail(script, fragment, tmp_path, monkeypatch):
    from rtmon.triton.serve import check_model_process_python

    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python3"
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path))
    with pytest.raises(UserError, match="ignores PYTHONPATH and needs numpy < 2 and pyzmq") as err:
        check_model_process_python()
    assert fragment in str(err.value)


def test_this_environment_can_run_the_model_process():
    from rtmon.triton.serve import check_model_process_python

    check_model_process_python()


def test_port_check_refuses_a_port_in_use_and_shared_ports():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"http port 127.0.0.1:{port} is not available"):
            check_ports("127.0.0.1", {"http": port})
    with pytest.raises(UserError, match="the grpc and metrics ports are both 9"):
        check_ports("127.0.0.1", {"grpc": 9, "metrics": 9})


def test_dynamic_batcher_prefers_the_sizes_the_gpu_engines_build():
    assert preferred_batch_sizes(16) == [2, 4, 8, 16]
    assert preferred_batch_sizes(12) == [2, 4, 8, 12]
    assert preferred_batch_sizes(1) == []


def test_shm_setting_is_validated():
    with pytest.raises(UserError, match=r"triton\.shm"):
        load_settings(overrides={"triton.shm": "sometimes"})


def test_the_module_leaves_no_triton_process_behind():
    mine = psutil.Process(os.getpid()).children(recursive=True)
    assert not [p for p in living(mine) if "triton" in p.name()]
