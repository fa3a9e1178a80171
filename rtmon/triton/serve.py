"""`rtmon serve`: a real Triton Inference Server on this machine, running one of rtmon's engines.

NVIDIA PyTriton starts the `tritonserver` bundled in its wheel (Triton 2.51) and binds the
engine's network (`Engine.network`, run in the engine's own process by
`rtmon.runner.NetworkRunner`) as a Python model:
Triton's gRPC and HTTP endpoints, its dynamic batcher and its Prometheus metrics in front of
rtmon's own engine. The model keeps the interface of the ONNX export (letterboxed NCHW in, raw
head output out), so the `triton` engine, perf_analyzer or any Triton client use it as they
would a stock tritonserver loading `rtmon export --triton`.

A request's way: client → gRPC → tritonserver's dynamic batcher → PyTriton's Python backend
stub (a process of its own) → shared memory and ZeroMQ → this process → shared memory → the
engine's process, which runs the batch on the network → back the same way.

Ctrl-C or SIGTERM stop the server, its stub and the engine. PyTriton starts tritonserver with
PR_SET_PDEATHSIG, so when rtmon is killed outright the server gets SIGTERM and exits within
`EXIT_TIMEOUT_S`, taking its stub with it; the workspace it leaves in the temp folder is
removed by the next `rtmon serve`.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console

from rtmon import engines as registry
from rtmon import gpu
from rtmon.config import Settings
from rtmon.errors import UserError, one_line
from rtmon.models import ModelRef, resolve_model
from rtmon.processes import stop_on_signals
from rtmon.runner import NetworkRunner, RunnerOptions
from rtmon.triton import preferred_batch_sizes

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "images", "output0"  # the names of ultralytics' ONNX export
EXIT_TIMEOUT_S = 5  # how long tritonserver waits for requests in flight when told to stop
INSTALL_HINT = "pip install 'rtmon[serve]'  (NVIDIA PyTriton, which bundles Triton Inference Server)"
# Endpoints that need PyTriton's access token (never printed): loading/unloading models, trace
# and log settings. Health, metadata, inference, shared memory and statistics stay open, as on a
# stock tritonserver, so clients can register shared memory and perf_analyzer can read statistics.
RESTRICTED_ENDPOINTS = ["model-repository", "trace", "logging"]


def check_ports(address: str, ports: dict[str, int]) -> None:
    """Every endpoint port distinct and free on `address`; else a one-line UserError."""
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise UserError(f"serve: the {seen[port]} and {name} ports are both {port}; give each its own")
        seen[port] = name
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
            try:
                probe.bind((address, port))
            except OSError as exc:
                raise UserError(f"serve: {name} port {address}:{port} is not available ({exc.strerror}); "
                                f"choose another with --{name}-port") from None


def _libpython_first() -> None:
    """Make PyTriton's model process load this interpreter's own libpython.

    The stub Triton starts for a Python model links `libpython3.X.so` by name. Where the
    system has another build of the same version (a pyenv or uv Python next to Debian's), the
    system one wins and loading the model fails in odd ways (`'_thread.RLock' object has no
    attribute '_recursion_count'`); putting this interpreter's LIBDIR first avoids that. And
    PyTriton copies tritonserver out of its wheel, so the libraries it ships beside the
    binaries (`nvidia_pytriton.libs`) are named here too, wherever the wheel was unpacked.
    """
    import pytriton

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{version}.so.1.0"
    if not (Path(libdir) / soname).is_file() and not ctypes.util.find_library(f"python{version}"):
        raise UserError(
            f"serve: PyTriton's model process needs the shared Python library {soname}, which this Python "
            f"({sys.executable}) does not have; install it (Debian/Ubuntu: apt-get install libpython{version}) "
            "or use a Python built with --enable-shared"
        )
    wheel_libs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    paths = [p for p in (libdir, str(wheel_libs)) if p and Path(p).is_dir()]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*paths, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep))])


def check_model_process_python() -> None:
    """The Python that PyTriton's model process (Triton's Python backend stub) will run must import
    numpy < 2 and pyzmq from its own environment: the stub runs the interpreter found at
    `sys.exec_prefix/bin`, ignores PYTHONPATH (it does read site-packages' .pth files), and with
    numpy 2 it answers every request with an empty output. Checked up front, in the same
    isolated mode, so that a wrong environment is one clear line rather than a broken server."""
    python = Path(sys.exec_prefix) / "bin" / "python3"
    probe = "import numpy, zmq; print(numpy.__version__)"
    try:
        done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise UserError(f"serve: cannot run {python} for PyTriton's model process ({exc.strerror or exc})") from None
    found = done.stdout.strip()
    if done.returncode == 0 and int(found.split(".")[0]) < 2:
        return
    why = f"it has numpy {found}" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["it fails"])[-1]
    raise UserError(
        f"serve: PyTriton's model process runs {python}, which ignores PYTHONPATH and needs numpy < 2 and pyzmq "
        f"of its own ({why}); install them there (pip install 'numpy<2' pyzmq) or use a venv "
        "(python3 -m venv --system-site-packages V; list the PYTHONPATH folders in a .pth file in its site-packages)"
    )


RUN_ROOT = Path(tempfile.gettempdir()) / "rtmon-serve"


@contextlib.contextmanager
def _run_folder() -> Iterator[Path]:
    """A folder for this server, <tmp>/rtmon-serve/<pid>: PyTriton's workspace (a copy of
    tritonserver, the model store) and the server log. What killed servers left is removed first."""
    RUN_ROOT.mkdir(exist_ok=True)
    for old in RUN_ROOT.iterdir():
        if old.name.isdigit() and not psutil.pid_exists(int(old.name)):
            remove_leftovers(int(old.name))
    path = RUN_ROOT / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(pid: int) -> None:
    """What a killed `rtmon serve` (process `pid`) left behind: its run folder, and the Python
    backend's shared memory in /dev/shm (PyTriton names it pytrtion<pid>-…)."""
    shutil.rmtree(RUN_ROOT / str(pid), ignore_errors=True)
    for region in Path("/dev/shm").glob(f"pytrtion{pid}-*"):
        region.unlink(missing_ok=True)


def _log_tail(log: Path) -> str:
    """The last error line tritonserver wrote, for a one-line message."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no server log"
    errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
    return (errors or lines or ["empty server log"])[-1][:300]


def check_answer(address: str, model: str, image: np.ndarray, expected: np.ndarray) -> str | None:
    """None when the server answers `image` with `expected` (the engine's own answer, in process);
    else what is wrong. PyTriton's data path can fail silently (with numpy 2 its backend stub
    returns empty outputs), so the server is asked once before it is announced."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    request = grpcclient.InferInput(INPUT_NAME, list(image.shape), np_to_triton_dtype(image.dtype))
    request.set_data_from_numpy(image)
    try:
        with grpcclient.InferenceServerClient(address) as client:
            answer = client.infer(model, [request], client_timeout=60).as_numpy(OUTPUT_NAME)
    except (InferenceServerException, ValueError) as exc:
        return one_line(exc, typed=False)
    if answer is None or answer.shape != expected.shape:
        return f"output shape {None if answer is None else list(answer.shape)}, expected {list(expected.shape)}"
    if not np.allclose(answer.astype(np.float32), expected.astype(np.float32), rtol=1e-3, atol=1e-3):
        return "output values differ from the engine's own"
    return None


def _bind(triton, settings: Settings, network, output: np.ndarray) -> None:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    @batch
    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT_NAME: network.run(images)}

    size, serve = settings.model.imgsz, settings.serve
    triton.bind(
        model_name=settings.triton.model,
        infer_func=infer,
        inputs=[Tensor(name=INPUT_NAME, dtype=network.input_dtype.type, shape=(3, size, size))],
        outputs=[Tensor(name=OUTPUT_NAME, dtype=output.dtype.type, shape=output.shape[1:])],
        config=ModelConfig(
            max_batch_size=serve.max_batch,
            batcher=DynamicBatcher(max_queue_delay_microseconds=serve.queue_delay_us,
                                   preferred_batch_size=preferred_batch_sizes(serve.max_batch) or None),
        ),
        strict=True,
    )


def run_serve(settings: Settings, console: Console) -> None:
    """Serve `settings.serve.engine` until Ctrl-C or SIGTERM (or until the server dies: UserError)."""
    serve = settings.serve
    check_ports(serve.address, {"grpc": serve.grpc_port, "http": serve.http_port, "metrics": serve.metrics_port})
    if importlib.util.find_spec("pytriton") is None:
        raise UserError(f"serve: PyTriton is not installed; {INSTALL_HINT}")
    _libpython_first()
    check_model_process_python()
    model = resolve_model(settings.model.name, Path(settings.paths.engines_dir))
    if model.notice:
        log.warning(model.notice)
    name = registry.resolve_names([serve.engine])[0]
    if not registry.SPECS[name].servable:
        raise UserError(f"serve: {name} cannot be served (it has no network of its own); serve one of: "
                        f"{', '.join(registry.servable_names())}")
    stop = threading.Event()
    with stop_on_signals(stop):
        # The network runs in the engine's own process, as every engine does; this process only
        # passes PyTriton's batches to it and back.
        network = NetworkRunner(name, model, settings, serve.max_batch, RunnerOptions.of(settings))
        try:
            network.wait_loaded()
            if not stop.is_set():
                with _run_folder() as folder:
                    _serve_until_stopped(settings, network, folder, stop,
                                         lambda: _print_ready(console, settings, network, model))
            console.print("stopped")
        finally:
            network.stop()


def _serve_until_stopped(settings: Settings, network, folder: Path, stop: threading.Event, announce) -> None:
    """Start tritonserver with `network` bound, check its answer, announce it, and keep it
    running until `stop` is set (or it dies: UserError); it is stopped on the way out."""
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    serve = settings.serve
    zeros = np.zeros((1, 3, settings.model.imgsz, settings.model.imgsz), network.input_dtype)
    expected = network.run(zeros)
    server_log = folder / "tritonserver.log"
    config = TritonConfig(
        grpc_address=serve.address, grpc_port=serve.grpc_port, http_address=serve.address, http_port=serve.http_port,
        metrics_address=serve.address, metrics_port=serve.metrics_port, allow_metrics=True,
        allow_gpu_metrics=gpu.unavailable_reason() is None, log_file=server_log, exit_timeout_secs=EXIT_TIMEOUT_S,
    )
    triton = Triton(config=config, workspace=folder / "workspace",
                    security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED_ENDPOINTS))
    try:
        _bind(triton, settings, network, expected)
        try:
            triton.run()
        except Exception as exc:
            raise UserError(f"serve: Triton did not start ({_log_tail(server_log) if server_log.exists() else exc})") from None
        here = "127.0.0.1" if serve.address in {"0.0.0.0", "::"} else serve.address
        wrong = check_answer(f"[{here}]:{serve.grpc_port}" if ":" in here else f"{here}:{serve.grpc_port}",
                             settings.triton.model, zeros, expected)
        if wrong:
            raise UserError(f"serve: the server answers a test request wrongly ({wrong})")
        announce()
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise UserError(f"serve: Triton stopped on its own ({_log_tail(server_log)})")
    finally:
        triton.stop()


def _print_ready(console: Console, settings: Settings, network: NetworkRunner, model: ModelRef) -> None:
    serve, info = settings.serve, network.info
    host = socket.gethostname() if serve.address in {"0.0.0.0", "::"} else serve.address
    host = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {info.name} ({info.backend}, {info.precision}, {info.device}) on {model.label} "
        f"as model '{settings.triton.model}', max batch {serve.max_batch}, queue delay {serve.queue_delay_us} µs\n"
        f"  gRPC     grpc://{host}:{serve.grpc_port}\n"
        f"  HTTP     http://{host}:{serve.http_port}\n"
        f"  metrics  http://{host}:{serve.metrics_port}/metrics\n"
        "ready (Ctrl-C or SIGTERM stops it)",
        markup=False, highlight=False, soft_wrap=True,
    )
