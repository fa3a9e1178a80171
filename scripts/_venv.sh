# Sourced by scripts/start, scripts/test and scripts/demo: make sure .venv/ exists and holds what
# the caller needs, installing only when something is missing or pyproject.toml changed.
#
# What gets installed: the runtime extra of this machine (gpu: onnxruntime-gpu and NVDEC when
# an NVIDIA driver answers, else cpu: onnxruntime), plus the extras the caller asks for in
# RTMON_NEEDS (comma-separated): scripts/start asks for nothing more (the monitor), or `window`
# when there is a display; scripts/test asks for dev,serve,window,tensorrt-rtx (everything the
# tests use: pytest, PyTriton — which pins numpy < 2 —, pygame-ce, TensorRT-RTX).
# RTMON_EXTRAS replaces the whole list; RTMON_TENSORRT_RTX=1 adds the trt-rtx engine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${RTMON_EXTRAS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    RTMON_EXTRAS=gpu
  else
    RTMON_EXTRAS=cpu
  fi
  [ -n "${RTMON_NEEDS:-}" ] && RTMON_EXTRAS="$RTMON_EXTRAS,$RTMON_NEEDS"
  [ "${RTMON_TENSORRT_RTX:-0}" = 1 ] && RTMON_EXTRAS="$RTMON_EXTRAS,tensorrt-rtx"
fi
stamp=.venv/.rtmon-installed  # "<pyproject hash> <extras installed>"
project="$(sha256sum < pyproject.toml | cut -c1-16)"
{ [ -f "$stamp" ] && read -r have_project have_extras < "$stamp"; } || { have_project=""; have_extras=""; }
# Extras installed before stay installed; install when pyproject.toml changed or one is missing.
all_extras="$(printf '%s\n' ${have_extras//,/ } ${RTMON_EXTRAS//,/ } | sort -u | paste -sd, -)"
missing=""
for extra in ${RTMON_EXTRAS//,/ }; do
  case ",$have_extras," in *",$extra,"*) ;; *) missing="$missing $extra" ;; esac
done
if [ ! -x .venv/bin/python ] || [ "$have_project" != "$project" ] || [ -n "$missing" ]; then
  echo "setting up .venv/ ($all_extras; the first time takes a few minutes) ..." >&2
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # torch and torchvision come from the package index together (ultralytics asks for both)
  .venv/bin/python -m pip install -q -e ".[$all_extras]" 2>&1 | { grep -v "^WARNING: Location" >&2 || true; }
  echo "$project $all_extras" > "$stamp"
fi
