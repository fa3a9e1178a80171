"""PyTorch FP16 on the GPU: eager (`torch-fp16`), CUDA graph (`torch-graph`), `torch-compile`.

The same fused ultralytics network as the baseline, in half precision, behind the shared GPU
pre/post-processing of `GpuEngine`. At batch 1 yolo11n is bound by kernel launches, not
arithmetic, so the eager variant gains little; the graph variant records the whole forward
once over static buffers and replays it with one launch. `torch-compile` lets Inductor fuse
kernels and capture graphs itself ("reduce-overhead"); its compile time is reported in the
engine's notes, and Inductor's cache lives in `engines/inductor/`, so the next start is faster.
"""

from __future__ import annotations

import os
import time

import torch

from rtmon.engines.gpu_common import GpuEngine, Runner
from rtmon.models import ModelRef, load_yolo

MODES = ("eager", "graph", "compile")


def head_output(out) -> torch.Tensor:
    """ultralytics' Detect returns (decoded, raw maps) in eval mode; keep the decoded (B, 4+nc, N)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class TorchGpuEngine(GpuEngine):
    backend = "pytorch"
    precision = "fp16"

    def __init__(self, name: str, model: ModelRef, settings, mode: str = "eager") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = mode
        self.backend = {"eager": "pytorch", "graph": "pytorch + CUDA graph", "compile": "torch.compile"}[mode]
        super().__init__(name, model, settings)
        self._net: torch.nn.Module | None = None

    def _network(self) -> torch.nn.Module:
        if self._net is None:
            net = load_yolo(self.model_ref.path).model.fuse().eval()
            for p in net.parameters():
                p.requires_grad_(False)
            self._net = net.to(self._device, torch.float16)
        return self._net

    def _build(self, batch: int) -> Runner:
        net = self._network()
        if self._mode == "eager":
            return lambda x: head_output(net(x))
        if self._mode == "graph":
            return capture_graph(lambda x: head_output(net(x)), self._input_like(batch))
        return self._compiled(net, batch)

    def _input_like(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 3, self._imgsz, self._imgsz, dtype=self.input_dtype, device=self._device)

    def _compiled(self, net: torch.nn.Module, batch: int) -> Runner:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((self._engines_dir / "inductor").resolve()))
        compiled = torch.compile(net, mode="reduce-overhead", dynamic=False, fullgraph=False)
        x = self._input_like(batch)
        t0 = time.perf_counter()
        for _ in range(3):  # the first call compiles, the next ones record the CUDA graph
            head_output(compiled(x))
        torch.cuda.synchronize()
        self.note(f"torch.compile batch {batch}: {time.perf_counter() - t0:.1f} s (Inductor cache: engines/inductor)")
        return lambda x: head_output(compiled(x))

    def _release(self) -> None:
        self._net = None


def capture_graph(forward: Runner, static_in: torch.Tensor) -> Runner:
    """`forward` recorded as a CUDA graph over `static_in`; the returned runner copies its
    argument into the static input, replays, and returns the static output (overwritten by
    the next call, so callers consume it first)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # let cuDNN pick its algorithms before they are frozen in the graph
            forward(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_in)

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out

    return run
