#!/usr/bin/env bash
# On the GPU machine: rtmon's own measurements for the docs, packed into $OUT/<stage>.tar.gz.
#   bash scripts/device_verify.sh tests     # GPU tests + the official per-engine bench
#   bash scripts/device_verify.sh extra     # concurrent run, accuracy (eval), micro-batch bench
# Expects the wheels rtmon needs on PYTHONPATH (see ../shared/device/README.md) and the sample
# clip in .cache/rtmon (carried), so nothing is generated or downloaded there.
set -uo pipefail
stage=${1:?tests or extra}
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
res=/tmp/rtmon-results/$stage
rm -rf "$res" && mkdir -p "$res"
rt() { python3 -m rtmon "$@" --set paths.cache_dir=.cache/rtmon --set paths.engines_dir=/tmp/rtmon-engines; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$res/gpu.txt"
date -u +%FT%TZ > "$res/date.txt"
case "$stage" in
  tests)
    timeout 240 python3 -m pytest -m gpu -p no:cacheprovider -q ${PYTEST_K:+-k "$PYTEST_K"} tests/test_engines_gpu.py 2>&1 | grep -v "INVALID INDEX" > "$res/pytest-gpu.txt"
    tail -15 "$res/pytest-gpu.txt"
    engines=${ENGINES:-torch-fp32,torch-fp16-cpu,torch-graph-cpu,torch-fp16,torch-graph-sync,torch-graph,torch-graph-compiled,torch-compile,ort-cuda,ort-cuda-fp32,ort-cpu}
    echo "engines: $engines"
    timeout 330 python3 -m rtmon bench --model demo --source sample --engines "$engines" --frames 300 --warmup 30 --out "$res/bench" \
      --set paths.cache_dir=.cache/rtmon --set paths.engines_dir=/tmp/rtmon-engines 2>&1 | grep -v "INVALID INDEX" | tail -22
    ;;
  extra)
    rt bench --model demo --source sample --engines baseline,optimized --concurrent 20 --out "$res/concurrent" 2>&1 | tail -12
    rt eval --model demo --source sample --engines "${EVAL_ENGINES:-baseline,torch-fp16,torch-graph,ort-cuda,ort-cuda-fp32}" --out "$res/eval" 2>&1 | tail -15
    rt bench --model demo --source sample --engines "${BATCH_ENGINES:-torch-graph,ort-cuda}" --batch 32 --frames 1024 --warmup 64 --out "$res/batch32" 2>&1 | tail -12
    # head to head of the two fastest engines (bounded)
    timeout 150 python3 -m rtmon bench --model demo --source sample --engines torch-graph,torch-graph-compiled --frames 300 --warmup 30 \
      --out "$res/compiled" --set paths.cache_dir=.cache/rtmon --set paths.engines_dir=/tmp/rtmon-engines 2>&1 | tail -8
    ;;
esac
tar -C /tmp/rtmon-results -czf "$OUT/$stage.tar.gz" "$stage"
ls -la "$OUT"
