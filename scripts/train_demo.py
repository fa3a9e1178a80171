"""Train rtmon's demo detector (yolo11n) on synthetic scenes and install it as a package asset.

    python scripts/train_demo.py --data /tmp/rtmon-data/data.yaml --time 0.09 --batch 64 --workers 16
    python scripts/train_demo.py --smoke          # CPU, tiny dataset, 1 epoch: proves the script works

Writes into `--assets` (default rtmon/assets/demo; a temporary folder with --smoke):
rtmon-demo-yolo11n.pt, its .sha256, RECIPE.md (how it was made) and metrics.json (the final
validation metrics as ultralytics reported them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtmon.files import sha256_of

os.environ.setdefault("YOLO_OFFLINE", "1")  # nothing here may download anything

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "rtmon" / "assets" / "demo"
WEIGHTS_NAME = "rtmon-demo-yolo11n.pt"
METRIC_KEYS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data.yaml written by scripts/make_dataset.py")
    parser.add_argument("--epochs", type=int, default=100, help="upper bound; --time re-plans it")
    parser.add_argument("--time", type=float, default=0.0, help="training budget in hours (0: off)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="0")
    parser.add_argument("--project", type=Path, default=Path(tempfile.gettempdir()) / "rtmon-train")
    parser.add_argument("--assets", type=Path, help="where the weights and their records go")
    parser.add_argument("--seed", type=int, default=0, help="ultralytics' training seed")
    parser.add_argument("--init", type=Path, help="start from these weights (a second stage) instead of yolo11n.yaml")
    parser.add_argument("--smoke", action="store_true", help="tiny dataset, 1 epoch, CPU")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.time, args.batch, args.imgsz, args.workers, args.device = 1, 0.0, 8, 320, 0, "cpu"
        args.assets = args.assets or Path(tempfile.gettempdir()) / "rtmon-smoke-assets"
    elif args.data is None:
        parser.error("--data is required (or --smoke)")
    args.assets = args.assets or ASSETS
    return args


def smoke_dataset() -> Path:
    out = Path(tempfile.gettempdir()) / "rtmon-smoke-data"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "scripts" / "make_dataset.py"), "--out", str(out)]
    command += ["--train-images", "16", "--val-images", "8", "--per-scene", "8", "--workers", "2"]
    subprocess.run(command, check=True)
    return out / "data.yaml"


def final_metrics(trainer) -> dict:
    """The metrics ultralytics reported: its final validation of best.pt and the last epoch's row."""
    final = {name: round(float(trainer.metrics[key]), 5) for name, key in METRIC_KEYS.items()}
    rows = trainer.read_results_csv()
    last = {name: round(float(rows[key][-1]), 5) for name, key in METRIC_KEYS.items()}
    return {
        "final_validation_of_best_pt": final,
        "last_epoch": {"epoch": int(rows["epoch"][-1]), **last},
        "epochs_run": len(rows["epoch"]),
        "validation_images": trainer.validator.seen if trainer.validator else None,
        "source": "ultralytics trainer.metrics after final_eval, and the last row of results.csv",
    }


def recipe(args, argv: list[str], trainer, manifest: dict, wall_s: float, metrics: dict) -> str:
    import torch
    import ultralytics

    gpu = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "none (CPU)"
    )
    hyper = {k: v for k, v in vars(trainer.args).items() if k not in {"save_dir", "project", "name"}}
    final = metrics["final_validation_of_best_pt"]
    return "\n".join(
        [
            "# rtmon demo detector: how it was made",
            "",
            "Written by `scripts/train_demo.py`; every value below comes from the run itself.",
            "",
            f"- Command: `{shlex.join([Path(sys.executable).name, 'scripts/train_demo.py', *argv])}`",
            f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
            f"- Wall time of training: {wall_s:.0f} s; epochs run: {metrics['epochs_run']}",
            f"- GPU: {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"ultralytics {ultralytics.__version__}",
            f"- Model: {'initialised from ' + str(args.init) if args.init else 'yolo11n.yaml (from scratch)'}, {len(trainer.data['names'])} classes: "
            f"{', '.join(trainer.data['names'].values())}",
            f"- Final validation (best.pt): mAP50 {final['mAP50']}, mAP50-95 {final['mAP50-95']}, "
            f"precision {final['precision']}, recall {final['recall']}",
            "",
            "## Dataset (scripts/make_dataset.py manifest)",
            "",
            "```json",
            json.dumps(manifest, indent=2),
            "```",
            "",
            "## ultralytics training arguments",
            "",
            "```json",
            json.dumps(hyper, indent=2, default=str),
            "```",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    data = smoke_dataset() if args.smoke else args.data.resolve()
    manifest_path = data.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}

    from ultralytics import YOLO

    start = time.perf_counter()
    model = YOLO(str(args.init) if args.init else "yolo11n.yaml")
    model.train(
        data=str(data),
        epochs=args.epochs,
        time=args.time or None,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        seed=args.seed,
        plots=False,
        amp=False,  # ultralytics' AMP check downloads yolo11n.pt
        project=str(args.project),
        name="smoke" if args.smoke else "demo",
        exist_ok=True,
        val=True,
    )
    wall_s = time.perf_counter() - start
    trainer = model.trainer
    metrics = final_metrics(trainer)

    args.assets.mkdir(parents=True, exist_ok=True)
    weights = args.assets / WEIGHTS_NAME
    shutil.copyfile(trainer.best, weights)
    digest = sha256_of(weights)
    (args.assets / f"{WEIGHTS_NAME}.sha256").write_text(f"{digest}  {WEIGHTS_NAME}\n")
    (args.assets / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (args.assets / "RECIPE.md").write_text(recipe(args, argv, trainer, manifest, wall_s, metrics))
    print(f"demo detector: {weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]})")
    print(f"demo detector: metrics {json.dumps(metrics['final_validation_of_best_pt'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
