#!/usr/bin/env bash
# On the GPU machine: the GPU engine tests (parity with the trained demo detector), then one
# `rtmon bench` over the optimization ladder (batch 1), one at micro-batch 32, and the
# network-only timings the end-to-end figures are compared with. Everything lands under $OUT
# (default ./recordings/gpu-bench); the compact table is printed last.
#   usage: bash scripts/gpu_bench_device.sh
set -u -o pipefail
OUT=${OUT:-recordings/gpu-bench}
mkdir -p "$OUT"
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 RTMON_BENCH_OUT="$OUT"
FRAMES=${FRAMES:-600}
LADDER=${LADDER:-torch-fp32,torch-fp16-cpu,torch-graph-cpu,torch-fp16,torch-graph-sync,torch-graph,torch-compile,ort-cuda,ort-cuda-fp32}
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; } | tee "$OUT/device.txt"

# -X faulthandler: a crash names the test and the Python line it died in.
timeout "${TEST_TIMEOUT:-300}" python3 -X faulthandler -m pytest -v -s -m gpu tests/test_engines_gpu.py \
  -p no:cacheprovider > "$OUT/pytest.txt" 2>&1
echo "pytest exit code $?" | tee -a "$OUT/pytest.txt"
grep -E "^parity|^memory|PASSED|FAILED|SKIPPED|ERROR|passed|failed|Fatal|Current thread|  File " "$OUT/pytest.txt" | tail -60

python3 -m rtmon bench -e "$LADDER" --model demo -n "$FRAMES" --out "$OUT/bench-b1" 2>&1 | tail -20
python3 -m rtmon bench -e torch-graph,ort-cuda --model demo -n 640 --batch 32 --out "$OUT/bench-b32" 2>&1 | tail -8

python3 - <<'PY'
"""Network alone, on a device tensor: latency (synchronized per call) and back-to-back throughput."""
import json, os, time
from pathlib import Path

import numpy as np
import torch

from rtmon.config import load_settings
from rtmon.engines import create, unavailable_reason
from rtmon.models import resolve_model

out = Path(os.environ["RTMON_BENCH_OUT"])
settings = load_settings()
ref = resolve_model("demo", Path(settings.paths.engines_dir))
rows = {}
for name in ("torch-graph", "torch-compile", "ort-cuda"):
    if unavailable_reason(name):
        continue
    engine = create(name, ref, settings)
    engine.load()
    run = engine.runner(1)
    x = torch.rand(1, 3, 640, 640, device="cuda").to(engine.input_dtype)
    with torch.cuda.stream(engine._stream):
        for _ in range(50):
            run(x)
        lat = []
        for _ in range(500):
            torch.cuda.synchronize()
            t = time.perf_counter()
            run(x)
            torch.cuda.synchronize()
            lat.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        for _ in range(500):
            run(x)
        torch.cuda.synchronize()
        fps = 500 / (time.perf_counter() - t)
    rows[name] = {"net_mean_ms": float(np.mean(lat)), "net_p99_ms": float(np.percentile(lat, 99)), "net_fps": fps}
    engine.close()
(out / "net-only.json").write_text(json.dumps(rows, indent=1))

def engines(path):
    f = out / path / "bench.json"
    return {e["name"]: e for e in json.loads(f.read_text())["engines"]} if f.is_file() else {}

b1, b32 = engines("bench-b1"), engines("bench-b32")
base = b1.get("torch-fp32")
print("\n| engine | FPS | mean ms | p99 ms | pre/infer/post ms | GPU MiB | x baseline | net FPS | e2e/net FPS |")
print("|---|---|---|---|---|---|---|---|---|")
for name, e in b1.items():
    lat, st, net = e["latency_ms"], e["stages_ms"], rows.get(name, {})
    ratio = f"{e['fps'] / net['net_fps']:.2f}" if net else "-"
    print(f"| {name} | {e['fps']:.0f} | {lat['mean']:.2f} | {lat['p99']:.2f} | {st['preprocess']:.2f}/{st['inference']:.2f}/"
          f"{st['postprocess']:.2f} | {e['gpu_mem_mib'] or 0:.0f} | {e['fps'] / base['fps'] if base else 0:.2f} | "
          f"{net.get('net_fps', 0):.0f} | {ratio} |")
for name, e in b32.items():
    print(f"batch 32 {name}: {e['fps']:.0f} frames/s, latency mean {e['latency_ms']['mean']:.1f} ms p99 {e['latency_ms']['p99']:.1f} ms, GPU {e['gpu_mem_mib'] or 0:.0f} MiB")
print("net only:", json.dumps({k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in rows.items()}))
PY
