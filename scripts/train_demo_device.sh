#!/usr/bin/env bash
# Train the demo detector on the GPU machine, end to end, in well under 9 minutes:
# dataset (all cores) -> yolo11n training (time-boxed) -> a check on the sample clip's frames.
# Everything that should come back is copied flat into $OUT.
#
#   bash scripts/train_demo_device.sh
set -euo pipefail
export PYTHONPATH="$PWD:/root/devsite${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
OUT="${OUT:-/tmp/rtmon-out}"
DATA=/tmp/rtmon-data
ASSETS=/tmp/rtmon-assets
CORES="$(nproc)"
mkdir -p "$OUT"
exec > >(tee "$OUT/train_demo_device.log") 2>&1

start=$(date +%s)
python3 -c "import torch, ultralytics, cv2, polars; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__, torch.cuda.get_device_name(0))"

rm -rf "$DATA" "$ASSETS"
python3 scripts/make_dataset.py --out "$DATA" --train-images 8000 --val-images 500 --workers "$CORES"
echo "elapsed: $(( $(date +%s) - start )) s after the dataset"

python3 scripts/train_demo.py --data "$DATA/data.yaml" --time 0.09 --epochs 100 --batch 64 \
    --workers "$CORES" --device 0 --project /tmp/rtmon-train --assets "$ASSETS"
echo "elapsed: $(( $(date +%s) - start )) s after training"

# A first look at the target (the real measure is rtmon's baseline engine on the H.264 clip):
# the sample clip's 600 frames, straight from the generator, validated by ultralytics.
python3 - "$ASSETS" "$OUT" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
from make_dataset import write_scene, write_yaml
from rtmon.scene import SAMPLE_FRAMES, SAMPLE_SEED
from ultralytics import YOLO

assets, out, data = Path(sys.argv[1]), Path(sys.argv[2]), Path("/tmp/rtmon-sample-val")
for sub in ("images/val", "labels/val"):
    (data / sub).mkdir(parents=True, exist_ok=True)
write_scene((data, "val", SAMPLE_SEED, SAMPLE_FRAMES, 1, 0.5))
yaml = write_yaml(data)
yaml.write_text(yaml.read_text().replace("train: images/train", "train: images/val"))
metrics = YOLO(assets / "rtmon-demo-yolo11n.pt").val(data=str(yaml), imgsz=640, batch=32, plots=False, device=0)
result = {"frames": SAMPLE_FRAMES, "mAP50": round(float(metrics.box.map50), 5), "mAP50-95": round(float(metrics.box.map), 5),
          "note": "ultralytics val on the sample clip's rendered frames at 640x360 (not via H.264)"}
(out / "sample_val.json").write_text(json.dumps(result, indent=2) + "\n")
print("sample clip:", result)
PY

cp "$ASSETS"/* "$OUT"/
echo "elapsed: $(( $(date +%s) - start )) s in total; files in $OUT:"
ls -la "$OUT"
