# Sourced by scripts/start, scripts/test and scripts/demo: make sure .venv/ exists and is
# up to date with pyproject.toml, installing only when something changed (fast otherwise).
# On a machine with an NVIDIA driver it installs the GPU extra (onnxruntime-gpu, NVDEC);
# otherwise the CPU one; both with `serve` (PyTriton and tritonclient, for `rtmon serve` and the
# `triton` engine). Override with RTMON_EXTRAS=cpu,dev (or gpu,dev); the window extra is added
# as below.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${RTMON_EXTRAS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    RTMON_EXTRAS=gpu,dev,serve
  else
    RTMON_EXTRAS=cpu,dev,serve
  fi
fi
stamp=.venv/.rtmon-installed
# TensorRT for RTX (the trt-rtx engine): scripts/test asks for it (CI builds an engine ahead of
# time), scripts/start offers it on an RTX GPU (RTMON_TENSORRT_RTX=1); once installed it stays.
if [ "${RTMON_TENSORRT_RTX:-0}" = 1 ] || grep -q ',tensorrt-rtx' "$stamp" 2>/dev/null; then
  case ",$RTMON_EXTRAS," in *,tensorrt-rtx,*) ;; *) RTMON_EXTRAS="$RTMON_EXTRAS,tensorrt-rtx" ;; esac
fi
# The desktop window's extra (pygame-ce): scripts/test always asks for it (CI tests the window),
# scripts/start when there is a display (RTMON_WINDOW=1); once installed it stays installed.
case ",$RTMON_EXTRAS," in
  *,window,*) ;;
  *) if [ "${RTMON_WINDOW:-0}" = 1 ] || grep -q ',window$' "$stamp" 2>/dev/null; then RTMON_EXTRAS="$RTMON_EXTRAS,window"; fi ;;
esac
python_bin="${PYTHON:-python3}"
want="$(sha256sum < pyproject.toml | cut -c1-16)-$RTMON_EXTRAS"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv/ ($RTMON_EXTRAS; the first time takes a few minutes) ..." >&2
  [ -x .venv/bin/python ] || "$python_bin" -m venv .venv
  # torch and torchvision come from the package index together (ultralytics asks for both)
  .venv/bin/python -m pip install -q -e ".[$RTMON_EXTRAS]" 2>&1 | { grep -v "^WARNING: Location" >&2 || true; }
  echo "$want" > "$stamp"
fi
