#!/usr/bin/env bash
# On the GPU machine: the GPU engine tests, then network-only vs end-to-end timings of every
# GPU engine, micro-batch throughput, and CPU vs NVDEC decoding. Writes gpu-bench.json and
# gpu-bench.md under $OUT (default ./recordings/gpu-bench) and prints the table last.
#   usage: bash scripts/gpu_bench_device.sh [clip.mp4]   (a 1280x720 H.264 file for the decode rows)
set -u
OUT=${OUT:-recordings/gpu-bench}
mkdir -p "$OUT"
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 RTMON_BENCH_OUT="$OUT" RTMON_BENCH_CLIP="${1:-}"
python3 -m pytest -q -m gpu tests/test_engines_gpu.py -p no:cacheprovider 2>&1 | tail -25 | tee "$OUT/pytest.txt"
python3 - <<'PY'
import json, os, statistics, time
from pathlib import Path

import cv2
import numpy as np
import torch

from rtmon.config import load_settings
from rtmon.engines import SPECS, create, unavailable_reason
from rtmon.engines.base import Frame
from rtmon.models import untrained_ref

out = Path(os.environ["RTMON_BENCH_OUT"])
engines_dir = out / "engines"
ref = untrained_ref("yolo11n.yaml", engines_dir)
import ultralytics
assets = Path(ultralytics.__file__).parent / "assets"
image = cv2.resize(cv2.imread(str(assets / "zidane.jpg")), (1280, 720))
N = 300


def pct(values, q):
    return float(np.percentile(values, q))


def settings(batch=1):
    return load_settings(overrides={"paths.engines_dir": str(engines_dir), "engines.batch": batch})


def used_mib():
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


rows, skipped = [], {}
names = ["torch-fp32", "torch-fp16", "torch-graph", "torch-compile", "ort-cuda", "ort-cuda-fp32", "ort-trt", "trt"]
for name in names:
    why = unavailable_reason(name)
    if why:
        skipped[name] = why
        continue
    torch.cuda.empty_cache()
    before = used_mib()
    engine = create(name, ref, settings())
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    e2e = []
    for i in range(N):
        frame = Frame(i, image, time.perf_counter())
        result = engine.infer(frame)
        e2e.append(result.latency_ms)
    mem = used_mib() - before
    row = {"engine": name, "load_s": round(load_s, 1), "e2e_mean_ms": statistics.fmean(e2e),
           "e2e_p50_ms": pct(e2e, 50), "e2e_p99_ms": pct(e2e, 99), "fps_e2e": 1e3 / statistics.fmean(e2e),
           "mem_mib": round(mem), "notes": list(engine.info.notes)}
    if hasattr(engine, "runner"):
        x = torch.rand(1, 3, 640, 640, device="cuda").to(engine.input_dtype)
        run = engine.runner(1)
        with torch.cuda.stream(engine._stream):
            for _ in range(20):
                run(x)
            net = []
            for _ in range(N):
                torch.cuda.synchronize()
                t = time.perf_counter()
                run(x)
                torch.cuda.synchronize()
                net.append((time.perf_counter() - t) * 1e3)
        row.update(net_mean_ms=statistics.fmean(net), net_p99_ms=pct(net, 99))
        row["e2e_over_net"] = row["e2e_mean_ms"] / row["net_mean_ms"]
        frames = [Frame(i, image, 0.0) for i in range(N)]
        t = time.perf_counter()
        n = sum(1 for _ in engine.infer_stream(frames))
        row["fps_stream"] = n / (time.perf_counter() - t)
    engine.close()
    del engine
    rows.append(row)
    print(json.dumps(row), flush=True)

base_fps = next(r["fps_e2e"] for r in rows if r["engine"] == "torch-fp32")
for r in rows:
    r["speedup_e2e"] = r["fps_e2e"] / base_fps

batch_rows = []
for name in ("torch-graph", "ort-cuda"):
    if name in skipped:
        continue
    for batch in (8, 32):
        engine = create(name, ref, settings(batch))
        engine.load()
        frames = [Frame(i, image, 0.0) for i in range(batch)]
        for _ in range(3):
            engine.infer_batch(frames)
        torch.cuda.synchronize()
        reps = max(1, 600 // batch)
        t = time.perf_counter()
        for _ in range(reps):
            engine.infer_batch(frames)
        fps = reps * batch / (time.perf_counter() - t)
        # the same with frames already on the device (NVDEC-decoded): no upload
        dev = [Frame(i, torch.from_numpy(image).cuda(), 0.0) for i in range(batch)]
        engine.infer_batch(dev)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            engine.infer_batch(dev)
        fps_dev = reps * batch / (time.perf_counter() - t)
        batch_rows.append({"engine": name, "batch": batch, "fps_host_frames": fps, "fps_device_frames": fps_dev})
        print(json.dumps(batch_rows[-1]), flush=True)
        engine.close()

decode = {}
clip = os.environ.get("RTMON_BENCH_CLIP")
if clip and Path(clip).is_file():
    cap = cv2.VideoCapture(clip)
    t = time.perf_counter(); n = 0
    while cap.read()[0]:
        n += 1
    decode["cpu_opencv_fps"] = n / (time.perf_counter() - t)
    from rtmon.nvdec import nvdec_unavailable_reason, open_nvdec
    why = nvdec_unavailable_reason()
    if why:
        decode["nvdec"] = why
    else:
        for run_no in range(2):  # the first run includes NVDEC's session warm-up
            t = time.perf_counter(); n = 0
            for _, f in open_nvdec(clip):
                n += 1
            torch.cuda.synchronize()
            decode[f"nvdec_fps_run{run_no + 1}"] = n / (time.perf_counter() - t)
        best = next((r["engine"] for r in sorted(rows, key=lambda r: -r.get("fps_stream", 0)) if "fps_stream" in r), None)
        if best:
            engine = create(best, ref, settings()); engine.load()
            def cv_frames():
                cap = cv2.VideoCapture(clip); i = 0
                while True:
                    ok, img = cap.read()
                    if not ok:
                        return
                    yield Frame(i, img, time.perf_counter()); i += 1
            def nv_frames():
                for i, f in open_nvdec(clip):
                    yield Frame(i, f, time.perf_counter())
            for label, gen in (("file_cpu_decode+" + best, cv_frames), ("file_nvdec+" + best, nv_frames)):
                t = time.perf_counter()
                n = sum(1 for _ in engine.infer_stream(gen()))
                decode[label + "_fps"] = n / (time.perf_counter() - t)
            engine.close()
    print(json.dumps(decode), flush=True)

order = [r["engine"] for r in sorted(rows, key=lambda r: r["e2e_mean_ms"]) if r["engine"] != "torch-fp32"]
report = {"gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "torch": torch.__version__, "model": ref.label, "frame": "1280x720 -> 640, batch 1",
          "rows": rows, "batch": batch_rows, "decode": decode, "skipped": skipped, "measured_order": order}
(out / "gpu-bench.json").write_text(json.dumps(report, indent=1))
lines = [f"# GPU engines — {report['gpu']}, {report['date']}, torch {report['torch']}, {ref.label}", "",
         "| engine | net mean ms | net p99 ms | e2e mean ms | e2e p99 ms | e2e/net | FPS e2e | FPS stream | × baseline | mem MiB | load s |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append("| {engine} | {a} | {b} | {e2e_mean_ms:.2f} | {e2e_p99_ms:.2f} | {c} | {fps_e2e:.0f} | {d} | {speedup_e2e:.1f} | {mem_mib} | {load_s} |".format(
        a=f"{r['net_mean_ms']:.2f}" if "net_mean_ms" in r else "-", b=f"{r['net_p99_ms']:.2f}" if "net_p99_ms" in r else "-",
        c=f"{r['e2e_over_net']:.2f}" if "e2e_over_net" in r else "-", d=f"{r['fps_stream']:.0f}" if "fps_stream" in r else "-", **r))
lines += ["", "| engine | batch | frames/s (host frames) | frames/s (device frames) |", "|---|---|---|---|"]
lines += [f"| {b['engine']} | {b['batch']} | {b['fps_host_frames']:.0f} | {b['fps_device_frames']:.0f} |" for b in batch_rows]
lines += ["", "decode: " + json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in decode.items()}),
          "skipped: " + json.dumps(skipped), "measured order (fastest e2e first): " + ", ".join(order)]
for r in rows:
    if r["notes"]:
        lines.append(f"notes {r['engine']}: {'; '.join(r['notes'])}")
(out / "gpu-bench.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
