#!/usr/bin/env python3
"""How the GPU NMS's candidate selection could cost less: time `fixed_shape_nms` (rtmon's own, as
the engines' graphs run it) with its top-k selection and with alternatives, each as a CUDA graph
of its own, timed with CUDA events.

    python scripts/nms_probe.py [--out DIR] [--replays 400]

Variants: the engine's `topk` over the anchors' best-class scores; a stable descending `sort` of
all anchors, first k kept (the rows' own order decides ties, as torchvision's NMS does); and the
engine's selection with fewer candidates (k = 256, 128); and the whole NMS compiled by Inductor. The head output is random (its values do
not change which kernels run), batch 1 and batch 32. Writes nms-probe.json and prints a table;
exit 2 without a CUDA GPU. A probe for the next change, not a report of the engine.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmon.engines import prepost

ANCHORS, CLASSES = 8400, 80


def sort_candidates(prediction: torch.Tensor, k: int) -> torch.Tensor:
    """`prepost.top_candidates` with a stable sort of every anchor instead of top-k."""
    pred = prediction.float()
    scores, classes = pred[:, 4:].max(dim=1)
    top, index = scores.sort(dim=1, descending=True, stable=True)
    top, index = top[:, :k], index[:, :k]
    boxes = pred[:, :4].gather(2, index.unsqueeze(1).expand(-1, 4, -1)).transpose(1, 2)
    labels = classes.gather(1, index).to(pred.dtype)
    return torch.cat((prepost.cxcywh_to_xyxy(boxes), top.unsqueeze(2), labels.unsqueeze(2)), dim=2)


def timed(fn, replays: int) -> dict[str, float]:
    """Median and P99 ms of one replay of `fn` captured as a CUDA graph."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return {"median_ms": times[len(times) // 2], "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for nms-probe.json")
    parser.add_argument("--replays", type=int, default=400, help="graph replays per variant")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU here: the probe times CUDA graphs", file=sys.stderr)
        return 2
    box = prepost.Letterbox.fit(1280, 720, 640)  # the sample clip's frames
    rows = []
    original = prepost.top_candidates
    for batch in (1, 32):
        torch.manual_seed(0)
        pred = torch.rand(batch, 4 + CLASSES, ANCHORS, device="cuda", dtype=torch.float16)
        pred[:, :4] *= 640
        for name, select, k in (("topk (the engine's)", original, 512), ("stable sort, first k", sort_candidates, 512),
                                ("topk", original, 256), ("topk", original, 128)):
            prepost.top_candidates = select
            try:
                sel = timed(functools.partial(select, pred, k), args.replays)
                whole = timed(functools.partial(prepost.fixed_shape_nms, pred, box, k=k), args.replays)
            finally:
                prepost.top_candidates = original
            rows.append({"batch": batch, "selection": name, "k": k, "selection_ms": sel, "nms_ms": whole})
            print(f"batch {batch:2d}  {name:22s} k={k:3d}  selection {sel['median_ms']:.3f} ms (P99 "
                  f"{sel['p99_ms']:.3f})  whole NMS {whole['median_ms']:.3f} ms (P99 {whole['p99_ms']:.3f})")
        # The whole NMS compiled by Inductor (its element-wise chains fused), same graph capture.
        compiled = torch.compile(prepost.fixed_shape_nms, dynamic=False)
        try:
            eager, fused = prepost.fixed_shape_nms(pred, box, k=512), compiled(pred, box, k=512)
        except Exception as e:  # Inductor's own errors: the probe records which
            reason = str(e).strip().splitlines()[0]
            rows.append({"batch": batch, "selection": "topk, NMS compiled by Inductor", "k": 512, "failed": reason})
            print(f"batch {batch:2d}  NMS compiled (Inductor) k=512  failed: {reason}")
            continue
        same = bool(torch.equal(eager[:, -1], fused[:, -1])) and float((eager - fused).abs().max()) < 1e-3
        whole = timed(functools.partial(compiled, pred, box, k=512), args.replays)
        rows.append({"batch": batch, "selection": "topk, NMS compiled by Inductor", "k": 512, "nms_ms": whole,
                     "same_as_eager": same})
        print(f"batch {batch:2d}  NMS compiled (Inductor) k=512  whole NMS {whole['median_ms']:.3f} ms "
              f"(P99 {whole['p99_ms']:.3f})  same rows as eager: {same}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "replays": args.replays, "rows": rows}
    (args.out / "nms-probe.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
