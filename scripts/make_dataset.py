"""Write a YOLO-format dataset of synthetic scenes for training the demo detector.

Images come from many short scenes, each with its own seed (never the sample clip's), taking
every `--stride`-th frame. Images are written at `--scale` of the 1280x720 render (0.5 gives
640x360: the very scale a 640 detector sees the sample clip at), as JPEG quality 95.

    python scripts/make_dataset.py --train-images 4000 --val-images 400 --out /tmp/rtmon-data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

from rtmon.scene import CLASS_NAMES, SAMPLE_SEED, SAMPLE_SIZE, render_scene

TRAIN_SEED_BASE = 100_000
VAL_SEED_BASE = 900_000


def scene_seeds(split: str, count: int, per_scene: int) -> list[int]:
    base = TRAIN_SEED_BASE if split == "train" else VAL_SEED_BASE
    seeds = [base + i for i in range(-(-count // per_scene))]
    assert SAMPLE_SEED not in seeds, "the sample clip's seed must stay out of the training data"
    return seeds


def write_scene(job: tuple[Path, str, int, int, int, float]) -> int:
    """Render one scene and write its sampled frames; returns how many images it wrote."""
    out, split, seed, per_scene, stride, scale = job
    cv2.setNumThreads(1)  # one process per core already
    width, height = (round(v * scale / 2) * 2 for v in SAMPLE_SIZE)
    written = 0
    for index, (image, labels) in enumerate(render_scene(seed, per_scene * stride, SAMPLE_SIZE, stride)):
        name = f"s{seed}_f{index * stride:04d}"
        if scale != 1:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (out / "labels" / split / f"{name}.txt").write_text(yolo_lines(labels, SAMPLE_SIZE))
        written += 1
    return written


def yolo_lines(labels: np.ndarray, size: tuple[int, int]) -> str:
    """`class cx cy w h` lines, normalized to the image size."""
    width, height = size
    lines = []
    for cls, x1, y1, x2, y2 in labels:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yaml(out: Path) -> Path:
    names = "\n".join(f"  {k}: {v}" for k, v in CLASS_NAMES.items())
    path = out / "data.yaml"
    path.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=400)
    parser.add_argument("--per-scene", type=int, default=10, help="images taken from each scene")
    parser.add_argument("--stride", type=int, default=9, help="take every k-th frame of a scene")
    parser.add_argument("--scale", type=float, default=0.5, help="image scale relative to 1280x720")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    jobs, seeds_of = [], {}
    for split, count in (("train", args.train_images), ("val", args.val_images)):
        (args.out / "images" / split).mkdir(parents=True, exist_ok=True)
        (args.out / "labels" / split).mkdir(parents=True, exist_ok=True)
        seeds_of[split] = seeds = scene_seeds(split, count, args.per_scene)
        for i, seed in enumerate(seeds):
            per_scene = min(args.per_scene, count - i * args.per_scene)
            jobs.append((args.out, split, seed, per_scene, args.stride, args.scale))

    start, done = time.perf_counter(), 0
    total = args.train_images + args.val_images
    with Pool(args.workers) as pool:
        for count in pool.imap_unordered(write_scene, jobs):
            done += count
            if done % 200 < count or done == total:
                rate = done / (time.perf_counter() - start)
                print(f"dataset: {done}/{total} images ({rate:.0f}/s)", flush=True)
    yaml = write_yaml(args.out)
    manifest = {
        "generator": "rtmon.scene.render_scene",
        "sample_seed_excluded": SAMPLE_SEED,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "train_seeds": f"{seeds_of['train'][0]}..{seeds_of['train'][-1]}",
        "val_seeds": f"{seeds_of['val'][0]}..{seeds_of['val'][-1]}",
        "per_scene": args.per_scene,
        "stride": args.stride,
        "scale": args.scale,
        "jpeg_quality": 95,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"dataset: {len(jobs)} scenes, {total} images in {time.perf_counter() - start:.1f} s -> {yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
