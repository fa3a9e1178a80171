set -x
cd /work/main
export YOLO_OFFLINE=1
D=/tmp/cpurep
B=".venv/bin/python"
common="--modes shared --cpus 0-1 --rounds 12 --segment-s 0.5 --pairs 3 --set model.imgsz=64 --cache-dir .cache/rtmon"
$B scripts/drift_probe.py $common --b-script scripts/engine_like_predict.py --out $D/drift-probe/envab-64-1.json > /dev/null
$B scripts/drift_probe.py $common --out $D/drift-probe/aa-64-1.json > /dev/null
$B scripts/drift_probe.py $common --b-script scripts/engine_like_predict.py --out $D/drift-probe/envab-64-2.json > /dev/null
$B scripts/drift_probe.py $common --out $D/drift-probe/aa-64-2.json > /dev/null
taskset -c 1 $B scripts/outside_probe.py --engines torch-fp32 --frames 300 --set model.imgsz=64 --out $D/outside-64.json
bench="$B -m rtmon bench --engines baseline --set model.imgsz=64 --frames 256 --min-duration 4 --set bench.max_duration_s=8 --set bench.until_decided=false --set bench.reference_processes=3 --set paths.cache_dir=.cache/rtmon"
$bench --set bench.cpu_split=off --out $D/bench-64-split-off > $D/bench-64-split-off.log 2>&1
$bench --set bench.cpu_split=on --out $D/bench-64-split-on > $D/bench-64-split-on.log 2>&1
$B -m rtmon bench --engines null --frames 4096 --min-duration 4 --set bench.cpu_split=on --set paths.cache_dir=.cache/rtmon --out $D/null-split-on > $D/null-split-on.log 2>&1
echo ALLDONE
