"""A remote engine: the network runs on a Triton Inference Server, reached over gRPC.

The server holds the network alone, with the interface of the model's ONNX export: letterboxed
NCHW images in (RGB in [0, 1], FP16 or FP32), the raw head output (n, 4+nc, anchors) out. So
the same engine talks to `rtmon serve` and to a stock `tritonserver` loading
`rtmon export --triton`. Letterbox and NMS stay here and are rtmon's own (`prepost.py`), so the
boxes match the local engines'. The engine reads the input's name, type and shape from the
server's model metadata and refuses a model that does not fit (size, class count).

Its latency is a remote call's: it includes the round trip to the server and the server's
queue, and the engine says so (`EngineInfo.device` = "remote: host:port").

When the server runs on this machine the frame and the head output need not cross the socket:
with `triton.shm` on (or `auto` and a loopback URL) they go through two regions of system
shared memory registered with the server, and a request carries only their names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from itertools import count

import numpy as np
import torch

from rtmon.core import EngineInfo, Frame, Result
from rtmon.engines.base import Stopwatch, SyncEngine, warmup_frames
from rtmon.engines.prepost import Thresholds, postprocess, preprocess_cpu
from rtmon.errors import UserError, one_line
from rtmon.models import ModelRef

DEFAULT_PORT = 8001
_DTYPES = {"FP16": np.float16, "FP32": np.float32}
_regions = count()  # numbers the shared-memory regions of this process


@dataclass(frozen=True)
class Endpoint:
    """Where the server's gRPC endpoint is: `grpc://host:port` (or `host:port`)."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        rest = url.strip()
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            if scheme != "grpc":
                raise UserError(f"triton.url: {url}: the triton engine speaks gRPC; write grpc://host:port")
        rest = rest.rstrip("/")
        host, sep, port = rest.rpartition(":")
        if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = rest, str(DEFAULT_PORT)
        host = host.strip("[]")
        if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"triton.url: {url}: expected grpc://host:port")
        return cls(host, int(port))

    @property
    def address(self) -> str:
        """host:port as gRPC takes it (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"grpc://{self.address}"

    @property
    def is_local(self) -> bool:
        """A loopback address: the server shares this machine's memory."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class ServedModel:
    """The served model's interface, as the server describes it; shapes are one image's."""

    input_name: str
    input_dtype: np.dtype
    input_shape: tuple[int, ...]  # (3, S, S)
    output_name: str
    output_dtype: np.dtype
    output_shape: tuple[int, ...]  # (4 + classes, anchors)

    @classmethod
    def describe(cls, metadata) -> ServedModel:
        """From the server's `ModelMetadataResponse`; UserError if rtmon cannot use the model.

        The metadata's shapes lead with the batch dimension (-1 when the server batches, else
        the model's own, 1 for an ONNX export); rtmon sends one image per request either way.
        """
        if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
            raise UserError(
                f"engine: triton: model '{metadata.name}' has {len(metadata.inputs)} inputs and "
                f"{len(metadata.outputs)} outputs; rtmon needs one image input and the raw head output"
            )
        (inp,), (out,) = metadata.inputs, metadata.outputs
        for tensor in (inp, out):
            if tensor.datatype not in _DTYPES:
                raise UserError(f"engine: triton: '{tensor.name}' of model '{metadata.name}' is {tensor.datatype}; rtmon needs FP16 or FP32")
        return cls(inp.name, np.dtype(_DTYPES[inp.datatype]), tuple(inp.shape)[1:],
                   out.name, np.dtype(_DTYPES[out.datatype]), tuple(out.shape)[1:])

    def check(self, model: str, imgsz: int, classes: int) -> None:
        """The served model must take one imgsz×imgsz image and predict as many classes as ours."""
        if self.input_shape != (3, imgsz, imgsz):
            raise UserError(
                f"engine: triton: model '{model}' takes input {list(self.input_shape)}, rtmon sends [3, {imgsz}, {imgsz}] "
                "(model.imgsz); serve the same model at the same size"
            )
        if len(self.output_shape) != 2 or self.output_shape[0] != 4 + classes or self.output_shape[1] <= 0:
            raise UserError(
                f"engine: triton: model '{model}' outputs {list(self.output_shape)}, expected [{4 + classes}, anchors] "
                f"for {classes} classes; serve the same model as --model"
            )

    @property
    def precision(self) -> str:
        return "fp16" if self.input_dtype == np.float16 else "fp32"

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.input_shape)) * self.input_dtype.itemsize

    @property
    def output_bytes(self) -> int:
        return int(np.prod(self.output_shape)) * self.output_dtype.itemsize

    def input(self):
        """A gRPC `InferInput` for one image."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import np_to_triton_dtype

        return grpcclient.InferInput(self.input_name, [1, *self.input_shape], np_to_triton_dtype(self.input_dtype))


class SocketTransport:
    """The tensors travel inside the gRPC messages."""

    name = "gRPC"

    def __init__(self, client, model: str, served: ServedModel, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        self._client, self._model, self._served, self._timeout = client, model, served, timeout_s
        self._input = served.input()
        self._outputs = [grpcclient.InferRequestedOutput(served.output_name)]

    def run(self, blob: np.ndarray) -> np.ndarray:
        self._input.set_data_from_numpy(blob)
        result = self._client.infer(self._model, [self._input], outputs=self._outputs, client_timeout=self._timeout)
        return result.as_numpy(self._served.output_name)

    def close(self) -> None:
        pass


class SharedMemoryTransport:
    """The tensors travel through two system shared-memory regions registered with the server;
    a request names them. Only for a server on this machine."""

    name = "gRPC + system shared memory"

    def __init__(self, client, model: str, served: ServedModel, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import shared_memory

        self._shm = shared_memory
        self._client, self._model, self._served, self._timeout = client, model, served, timeout_s
        tag = f"rtmon-{os.getpid()}-{next(_regions)}"
        self._names = (f"{tag}-input", f"{tag}-output")
        self._regions = []
        try:
            for name, size in zip(self._names, (served.input_bytes, served.output_bytes), strict=True):
                self._regions.append(shared_memory.create_shared_memory_region(name, f"/{name}", size, create_only=True))
                client.register_system_shared_memory(name, f"/{name}", size, client_timeout=timeout_s)
        except Exception:
            self.close()
            raise
        self._input = served.input()
        self._input.set_shared_memory(self._names[0], served.input_bytes)
        output = grpcclient.InferRequestedOutput(served.output_name)
        output.set_shared_memory(self._names[1], served.output_bytes)
        self._outputs = [output]

    def run(self, blob: np.ndarray) -> np.ndarray:
        self._shm.set_shared_memory_region(self._regions[0], [blob])
        self._client.infer(self._model, [self._input], outputs=self._outputs, client_timeout=self._timeout)
        # A view of the region: consumed before the next request overwrites it.
        return self._shm.get_contents_as_numpy(self._regions[1], self._served.output_dtype,
                                               [1, *self._served.output_shape])

    def close(self) -> None:
        for name in self._names[: len(self._regions)]:
            with contextlib.suppress(Exception):  # the server may be gone; its registrations went with it
                self._client.unregister_system_shared_memory(name, client_timeout=self._timeout)
        for region in self._regions:
            self._shm.destroy_shared_memory_region(region)
        self._regions = []


class TritonEngine(SyncEngine):
    """The `triton` engine: rtmon's letterbox, the network on the server, rtmon's NMS."""

    def __init__(self, name: str, model: ModelRef, settings) -> None:
        self.class_names = dict(model.class_names)
        self._imgsz = settings.model.imgsz
        self._thresholds = Thresholds.of(settings.model)
        self._endpoint = Endpoint.parse(settings.triton.url)
        self._model = settings.triton.model
        self._shm = settings.triton.shm
        self._timeout = settings.triton.timeout_s
        self._client = None
        self._served: ServedModel | None = None
        self._transport: SocketTransport | SharedMemoryTransport | None = None
        self.info = EngineInfo(name, "Triton gRPC", "?", f"remote: {self._endpoint.address}", self._imgsz)

    def load(self) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        name, url, timeout = self.info.name, self._endpoint.url, self._timeout
        self._client = grpcclient.InferenceServerClient(self._endpoint.address)
        try:
            server = self._client.get_server_metadata(client_timeout=timeout)
        except InferenceServerException as exc:
            raise UserError(
                f"engine: {name}: cannot reach a Triton server at {url} ({one_line(exc, typed=False)}); "
                "start one with `rtmon serve` or set triton.url"
            ) from None
        try:
            metadata = self._client.get_model_metadata(self._model, client_timeout=timeout)
            ready = self._client.is_model_ready(self._model, client_timeout=timeout)
        except InferenceServerException as exc:
            raise UserError(f"engine: {name}: {url} does not serve model '{self._model}' ({one_line(exc, typed=False)}); set triton.model") from None
        if not ready:
            raise UserError(f"engine: {name}: model '{self._model}' at {url} is not ready")
        self._served = ServedModel.describe(metadata)
        self._served.check(self._model, self._imgsz, len(self.class_names))
        self._transport, notes = self._open_transport(self._served)
        for frame in warmup_frames():
            self.infer(frame)
        self.info = EngineInfo(
            name, f"Triton {server.version} over {self._transport.name}", self._served.precision,
            f"remote: {self._endpoint.address}", self._imgsz,
            (f"model '{self._model}' ({metadata.platform}) on Triton {server.version} at {url}",
             "latency includes the round trip to the server and its queue", *notes),
        )

    def _open_transport(self, served: ServedModel) -> tuple[SocketTransport | SharedMemoryTransport, list[str]]:
        from tritonclient.utils import InferenceServerException
        from tritonclient.utils.shared_memory import SharedMemoryException

        wanted = self._shm == "on" or (self._shm == "auto" and self._endpoint.is_local)
        if not wanted:
            return SocketTransport(self._client, self._model, served, self._timeout), []
        try:
            return SharedMemoryTransport(self._client, self._model, served, self._timeout), []
        except (InferenceServerException, SharedMemoryException) as exc:
            if self._shm == "on":
                raise UserError(
                    f"engine: {self.info.name}: system shared memory with {self._endpoint.url} failed ({one_line(exc, typed=False)}); "
                    "it needs the server on this machine, sharing /dev/shm (or set triton.shm=off)"
                ) from None
            why = f"system shared memory unavailable ({one_line(exc, typed=False)}): frames go over the socket"
            return SocketTransport(self._client, self._model, served, self._timeout), [why]

    def infer(self, frame: Frame) -> Result:
        from tritonclient.utils import InferenceServerException

        sw = Stopwatch()
        with sw("preprocess"):
            blob, box = preprocess_cpu(frame.image, self._imgsz, self._served.input_dtype)
        with sw("inference"):
            try:
                pred = self._transport.run(blob)
            except InferenceServerException as exc:
                raise ConnectionError(
                    f"{self.info.name}: Triton at {self._endpoint.url} did not answer ({one_line(exc, typed=False)})"
                ) from None
        with sw("postprocess"):
            detections = postprocess(torch.from_numpy(np.require(pred, requirements="W")), box, self._thresholds)
        return Result(self.info.name, frame, detections, sw.stages())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._client is not None:
            self._client.close()
            self._client = None
