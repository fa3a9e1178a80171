"""rtmon on Triton Inference Server: `rtmon serve` (a real tritonserver through PyTriton, with
ort-cpu), the `triton` engine against it, `rtmon export --triton`, and every bad input's
one-line error. Servers listen on free loopback ports and must leave no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
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
from rtmon.triton import preferred_batch_sizes
from rtmon.triton.repository import OnnxInterface, RepositoryOptions, model_config
from rtmon.triton.serve import check_ports
from tests.cli_helpers import assert_one_line_error, run_rtmon

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 240  # engine load and warm-up, then tritonserver and its Python stub


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for init to reap it has ended)."""
    out = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


class Server:
    """`python -m rtmon serve --engine ort-cpu` on free loopback ports; its output read as it comes."""

    def __init__(self, rtmon_env: dict, *args: str) -> None:
        self.grpc, self.http, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "rtmon", "serve", "--engine", "ort-cpu", "--model", "demo", "--address", "127.0.0.1",
               "--grpc-port", str(self.grpc), "--http-port", str(self.http), "--metrics-port", str(self.metrics), *args]
        for item in rtmon_env["sets"]:
            cmd += ["--set", item]
        env = {**rtmon_env["env"], "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.ready = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line)
            if line.startswith("ready"):
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready.wait(1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rtmon serve not ready (exit {self.proc.poll()}): {''.join(self.stderr)[-3000:]}")

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def output(self) -> tuple[str, str]:
        """stdout and stderr, once the server has exited."""
        self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(10)
        return "".join(self.stdout), "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for p in living(self.family()):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(rtmon_env):
    """One `rtmon serve` for the module; stopping it with SIGTERM is itself tested at the end."""
    srv = Server(rtmon_env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def demo(engines_dir) -> ModelRef:
    return resolve_model("demo", engines_dir)


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [Frame(i, image, time.perf_counter()) for i, (image, _) in enumerate(render_scene(SAMPLE_SEED, 40, stride=10))]


def settings_for(server: Server, engines_dir: Path, **overrides):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), "triton.url": server.url, **overrides})


# --- the engine against the server ------------------------------------------------------------


@pytest.mark.parametrize("shm", ["on", "off"])
def test_triton_engine_finds_the_boxes_ort_cpu_finds(server, demo, frames, engines_dir, shm):
    settings = settings_for(server, engines_dir, **{"triton.shm": shm})
    local, remote = create("ort-cpu", demo, settings), create("triton", demo, settings)
    local.load()
    remote.load()
    try:
        total = 0
        for frame in frames:
            ours, theirs = local.infer(frame).detections, remote.infer(frame).detections
            pairs = match_pairs(ours, theirs, iou=0.99)
            assert len(pairs) == len(ours) == len(theirs), frame.index
            i, j = np.array(pairs).T
            assert np.abs(ours.confidence[i] - theirs.confidence[j]).max() < 1e-4
            total += len(ours)
        assert total > 10  # the demo detector sees the sample scene's objects
        info = remote.info
        assert info.device == f"remote: 127.0.0.1:{server.grpc}" and info.precision == "fp32"
        assert ("shared memory" in info.backend) == (shm == "on")
        assert any("round trip" in note for note in info.notes)
    finally:
        local.close()
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
                        "--set", f"triton.url={server.url}"], rtmon_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [e["name"] for e in report["engines"]] == ["ort-cpu", "triton"]
    assert all(e["fps"] > 0 for e in report["engines"])


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
    with pytest.raises(UserError, match=r"torch-fp32 cannot be served .* serve one of: ort-cpu, torch-fp16"):
        run_serve(settings, Console())


def test_sigterm_stops_the_server_and_everything_it_started(server):
    """Runs last in this module (pytest keeps file order): it stops the shared server."""
    family = server.family()
    names = {p.name() for p in living(family)}
    assert "tritonserver" in names and "triton_python_backend_stub" in names, names
    folder = Path("/tmp/rtmon-serve") / str(server.proc.pid)
    assert folder.is_dir()
    server.proc.send_signal(signal.SIGTERM)
    out, err = server.output()
    assert server.proc.returncode == 0, err[-3000:]
    assert "stopped" in out and "Traceback" not in err
    gone_by = time.monotonic() + 15
    while living(family) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not living(family)
    assert not folder.exists()


# --- a server that is killed ---------------------------------------------------------------------


def test_killed_server_takes_tritonserver_along_and_the_engine_says_so(rtmon_env, demo, frames, engines_dir):
    srv = Server(rtmon_env)
    try:
        srv.wait_ready()
        engine = create("triton", demo, settings_for(srv, engines_dir, **{"triton.timeout_s": 5}))
        engine.load()
        family = srv.family()
        srv.proc.kill()  # SIGKILL: rtmon gets no chance to stop anything
        srv.proc.wait()
        gone_by = time.monotonic() + 20
        while living(family) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert not living(family), [p.name() for p in living(family)]
        with pytest.raises(ConnectionError) as err:
            engine.infer(frames[0])
        assert "did not answer" in str(err.value) and "\n" not in str(err.value)
        engine.close()
    finally:
        srv.kill()


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
