#!/usr/bin/env bash
# On the GPU machine: `rtmon serve` under 1..32 concurrent client streams, next to the same
# engine in process, with perf_analyzer as a second opinion (rtmon.triton.loadtest), after the
# GPU test of what a GPU engine serves. Everything lands in $OUT/triton (default
# recordings/triton): triton.json, triton.md, triton.png, device.txt, pytest.txt, loadtest.log.
#   usage: OUT=/some/dir bash scripts/triton_device.sh
#   knobs: PYTEST (1; 0 skips the GPU test), LOADTEST_S (450, the load test's time limit), ENGINE (default optimized), STREAMS (1,2,4,8,16,32), ROW_SECONDS (2), MAX_BATCH (16)
set -u -o pipefail
OUT=${OUT:-recordings}/triton
mkdir -p "$OUT"
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
PY=python3
# PyTriton's model process (Triton's Python backend stub) runs this Python's own environment and
# ignores PYTHONPATH; it needs numpy < 2 and pyzmq there. When they only come from PYTHONPATH,
# run from a venv that sees the system's packages and lists the PYTHONPATH folders in a .pth.
if ! python3 -I -c "import numpy, zmq, sys; sys.exit(int(numpy.__version__.split('.')[0]) >= 2)" 2>/dev/null; then
  VENV=${TMPDIR:-/tmp}/rtmon-serve-venv
  python3 -m venv --system-site-packages --without-pip "$VENV"
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # The PYTHONPATH folders first (numpy < 2 there), then this python3's own packages: when it
  # is itself a venv (torch in /opt/torch/.venv), a venv made from it only sees the base's.
  { echo "${PYTHONPATH:-}" | tr ':' '\n' | grep -v '^$'
    python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; } > "$SITE/rtmon-pythonpath.pth"
  PY="$VENV/bin/python"
  echo "running from $VENV (PYTHONPATH folders listed in $SITE/rtmon-pythonpath.pth)"
fi
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  date -u
  "$PY" - <<'PY'
from importlib.metadata import version
for d in ("nvidia-pytriton", "tritonclient", "perf-analyzer", "numpy", "torch", "grpcio", "protobuf"):
    try:
        print(d, version(d))
    except Exception as exc:
        print(d, "missing", exc)
PY
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

if [ "${PYTEST:-1}" = 1 ]; then
timeout 100 "$PY" -m pytest -v -m gpu tests/test_triton.py -p no:cacheprovider > "$OUT/pytest.txt" 2>&1
echo "pytest exit code $?" | tee -a "$OUT/pytest.txt"
grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed" "$OUT/pytest.txt" | tail -8
fi

timeout "${LOADTEST_S:-450}" "$PY" -m rtmon loadtest --out "$OUT" --engine "${ENGINE:-optimized}" --model demo \
  --streams "${STREAMS:-1,2,4,8,16,32}" --seconds "${ROW_SECONDS:-2}" --warmup 1 \
  --set "serve.max_batch=${MAX_BATCH:-16}" 2>&1 | tee "$OUT/loadtest.log"
echo "loadtest exit code ${PIPESTATUS[0]}" | tee -a "$OUT/loadtest.log"
ps -eo pid,cmd | grep -E "tritonserver|triton_python_backend_stub|rtmon serve" | grep -v grep \
  && echo "WARNING: Triton processes left behind" || echo "no Triton process left behind"
