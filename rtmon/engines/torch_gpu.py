"""PyTorch FP16 on the GPU: eager (`torch-fp16`), CUDA graph (`torch-graph`), `torch-compile`,
the Inductor-compiled network inside our own CUDA graph (`torch-graph-compiled`), and the
rungs of the optimization ladder that keep CPU pre/post-processing (`torch-fp16-cpu`,
`torch-graph-cpu`).

The same fused ultralytics network as the baseline, in half precision. At batch 1 yolo11n is
bound by kernel launches, not arithmetic, so the eager variant gains little; in `torch-graph`
the letterbox, the network and the candidate selection are recorded once as one CUDA graph
over static buffers and replayed with one launch (see `GpuEngine`). `torch-compile` lets
Inductor fuse kernels and capture graphs itself ("reduce-overhead"); its compile time is
reported in the engine's notes, and Inductor's cache lives in `engines/inductor/`.
`torch-graph-compiled` takes Inductor's fused kernels without its CUDA graph trees (which
fought our streams): the compiled network is recorded in our one graph like the eager one.

`channels_last` stores weights and the letterboxed input as NHWC, the layout cuDNN's FP16
tensor-core convolutions want; the conversion of the input is one kernel inside the graph.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from rtmon.core import Frame, Result, StageTimes
from rtmon.engines.gpu_common import GpuEngine, Runner, capture
from rtmon.engines.prepost import fixed_shape_nms, letterbox_cpu, postprocess
from rtmon.models import ModelRef, load_yolo

MODES = ("eager", "graph", "compile", "graph-compiled")
# Inductor's mode for `graph-compiled`: fused kernels, no CUDA graphs of its own.
INDUCTOR_MODE = "default"


def head_output(out) -> torch.Tensor:
    """ultralytics' Detect returns (decoded, raw maps) in eval mode; keep the decoded (B, 4+nc, N)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class CompiledNms:
    """`fixed_shape_nms` compiled by Inductor (static shapes), the eager function where the
    compilation fails: said once in the engine's notes, never a different answer."""

    def __init__(self, note) -> None:
        self._compiled = torch.compile(fixed_shape_nms, dynamic=False)
        self._note = note
        self._state = "new"  # new → compiled | eager

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self._state == "eager":
            return fixed_shape_nms(*args, **kwargs)
        if self._state == "compiled":
            return self._compiled(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self._compiled(*args, **kwargs)
        except Exception as e:  # Inductor's own errors; the eager NMS gives the same rows
            self._state = "eager"
            self._note(f"GPU NMS stays eager: Inductor could not compile it ({str(e).strip().splitlines()[0]})")
            return fixed_shape_nms(*args, **kwargs)
        self._state = "compiled"
        self._note(f"GPU NMS compiled by Inductor (batch 1): {time.perf_counter() - t0:.1f} s (cache: engines/inductor)")
        return out


class TorchGpuEngine(GpuEngine):
    backend = "pytorch"
    precision = "fp16"

    def __init__(self, name: str, model: ModelRef, settings, mode: str = "eager", pipelined: bool | None = None,
                 channels_last: bool = False, inductor_mode: str = INDUCTOR_MODE) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = mode
        self._channels_last = channels_last
        self._inductor_mode = inductor_mode
        self.backend = {"eager": "pytorch", "graph": "pytorch + CUDA graph", "compile": "torch.compile",
                        "graph-compiled": "Inductor kernels + CUDA graph"}[mode]
        super().__init__(name, model, settings, pipelined)
        self._net: torch.nn.Module | None = None
        self._forward: Runner | None = None  # the network's forward as graphs record it
        self._graph_constants: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._nms_compiled: CompiledNms | None = None

    def _capturable_forward(self) -> Runner | None:
        return self._forward_for_graph if self._mode in ("graph", "graph-compiled") else None

    def _forward_for_graph(self, x: torch.Tensor) -> torch.Tensor:
        """The forward, keeping the Detect head's anchor tensors alive for the graphs that read
        them: ultralytics replaces them whenever the input shape (batch included) changes, and
        a graph recorded before would then read freed memory (garbage boxes, seen on the GPU)."""
        net = self._network()
        out = head_output(self._graph_forward()(self._layout(x)))
        head = net.model[-1]
        anchors = getattr(head, "anchors", None)
        if isinstance(anchors, torch.Tensor):
            self._graph_constants[id(anchors)] = (anchors, head.strides)
        return out

    def _network(self) -> torch.nn.Module:
        if self._net is None:
            net = load_yolo(self.model_ref.path).model.fuse().eval()
            for p in net.parameters():
                p.requires_grad_(False)
            net = net.to(self._device, torch.float16)
            self._net = net.to(memory_format=torch.channels_last) if self._channels_last else net
            self._measure("weights on the GPU")
        return self._net

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def _graph_forward(self) -> Runner:
        """The module the graphs record: the network itself, or its Inductor compilation
        (compiled and warmed up here, on the current stream, so its time is reported apart)."""
        if self._forward is None:
            net = self._network()
            if self._mode != "graph-compiled":
                self._forward = net
            else:
                self._inductor_cache()
                # One static-shape compilation per batch size, two for the first: at dynamo's
                # default limit (8) the larger sizes of a micro-batch sweep or of `rtmon serve` ran
                # eager kernels inside the graph (the H100 serve run of 2026-11-22 logged it).
                torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
                compiled = torch.compile(net, mode=self._inductor_mode, dynamic=False, fullgraph=False)
                x = self._layout(self._input_like(1))
                t0 = time.perf_counter()
                for _ in range(2):  # the second call recompiles for the cached anchors
                    compiled(x)
                torch.cuda.current_stream().synchronize()
                self.note(f"Inductor {self._inductor_mode} compile: {time.perf_counter() - t0:.1f} s "
                          "(cache: engines/inductor)")
                self._measure("Inductor kernels compiled and run")
                self._forward = compiled
        return self._forward

    def _plan_nms(self, batch: int):
        """`graph-compiled`, batch 1: the NMS compiled by Inductor too. Its chains of small
        element-wise kernels fuse: 0.263 → 0.125 ms a frame on the H200, the same rows
        (scripts/nms_probe.py, docs/benchmarks/h200-2026-12-04/nms-probe/). Larger batches stay
        eager: Inductor (torch 2.11) cannot compile them ("NYI TritonSplitDimKernel reductions",
        the per-image cumulative sum beside a reduction)."""
        if self._mode != "graph-compiled" or batch != 1:
            return fixed_shape_nms
        if self._nms_compiled is None:
            self._inductor_cache()
            self._nms_compiled = CompiledNms(self.note)
        return self._nms_compiled

    def _inductor_cache(self) -> None:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((self._engines_dir / "inductor").resolve()))

    def _build(self, batch: int) -> Runner:
        net = self._network()
        if self._mode == "eager":
            return lambda x: head_output(net(self._layout(x)))
        if self._mode in ("graph", "graph-compiled"):
            static_in = self._input_like(batch)
            graph, static_out = capture(lambda: self._forward_for_graph(static_in), torch.cuda.current_stream())
            return replay_with(graph, static_in, static_out)
        return self._compiled(net, batch)

    def _input_like(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 3, self._imgsz, self._imgsz, dtype=self.input_dtype, device=self._device)

    def _compiled(self, net: torch.nn.Module, batch: int) -> Runner:
        self._inductor_cache()
        compiled = torch.compile(net, mode="reduce-overhead", dynamic=False, fullgraph=False)
        x = self._input_like(batch)
        t0 = time.perf_counter()
        for _ in range(3):  # the first call compiles, the next ones record the CUDA graph
            head_output(compiled(x))
        torch.cuda.synchronize()
        self.note(f"torch.compile batch {batch}: {time.perf_counter() - t0:.1f} s (Inductor cache: engines/inductor)")
        return lambda x: head_output(compiled(x))

    def _release(self) -> None:
        self._net = self._forward = None
        self._graph_constants.clear()


def replay_with(graph: torch.cuda.CUDAGraph, static_in: torch.Tensor, static_out: torch.Tensor) -> Runner:
    """A runner over a captured network: copies its argument into the static input, replays,
    and returns the static output (overwritten by the next call, so callers consume it first)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out

    return run


class TorchCpuPrePostEngine(TorchGpuEngine):
    """The FP16 network on the GPU (eager or CUDA graph) behind CPU pre/post-processing, one frame
    at a time, as a straightforward script would write it: rungs of the optimization ladder
    that show what the network alone gains before pre/post-processing moves to the GPU."""

    pipelined = False
    uses_plans = False

    def infer(self, frame: Frame) -> Result:
        with torch.cuda.stream(self._stream):
            t0 = time.perf_counter()
            # As ultralytics does it: letterbox and channel order on the CPU, the uint8 image
            # uploaded, then scaled to [0, 1] in FP16 on the GPU.
            padded, box = letterbox_cpu(np.asarray(frame.image), self._imgsz)
            chw = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1)[None])
            x = torch.from_numpy(chw).to(self._device).half() / 255
            t1 = time.perf_counter()
            pred = self.runner(1)(x).cpu()  # waits for the network
            t2 = time.perf_counter()
            detections = postprocess(pred, box, self._thresholds)
            done = time.perf_counter()
        stages = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (done - t2) * 1e3)
        return Result(self.info.name, frame, detections, stages, done)

    def submit(self, frames: list[Frame]) -> tuple[None, list[Frame], list[Result]]:
        # One frame at a time, done by the time this returns: that is what this rung shows.
        return None, frames, [self.infer(f) for f in frames]
