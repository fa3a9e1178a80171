#!/usr/bin/env bash
# On the GPU machine: rtmon's own measurements for the docs, in stages that each fit one call.
# Every result is written by rtmon itself and packed into $OUT/<stage>.tar.gz.
#
#   bash scripts/device_run.sh a   # doctor --json, GPU tests, bench single-stream (with the ladder's rungs)
#   bash scripts/device_run.sh b   # bench offline (micro-batch sweep), concurrent (the live view's truth)
#   bash scripts/device_run.sh c   # demo recording, multi-stream capacity, a 16-stream mosaic
#   bash scripts/device_run.sh d   # Triton: rtmon serve + client streams + perf_analyzer
#   bash scripts/device_run.sh e   # multi-stream capacity and the 16-stream mosaic (again)
#   bash scripts/device_run.sh f   # bench --concurrent under NVIDIA MPS, when MPS starts here
#   bash scripts/device_run.sh y   # single-stream (baseline, optimized, torch-graph, null + the plain
#                                  # ultralytics reference), eval parity, offline sweep, multi-stream capacity;
#                                  # the results are packed after every step, so a cut run still returns them
#   bash scripts/device_run.sh z   # doctor, py-spy over the baseline's bench and its plain reference,
#                                  # the yardstick's factors, single-stream of the yardstick issue (+ null)
#   bash scripts/device_run.sh r   # doctor (JSON and text), trt-rtx on this GPU (its one-line refusal), the
#                                  # yardstick issue's single-stream (baseline, ultralytics-ort, optimized,
#                                  # ort-cuda, null; references alternating with their engines), eval parity
#   bash scripts/device_run.sh q   # the baseline's hand-over: the yardstick issue's single-stream for the baseline
#                                  # without and with the main process's spin around a due answer (receive_spin_us)
#   bash scripts/device_run.sh t   # the yardstick issue's single-stream report (baseline, ultralytics-ort, optimized,
#                                  # ort-cuda, null) at the defaults, eval parity, then the same baseline + null
#                                  # with engine.receive_spin_us = AB_SPIN (default 0: never spin; larger than the
#                                  # latency: awake for the whole wait)
#                                  # (AB=0: not the latter)
#   bash scripts/device_run.sh h   # how the main process should wait for an answer: scripts/handover_probe.py
#   bash scripts/device_run.sh o   # where the baseline's engine process loses time against its plain script:
#                                  # the plain script inside an engine process's surroundings (drift_probe.py
#                                  # --b-script scripts/engine_like_predict.py, on the bench's measured CPUs),
#                                  # all of them, then without the GPU's two (the early CUDA context, the memory
#                                  # reporter), then the engine class against plain predict in one process
#                                  # (outside_probe.py); ~7 min after staging
#   bash scripts/device_run.sh n   # stage m in the other order (offline first: it compiles; multi-stream then warm)
#   bash scripts/device_run.sh g   # GPU tests of the plans' shared buffers, then stage n
#   bash scripts/device_run.sh k   # GPU tests of the plans' buffers, then the offline sweep (cold compile)
#   bash scripts/device_run.sh w   # multi-stream capacity, then the yardstick issue's single-stream (+ null), no eval
#   bash scripts/device_run.sh m   # multi-stream capacity (with CPU and NVDEC decode rows, NVDEC where
#                                  # PyNvVideoCodec is carried), then the offline sweep 1-32 (warm Inductor cache)
#   bash scripts/device_run.sh v   # GPU tests of the plans' buffers, where a frame's time and the GPU memory go
#                                  # (scripts/gpu_profile.py), then the offline sweep (cold compile)
#   bash scripts/device_run.sh p   # multi-stream capacity alone (warm Inductor cache)
#   bash scripts/device_run.sh s   # the soak (2 × SOAK_MIN minutes: a call of its own)
#   bash scripts/device_run.sh u   # GPU tests of the plans' buffers, then stage t's single-stream report (no eval, no A/B)
#   bash scripts/device_run.sh x   # development check: GPU tests of the torch engines, the null engine's
#                                  # hand-over (engine spin on/off), single-stream with the reference,
#                                  # an offline sweep, and a profile of the baseline's engine process
#
# Expects the wheels rtmon needs on PYTHONPATH (../shared/device/README.md) and the sample clip
# in .cache/rtmon (carried), so nothing is generated or downloaded there. ENGINES, TIMEOUT and
# the other variables below override the defaults. The copy there has no git history: put
# RTMON_COMMIT=<the commit> in the call, and every report's `software` block names it.
#
# SINGLE_SET adds settings to the single-stream bench (word-split), e.g. SINGLE_SET="--set
# bench.until_decided=false --set bench.reference_processes=2": on the H100 of 2026-12-07 a pair
# of fresh processes cost ~46 s, so the defaults (3 pairs, more while undecided) and MAX_S=25 ran
# past a 540 s call with five engines; 2 pairs, MIN_S=6, MAX_S=12 took 293 s.
#
# Time it takes (H200, 2026-12-01): a cold Inductor compile of torch-graph-compiled costs 30-60 s
# per batch size (cached in /tmp/rtmon-engines/inductor for the rest of the call), so a step
# that loads `optimized` needs a limit of minutes, not seconds; stage y's defaults below were
# too tight then (every step ran out of time). Pipe a stage's output through `tee $OUT/log`,
# never `| tail`: a command cut at its limit returns nothing through tail.
set -u -o pipefail
stage=${1:?a, b, c, d, e, f, g, h, k, m, n, o, p, q, r, s, t, u, v, w, x, y or z}
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
res=/tmp/rtmon-results/$stage
rm -rf "$res" && mkdir -p "$res"
ENGINES=${ENGINES:-baseline,ultralytics-ort,torch-fp16-cpu,torch-graph-cpu,torch-graph,torch-graph-compiled,ort-cuda}
OFFLINE_ENGINES=${OFFLINE_ENGINES:-baseline,ultralytics-ort,torch-graph,torch-graph-compiled,ort-cuda}
OPTIMIZED=${OPTIMIZED:-optimized}
FRAMES=${FRAMES:-1024} MIN_S=${MIN_S:-10} MAX_S=${MAX_S:-20} CONCURRENT_S=${CONCURRENT_S:-20} TRIAL_S=${TRIAL_S:-6}
CAMERA_FPS=${CAMERA_FPS:-30} STREAMS=${STREAMS:-16} SECONDS_=${SECONDS_:-12}
rt=(${PY:-python3} -m rtmon)
at=(--set paths.cache_dir=.cache/rtmon --set paths.engines_dir=/tmp/rtmon-engines)
step() {  # step NAME SECONDS COMMAND...: bounded, logged, never stops the stage
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$res/$name.log" 2>&1
  local code=$?
  echo "$name: exit $code after $((SECONDS - t0)) s" | tee -a "$res/steps.txt"
  grep -v "INVALID INDEX" "$res/$name.log" | tail -${TAIL:-12}
}
pack() {  # the stage's results so far into $OUT (a stage cut at its limit still returns them)
  tar -C /tmp/rtmon-results -czf "$OUT/$stage.tar.gz" "$stage"
}
single_and_eval() {  # single_and_eval LIMIT ENGINES EVAL_LIMIT: single-stream (with references), then eval parity
  step single-stream "${LIMIT_SINGLE:-$1}" "${rt[@]}" bench --engines "${SINGLE_ENGINES:-$2}" \
    --frames "$FRAMES" --min-duration "$MIN_S" --set bench.max_duration_s="$MAX_S" ${SINGLE_SET:-} --out "$res/single-stream" "${at[@]}"
  pack
  [ "${EVAL:-1}" = 0 ] && return 0
  step eval "${LIMIT_EVAL:-$3}" "${rt[@]}" eval --source sample --engines baseline,optimized --frames "${EVAL_FRAMES:-300}" \
    --out "$res/eval" "${at[@]}"
  pack
}
optimized_offline() {  # optimized_offline LIMIT [BATCHES]: the offline sweep of `optimized`, packed after
  step offline "${LIMIT_OFFLINE:-$1}" "${rt[@]}" bench --scenario offline --engines optimized --batches "${BATCHES:-${2:-1,2,4,8,16,32}}" \
    --frames "${OFFLINE_FRAMES:-512}" --no-reference --out "$res/offline" "${at[@]}"
  pack
}
optimized_multi() {  # optimized_multi LIMIT: the multi-stream capacity of `optimized` (up to 256 cameras), packed after
  step multi-stream "${LIMIT_MULTI:-$1}" "${rt[@]}" bench --scenario multi-stream --engines optimized --camera-fps "$CAMERA_FPS" \
    --set engine.max_batch=32 --set bench.trial_s="${TRIAL_S:-4}" --set bench.trial_warmup_s=1 --max-streams 256 \
    --out "$res/multi-stream" "${at[@]}"
  pack
}
plan_tests() {  # GPU tests of the plans' buffers: stream/batch agreement, the NMS overflow fallback, the page-locked ring
  step pytest-gpu "${LIMIT_PYTEST:-150}" python3 -X faulthandler -m pytest -m gpu -p no:cacheprovider -q -s tests/test_engines_gpu.py \
    -k "${PYTEST_K:-(stream_and_batch and (torch-graph] or ort-cuda)) or overflow or page_locked}"
  pack
}
frames() {  # frames VIDEO PREFIX: three PNG frames of a recording (start, middle, end)
  python3 - "$1" "$2" <<'PY'
import sys
import av
from PIL import Image
video, prefix = sys.argv[1], sys.argv[2]
with av.open(video) as c:
    images = [f.to_image() for f in c.decode(video=0)]
for name, i in (("start", len(images) // 6), ("middle", len(images) // 2), ("end", len(images) - 2)):
    images[max(i, 0)].save(f"{prefix}-{name}.png")
print(len(images), "frames in", video)
PY
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$res/gpu.txt" 2>&1
date -u +%FT%TZ > "$res/date.txt"
case "$stage" in
  a)
    step doctor 150 "${rt[@]}" doctor --json
    cp "$res/doctor.log" "$res/doctor.json"
    step pytest-gpu 200 python3 -X faulthandler -m pytest -m gpu -p no:cacheprovider -q -s tests/test_engines_gpu.py \
      -k "${PYTEST_K:-stream_and_batch or overflow or corrupt or page_locked or splits_each or (matches_baseline and (torch-graph or ort-cuda]))}"
    step single-stream 330 "${rt[@]}" bench --scenario single-stream --engines "$ENGINES" --frames "$FRAMES" --min-duration "$MIN_S" \
      --set bench.max_duration_s="$MAX_S" --out "$res/single-stream" "${at[@]}"
    ;;
  b)
    step offline 330 "${rt[@]}" bench --scenario offline --engines "$OFFLINE_ENGINES" --frames "$FRAMES" --out "$res/offline" "${at[@]}"
    step concurrent 260 "${rt[@]}" bench --concurrent "$CONCURRENT_S" --engines "baseline,$OPTIMIZED" --out "$res/concurrent" "${at[@]}"
    ;;
  c)
    step demo 100 "${rt[@]}" record --source sample --right "$OPTIMIZED" --duration "$SECONDS_" --out "$res/demo/demo.mp4" "${at[@]}"
    frames "$res/demo/demo.mp4" "$res/demo/demo" >> "$res/demo.log" 2>&1
    step multi-stream 300 "${rt[@]}" bench --scenario multi-stream --engines "baseline,$OPTIMIZED" --camera-fps "$CAMERA_FPS" \
      --set engine.max_batch=32 --set bench.trial_s="$TRIAL_S" --out "$res/multi-stream" "${at[@]}"
    srcs=(); for _ in $(seq "$STREAMS"); do srcs+=(--source sample); done
    step mosaic 150 "${rt[@]}" record "${srcs[@]}" --right "$OPTIMIZED" --pace realtime --baseline-streams 0 --duration 20 \
      --set engine.max_batch=16 --out "$res/mosaic/mosaic16.mp4" "${at[@]}"
    frames "$res/mosaic/mosaic16.mp4" "$res/mosaic/mosaic16" >> "$res/mosaic.log" 2>&1
    rm -f "$res"/demo/*.mp4 "$res"/mosaic/*.mp4  # the PNG frames and figures come back, not the videos
    ;;
  e)  # capacity and the 16-stream live mosaic again, with micro-batches formed from what is waiting
    step multi-stream 300 "${rt[@]}" bench --scenario multi-stream --engines "baseline,$OPTIMIZED" --camera-fps "$CAMERA_FPS" \
      --set engine.max_batch=32 --set bench.trial_s="$TRIAL_S" --out "$res/multi-stream" "${at[@]}"
    srcs=(); for _ in $(seq "$STREAMS"); do srcs+=(--source sample); done
    step mosaic 150 "${rt[@]}" record "${srcs[@]}" --right "$OPTIMIZED" --pace realtime --baseline-streams 0 --duration 20 \
      --set engine.max_batch=16 --out "$res/mosaic/mosaic16.mp4" "${at[@]}"
    frames "$res/mosaic/mosaic16.mp4" "$res/mosaic/mosaic16" >> "$res/mosaic.log" 2>&1
    rm -f "$res"/mosaic/*.mp4
    ;;
  f)  # the concurrent run with NVIDIA MPS, when it can be started here
    if nvidia-cuda-mps-control -d > "$res/mps.log" 2>&1; then
      step concurrent-mps 260 "${rt[@]}" bench --concurrent "$CONCURRENT_S" --engines "baseline,$OPTIMIZED" \
        --out "$res/concurrent-mps" "${at[@]}"
      echo quit | nvidia-cuda-mps-control >> "$res/mps.log" 2>&1
    else
      echo "MPS could not be started here" | tee -a "$res/steps.txt"
    fi
    ;;
  d)
    step triton 560 env OUT="$res" bash scripts/triton_device.sh
    ;;
  y)
    single_and_eval 330 baseline,optimized,torch-graph,null 150
    optimized_offline 400 1,4,8,16,32
    optimized_multi 300
    exit 0
    ;;
  z)  # the yardstick call: doctor, where the baseline's time goes (py-spy over the bench and its
      # plain reference), the factors one at a time, and the single-stream report of the yardstick issue
    step doctor 90 "${rt[@]}" doctor --json
    cp "$res/doctor.log" "$res/doctor.json"
    pack
    if command -v py-spy > /dev/null || [ -x /root/devsite/bin/py-spy ]; then
      spy=$(command -v py-spy || echo /root/devsite/bin/py-spy)
      step spy 150 "$spy" record --subprocesses --idle --format raw -r 250 -o "$res/spy-baseline.txt" -- \
        "${rt[@]}" bench --engines baseline --frames 512 --min-duration 6 --set bench.max_duration_s=8 \
        --set bench.timing_probe=0 --out "$res/spied" "${at[@]}"
    fi
    pack
    step ab 150 python3 scripts/yardstick_ab.py --seconds 5 --rounds 1 --out "$res/ab.json"
    pack
    step single-stream "${LIMIT_SINGLE:-400}" "${rt[@]}" bench --engines "${SINGLE_ENGINES:-baseline,ultralytics-ort,optimized,ort-cuda,null}" \
      --frames "$FRAMES" --min-duration "${MIN_S}" --set bench.max_duration_s="$MAX_S" --out "$res/single-stream" "${at[@]}"
    pack
    exit 0
    ;;
  r)  # the yardstick and TensorRT-RTX call (needs onnxruntime-gpu and tensorrt_rtx on the machine)
    step doctor 90 "${rt[@]}" doctor --json
    cp "$res/doctor.log" "$res/doctor.json"
    step trt-rtx 90 "${rt[@]}" bench --engines trt-rtx --frames 64 --min-duration 0 --no-reference --out "$res/trt-rtx" "${at[@]}"
    pack
    single_and_eval 420 baseline,ultralytics-ort,optimized,ort-cuda,null 120
    step doctor-text 90 env COLUMNS=140 "${rt[@]}" doctor
    pack
    exit 0
    ;;
  q)  # does waking the main process before an answer is due shorten the baseline's hand-over?
    for spin in 0 ${RECEIVE_SPINS:-300 1000 0 300 1000}; do
      step "baseline-rspin-$spin-$SECONDS" 150 "${rt[@]}" bench --engines baseline,null --frames "$FRAMES" --min-duration "$MIN_S" \
        --set bench.max_duration_s="$MAX_S" --set bench.timing_probe=0 --set engine.receive_spin_us="$spin" \
        --out "$res/rspin-$spin-$SECONDS" "${at[@]}"
      pack
    done
    exit 0
    ;;
  u)
    plan_tests
    EVAL=0 single_and_eval "${LIMIT_SINGLE:-400}" baseline,ultralytics-ort,optimized,ort-cuda,null "${LIMIT_EVAL:-110}"
    exit 0
    ;;
  t)
    single_and_eval "${LIMIT_SINGLE:-400}" baseline,ultralytics-ort,optimized,ort-cuda,null "${LIMIT_EVAL:-110}"
    [ "${AB:-1}" = 0 ] && exit 0
    step "rspin-${AB_SPIN:-0}" "${LIMIT_AB:-90}" "${rt[@]}" bench --engines baseline,null --frames "${AB_FRAMES:-512}" \
      --min-duration 6 --set bench.max_duration_s=10 --set engine.receive_spin_us="${AB_SPIN:-0}" --out "$res/rspin-${AB_SPIN:-0}" "${at[@]}"
    pack
    exit 0
    ;;
  h)
    step handover-probe "${LIMIT_PROBE:-150}" python3 scripts/handover_probe.py --seconds "${PROBE_S:-3}" --ways "${PROBE_WAYS:-asleep,sleep0,sleep0-slack1,sched_yield,busy,spin-all}" \
      --engines "${PROBE_ENGINES:-busy-8ms,sleep-8ms,instant}" --out "$res/probe.json"
    cat "$res/handover-probe.log"
    ;;
  o)  # on the CPU (docs/benchmarks/cpu-2026-12-08) rtmon's imports, the parent watch and frames in shared
      # memory did not slow predict: envab-host leaves out the two that only a GPU has (cuda, memory)
    step envab "${LIMIT_ENVAB:-150}" python3 scripts/drift_probe.py --modes shared --cpus "${ENVAB_CPUS:-4-15}" --rounds 12 \
      --segment-s 0.3 --b-script scripts/engine_like_predict.py --pairs "${ENVAB_PAIRS:-4}" --cache-dir .cache/rtmon \
      --out "$res/envab.json"
    pack
    step envab-host "${LIMIT_ENVAB:-150}" python3 scripts/drift_probe.py --modes shared --cpus "${ENVAB_CPUS:-4-15}" --rounds 12 \
      --segment-s 0.3 --b-script scripts/engine_like_predict.py --b-env ENGINE_LIKE=imports,watch,shm \
      --pairs "${ENVAB_PAIRS:-4}" --cache-dir .cache/rtmon --out "$res/envab-host.json"
    pack
    step outside "${LIMIT_OUTSIDE:-120}" python3 scripts/outside_probe.py --frames "${OUTSIDE_FRAMES:-150}" --out "$res/outside.json"
    pack
    ;;
  n)  # stage m in the other order: the offline sweep compiles every batch size (cold), so the
      # multi-stream capacity after it finds them in the Inductor cache
    optimized_offline 330
    optimized_multi 240
    exit 0
    ;;
  g)  # the plans' shared lane buffers on the GPU (stream/batch agreement, the overflow fallback),
      # then stage n
    plan_tests
    optimized_offline 300
    optimized_multi 200
    exit 0
    ;;
  k)  # the plans' buffers on the GPU (stream/batch agreement, the overflow fallback,
      # the page-locked ring), then the offline sweep (cold: it compiles every batch size)
    plan_tests
    optimized_offline 400
    exit 0
    ;;
  v)  # the plans' buffers on the GPU, the profile of one frame and of the memory, the offline sweep (cold)
    plan_tests
    step gpu-profile "${LIMIT_PROFILE:-150}" python3 scripts/gpu_profile.py --engines-dir /tmp/rtmon-engines \
      --out "$res/profile/gpu-profile.json"
    pack
    optimized_offline 330
    exit 0
    ;;
  p)
    optimized_multi 240
    exit 0
    ;;
  w)  # multi-stream capacity (warm Inductor cache), then the yardstick issue's single-stream (no eval)
    optimized_multi 240
    EVAL=0 single_and_eval 300 "baseline,ultralytics-ort,optimized,ort-cuda,null" 0
    exit 0
    ;;
  m)
    optimized_multi 330
    optimized_offline 200
    exit 0
    ;;
  s)  # the soak: 2 × SOAK_MIN minutes (record baseline + optimized, then 16 streams on optimized)
    step soak "${LIMIT_SOAK:-$(( ${SOAK_MIN:-4} * 120 + 240 ))}" "${rt[@]}" bench --scenario soak --engines "baseline,$OPTIMIZED" \
      --set bench.soak_minutes="${SOAK_MIN:-4}" --set bench.soak_streams="${STREAMS:-16}" --out "$res/soak" "${at[@]}"
    ;;
  x)
    nb=(--no-reference --set bench.timing_probe=0 --min-duration 5 --set bench.max_duration_s=6)
    step null 60 "${rt[@]}" bench --engines null "${nb[@]}" --out "$res/null" "${at[@]}"
    step null-nospin 60 "${rt[@]}" bench --engines null "${nb[@]}" --set engine.spin_us=0 --out "$res/null-nospin" "${at[@]}"
    step null-rspin 60 "${rt[@]}" bench --engines null "${nb[@]}" --set engine.receive_spin_us=300 --out "$res/null-rspin" "${at[@]}"
    step pytest-gpu 240 python3 -X faulthandler -m pytest -m gpu -p no:cacheprovider -q -s tests/test_engines_gpu.py \
      -k "${PYTEST_K:-not ort and not trt and not nvdec and not compile}"
    step single-stream 300 "${rt[@]}" bench --engines "${DEV_ENGINES:-baseline,torch-graph-compiled,torch-graph}" \
      --frames "$FRAMES" --min-duration "$MIN_S" --set bench.max_duration_s=15 --out "$res/single-stream" "${at[@]}"
    step profile 90 env RTMON_PROFILE="$res/prof" "${rt[@]}" bench --engines baseline,torch-graph-compiled "${nb[@]}" \
      --out "$res/profiled" "${at[@]}"
    for f in "$res"/prof/*.prof; do python3 -c "import pstats,sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(35)" "$f" > "$f.txt" 2>&1; done
    step offline 300 "${rt[@]}" bench --scenario offline --engines torch-graph-compiled --frames "$FRAMES" \
      --out "$res/offline" "${at[@]}"
    ;;
esac
tar -C /tmp/rtmon-results -czf "$OUT/$stage.tar.gz" "$stage"
ls -la "$OUT"
