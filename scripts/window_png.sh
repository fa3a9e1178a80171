#!/usr/bin/env bash
# docs/window.png from the real window: `rtmon --window --no-tui` on the sample clip, baseline
# left and ort-cpu right, in a private X server (Xvfb, 1920x1080: the window opens at 1536x432),
# captured with ImageMagick's `import` once the engines have run for SETTLE_S seconds.
# Needs Xvfb, xdotool and imagemagick (.ci/run installs them). Usage: scripts/window_png.sh [OUT]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/docs/window.png}")
settle_s=${SETTLE_S:-45}
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'kill "${monitor:-}" "${xvfb:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

Xvfb -displayfd 3 -screen 0 1920x1080x24 -nolisten tcp 3>"$work/display" >/dev/null 2>&1 &
xvfb=$!
for _ in $(seq 100); do [ -s "$work/display" ] && break; sleep 0.2; done  # Xvfb writes its number once it listens
export DISPLAY=":$(cat "$work/display")"

cd "$work"
YOLO_OFFLINE=1 PYTHONPATH="$root" "$python" -m rtmon --window --no-tui --source sample --engines baseline,ort-cpu \
  ${RTMON_SETS:-} 2>"$work/stderr.txt" &
monitor=$!
for _ in $(seq 240); do  # the engines load first (the ONNX export, on a first run)
  id=$(xdotool search --onlyvisible --classname '^rtmon$' 2>/dev/null | head -1 || true)
  [ -n "$id" ] && break
  kill -0 "$monitor" || { cat "$work/stderr.txt" >&2; exit 1; }
  sleep 1
done
[ -n "$id" ] || { echo "no rtmon window appeared" >&2; exit 1; }
sleep "$settle_s"
import -window "$id" "png:$work/window.png"
cp "$work/window.png" "$out.partial" && mv "$out.partial" "$out"  # whole or not at all
xdotool windowfocus --sync "$id" key q
wait "$monitor"
echo "wrote $out"
