#!/usr/bin/env python3
"""Where one frame's time and a process's GPU memory go, on the GPU machine.

    python scripts/gpu_profile.py [--engine torch-graph-compiled] [--replays 400] [--out profile.json]

Two questions the single-stream report cannot answer by itself (issue 19's targets: P99 and
GPU memory no larger than the baseline's):

- **time**: the optimized engine's batch-1 plan is one CUDA graph (letterbox, network, NMS, the
  boxes' copy back). Each part is captured again as a graph of its own over the plan's static
  buffers and replayed `--replays` times, timed with CUDA events (median and P99 per replay);
  the whole plan and the frame's upload are timed the same way. The NMS graph is also timed for
  smaller candidate counts `k`, to show what the IoU matrix costs. torch.profiler's kernel
  table for the whole graph's replays comes with it.
- **memory**: in fresh processes, one recipe each, NVML's figure for the process after every
  step beside PyTorch's allocator reserved, so what lies outside the allocator (kernel modules,
  library handles, graph executables) is attributed to the step that loaded it: primitive
  kernels one library at a time, the baseline as ultralytics runs it, and the engine's load.

Every figure is measured here; the JSON and a markdown summary are written to `--out`
(and `--out` with `.md`). Needs a CUDA GPU: on a machine without one it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")
FRAME = (720, 1280, 3)


# --- memory: one recipe per fresh process ---------------------------------------------------------
def _mem_steps(recipe: str, engine_name: str, engines_dir: str, conn) -> None:
    import torch

    from rtmon import gpu

    steps: list[dict] = []

    def measure(label: str) -> None:
        torch.cuda.synchronize()
        nvml, reserved = gpu.process_memory_mib(), torch.cuda.memory_reserved() / 2**20
        steps.append({"step": label, "nvml_mib": nvml, "reserved_mib": reserved})

    dev = torch.device("cuda", 0)
    torch.zeros(1, device=dev)
    measure("CUDA context (one tiny tensor)")
    if recipe == "primitives":
        x32 = torch.randn(1, 64, 160, 160, device=dev)
        w32 = torch.randn(64, 64, 3, 3, device=dev)
        measure("two FP32 tensors")
        x16 = x32.half()
        measure("a cast to FP16")
        torch.nn.functional.conv2d(x32, w32, padding=1)
        measure("cuDNN convolution FP32")
        torch.nn.functional.conv2d(x16.contiguous(memory_format=torch.channels_last),
                                   w32.half().contiguous(memory_format=torch.channels_last), padding=1)
        measure("cuDNN convolution FP16 channels_last")
        a = torch.randn(1, 400, 64, device=dev, dtype=torch.float16)
        torch.bmm(a, a.transpose(1, 2))
        measure("cuBLAS bmm FP16")
        s = torch.randn(1, 8400, device=dev)
        s.topk(512, dim=1)
        measure("topk")
        f = torch.compile(lambda t: (t * 2 + 1).relu(), dynamic=False)
        f(x32)
        measure("a Triton kernel (torch.compile, pointwise)")
        g = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            torch.nn.functional.conv2d(x32, w32, padding=1)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(g, stream=stream):
            torch.nn.functional.conv2d(x32, w32, padding=1)
        g.replay()
        measure("a CUDA graph captured and replayed")
    elif recipe == "baseline":
        from ultralytics import YOLO

        from rtmon.models import demo_ref

        frames = _frames()
        model = YOLO(str(demo_ref().path))
        model.predict(frames[0], device=0, imgsz=640, rect=False, verbose=False)
        measure("ultralytics: model loaded, first predict")
        for f in frames * 3:
            model.predict(f, device=0, imgsz=640, rect=False, verbose=False)
        measure(f"after {3 * len(frames)} more predicts")
    else:
        from rtmon.config import load_settings
        from rtmon.engines import create
        from rtmon.models import resolve_model

        settings = load_settings(overrides={"paths.engines_dir": engines_dir})
        engine = create(engine_name, resolve_model("demo", Path(engines_dir)), settings)
        engine.prepare(False, [1], FRAME)
        engine.load()
        measure(f"{engine_name} loaded (batch-1 plan, one lane)")
        _run(engine, _frames() * 3)
        measure("after the frames")
        steps.append({"notes": list(engine.info.notes)})
        engine.close()
    conn.send(steps)
    conn.close()


def _frames(count: int = 24) -> list[np.ndarray]:
    from rtmon.scene import SAMPLE_SEED, render_scene

    return [image for image, _ in render_scene(SAMPLE_SEED, count * 3, stride=3)]


def _run(engine, images) -> None:
    from rtmon.core import Frame

    for i, image in enumerate(images):
        engine.collect(engine.submit([Frame(i, image, 0.0)]))


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(*args, child))
    p.start()
    child.close()
    try:
        out = parent.recv()
    except EOFError:
        out = {"error": f"the child exited with {p.exitcode} before answering"}
    p.join()
    return out


# --- time: the plan's parts, each a graph of its own ----------------------------------------------
def _time_parts(engine_name: str, engines_dir: str, replays: int, conn) -> None:
    import torch

    from rtmon.config import load_settings
    from rtmon.engines import create
    from rtmon.engines.gpu_common import CANDIDATES, capture, letterbox_batch
    from rtmon.engines.prepost import fixed_shape_nms
    from rtmon.models import resolve_model

    settings = load_settings(overrides={"paths.engines_dir": engines_dir})
    engine = create(engine_name, resolve_model("demo", Path(engines_dir)), settings)
    engine.prepare(False, [1], FRAME)
    engine.load()
    frames = _frames()
    _run(engine, frames)  # warm, and the plan's src holds a real frame
    plan = next(iter(engine._plans.values()))
    forward = engine._capturable_forward()
    stream = plan.stream
    out: dict = {"engine": engine_name, "gpu": torch.cuda.get_device_name(0), "replays": replays,
                 "torch": torch.__version__, "parts_ms": {}}

    def timed(label: str, fn) -> None:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
        with torch.cuda.stream(stream):
            for _ in range(20):
                fn()
            for s, e in zip(starts, ends, strict=True):
                s.record()
                fn()
                e.record()
        stream.synchronize()
        ms = np.array([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])
        out["parts_ms"][label] = {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
                                  "mean": float(ms.mean())}

    timed("whole plan (one graph: letterbox, network, NMS, boxes to the host)", plan.launch)
    host = torch.from_numpy(frames[0]).pin_memory()
    timed("upload of one 1280x720 frame (pinned host to device)", lambda: plan.src[0].copy_(host, non_blocking=True))
    lb_graph, x = capture(lambda: letterbox_batch(plan.src, engine._imgsz, engine.input_dtype), stream)
    timed("letterbox (graph)", lb_graph.replay)
    net_graph, pred = capture(lambda: forward(x), stream)
    timed("network (graph)", net_graph.replay)
    th = engine._thresholds
    for k in sorted({CANDIDATES, 256, 128}, reverse=True):
        nms_graph, _ = capture(lambda k=k: plan.out_host.copy_(fixed_shape_nms(pred, plan.box, th, k), non_blocking=True),
                               stream)
        timed(f"NMS k={k} and the boxes' copy (graph)" + (" (the engine's k)" if k == CANDIDATES else ""),
              nms_graph.replay)
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            with torch.cuda.stream(stream):
                for _ in range(50):
                    plan.launch()
            stream.synchronize()
        out["kernels_whole_graph"] = _table(prof, 30)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            with torch.cuda.stream(stream):
                for _ in range(50):
                    plan.out_host.copy_(fixed_shape_nms(pred, plan.box, th, CANDIDATES), non_blocking=True)
            stream.synchronize()
        out["kernels_nms_eager"] = _table(prof, 40)
    except Exception as err:  # the profile is a bonus; the event timings above stand without it
        out["kernels_error"] = f"{type(err).__name__}: {err}"
    engine.close()
    conn.send(out)
    conn.close()


def _table(prof, rows: int) -> str:
    """torch.profiler's kernel table, by GPU time (the key's name changed across torch releases)."""
    for key in ("device_time_total", "cuda_time_total"):
        try:
            return prof.key_averages().table(sort_by=key, row_limit=rows)
        except (AttributeError, KeyError, ValueError):
            continue
    return prof.key_averages().table(row_limit=rows)


def _markdown(report: dict) -> str:
    t = report["time"]
    lines = [f"# Where a frame's time and the GPU memory go — {t.get('gpu', '?')}", "",
             f"Engine `{t.get('engine')}`, batch 1, one lane, {t.get('replays')} replays per part, "
             f"torch {t.get('torch')}. Each part is a CUDA graph of its own over the plan's buffers, "
             "timed with CUDA events.", "", "| part | median ms | P99 ms |", "|---|---:|---:|"]
    for label, v in t.get("parts_ms", {}).items():
        lines.append(f"| {label} | {v['median']:.3f} | {v['p99']:.3f} |")
    for recipe, steps in report["memory"].items():
        lines += ["", f"## GPU memory, `{recipe}` (a fresh process)", "",
                  "| step | NVML MiB | allocator reserved MiB | outside the allocator MiB | step adds outside |",
                  "|---|---:|---:|---:|---:|"]
        if isinstance(steps, dict):
            lines.append(f"| {steps.get('error')} | | | | |")
            continue
        prev = None
        for s in steps:
            if "notes" in s:
                lines += [""] + [f"- {n}" for n in s["notes"]]
                continue
            outside = None if s["nvml_mib"] is None else s["nvml_mib"] - s["reserved_mib"]
            adds = "" if prev is None or outside is None else f"{outside - prev:+.0f}"
            nv = "n/a" if s["nvml_mib"] is None else f"{s['nvml_mib']:.0f}"
            lines.append(f"| {s['step']} | {nv} | {s['reserved_mib']:.0f} | "
                         f"{'n/a' if outside is None else f'{outside:.0f}'} | {adds} |")
            prev = outside
    for key in ("kernels_whole_graph", "kernels_nms_eager"):
        if key in t:
            lines += ["", f"## torch.profiler: {key.replace('_', ' ')}", "", "```", t[key], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="torch-graph-compiled")
    ap.add_argument("--replays", type=int, default=400)
    ap.add_argument("--engines-dir", default=str(Path(tempfile.gettempdir()) / "rtmon-engines"))
    ap.add_argument("--out", type=Path, default=Path("gpu-profile.json"))
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: gpu_profile needs an NVIDIA GPU with a working driver and a CUDA build of torch", file=sys.stderr)
        return 2
    if args.replays < 10:
        print("error: --replays must be at least 10", file=sys.stderr)
        return 2
    report = {"time": _in_child(_time_parts, args.engine, args.engines_dir, args.replays), "memory": {}}
    for recipe in ("primitives", "baseline", args.engine):
        report["memory"][recipe] = _in_child(_mem_steps, recipe, args.engine, args.engines_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
