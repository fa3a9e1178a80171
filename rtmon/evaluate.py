"""`rtmon eval`: how accurate is each engine? mAP against ground truth, and agreement with the baseline.

The frames of a labeled source (the sample clip by default) are decoded once and kept in
memory; every engine then runs over the same frames, one engine at a time, each in its own
process through the engine runner, each stopped before the next is loaded.

Two measures per engine:

- **mAP50 and mAP50-95**, COCO-style, computed by faster-coco-eval (a maintained, fast
  re-implementation of pycocotools' COCOeval) from ground-truth and detection dicts built in
  memory. COCO's protocol was chosen over ultralytics' `ap_per_class` because it does the
  matching itself (we only hand it boxes), is the reference definition of mAP50-95, and does
  not tie the yardstick to the library under test. Engines run at `EVAL_CONF` (0.001), as
  ultralytics `val` does, so the precision-recall curve reaches low-confidence detections and
  the figures are comparable with `ultralytics val` (rtmon/assets/demo/sample_val.json); at
  predict's 0.25 the recall tail is cut off and mAP would be a lower bound.
- **agreement_vs_baseline**: the fraction of the baseline's boxes that the engine finds again
  (same class, IoU ≥ 0.9), summed over all frames, and the same at IoU ≥ 0.5
  (`agreement_vs_baseline_iou50`: the same objects found, boxes a few pixels off allowed, the
  measure an INT8 engine is held to), on the detections above the operating
  threshold (`model.conf`, 0.25 by default) — the boxes a user actually sees. Filtering the
  0.001 run at 0.25 gives the same boxes as running at 0.25: NMS is class-aware and only a
  more confident box can suppress another, so nothing above the threshold depends on what
  lies below it (and `max_det` = 300 is far above the sample's dozen objects).

Ground-truth rows are `class_id, x1, y1, x2, y2` in pixels with x2/y2 exclusive: the box
covers pixel columns x1 … x2-1, i.e. the continuous extent [x1, x2), so its COCO width is
x2 - x1 (no +1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rtmon import engines as registry
from rtmon.core import Detections, EngineState
from rtmon.engines.parity import match_pairs
from rtmon.errors import UserError
from rtmon.files import write_folder
from rtmon.formatting import fmt
from rtmon.models import ModelRef
from rtmon.reporting import header
from rtmon.runner import EngineRunner, PoolFeed, RunnerOptions
from rtmon.sample import check_labels_match, load_labels, video_info
from rtmon.sources import SourceSpec, read_frames

log = logging.getLogger(__name__)

EVAL_CONF = 0.001  # as ultralytics val: the whole precision-recall curve
AGREEMENT_IOU = 0.9
LOOSE_AGREEMENT_IOU = 0.5


def run_eval(
    settings, model: ModelRef, spec: SourceSpec, engines: list[list[str]], out: Path, console: Console,
    frames: int | None, factory=None,
) -> dict:
    """Evaluate each engine on the labeled source; write `out/eval.json`, print a table, return the report.
    `engines`: per engine the names to try in order (`rtmon.engines.resolve_engines`: for `optimized`,
    the next one when one does not load, with a notice, as `rtmon bench` and the live view do)."""
    truth, class_names = _ground_truth(spec, model, frames)
    images = _decode(spec, len(truth), console)
    eval_settings = settings.model_copy(update={"model": settings.model.model_copy(update={"conf": EVAL_CONF})})
    detections: dict[str, list[Detections]] = {}
    notes: list[str] = []
    for candidates in engines:
        name, found, notice = _detect(candidates, model, eval_settings, images, console, factory)
        detections[name] = found
        if notice:
            notes.append(f"{name}: {notice}")
            console.print(f"[bold yellow]warning:[/] {notice}", highlight=False)
    names = list(detections)
    baseline = registry.BASELINE
    operating = settings.model.conf
    rows = []
    for name in names:
        ap50, ap = coco_map(truth, detections[name], class_names)
        agreement = loose = None
        if name != baseline and baseline in detections:
            reference, found = _above(detections[baseline], operating), _above(detections[name], operating)
            agreement = agreement_rate(reference, found)
            loose = agreement_rate(reference, found, LOOSE_AGREEMENT_IOU)
        rows.append({"name": name, "mAP50": ap50, "mAP50-95": ap, "agreement_vs_baseline": agreement,
                     "agreement_vs_baseline_iou50": loose})
    report = {
        **header(model, [spec]),
        "labels": str(spec.labels_file),
        "frames": len(truth),
        "conf": EVAL_CONF,
        "method": (
            f"COCO mAP (faster-coco-eval) with engines run at conf {EVAL_CONF}, as ultralytics val; "
            f"agreement = share of the baseline's boxes above conf {operating} found again by the engine "
            f"(same class, IoU >= {AGREEMENT_IOU}; agreement_vs_baseline_iou50: IoU >= {LOOSE_AGREEMENT_IOU})"
        ),
        "agreement": {"reference": baseline, "conf": operating, "iou": AGREEMENT_IOU, "loose_iou": LOOSE_AGREEMENT_IOU},
        "engines": rows,
        "notes": notes,
    }
    write_folder(Path(out), {"eval.json": lambda path: path.write_text(json.dumps(report, indent=2))})
    console.print(summary_table(report))
    return report


def _ground_truth(spec: SourceSpec, model: ModelRef, frames: int | None) -> tuple[list[np.ndarray], dict[int, str]]:
    """The first `frames` frames' label rows (all when None) and the labels' class names."""
    if spec.labels_file is None:
        raise UserError(
            f"eval: {spec.uri} has no ground-truth labels; use --source sample (the only labeled source), "
            "or `rtmon bench` for speed alone"
        )
    if frames is not None and frames < 1:
        raise UserError(f"eval: --frames must be at least 1, not {frames}")
    check_labels_match(spec.labels_file, *video_info(Path(spec.target)))
    labels = load_labels(spec.labels_file)
    class_names = _label_class_names(spec.labels_file) or dict(model.class_names)
    if model.class_names and class_names != model.class_names:
        raise UserError(
            f"eval: {model.label} detects {_some(model.class_names)} but {spec.labels_file.name} labels "
            f"{_some(class_names)}; evaluate a model trained for these labels (for the sample: --model demo)"
        )
    count = len(labels) if frames is None else min(frames, len(labels))
    if frames is not None and frames > len(labels):
        log.info("eval: %s has %d labeled frames; evaluating all of them", spec.label, len(labels))
    return [labels[i] for i in range(count)], class_names


def _label_class_names(path: Path) -> dict[int, str]:
    names = json.loads(Path(path).read_text()).get("class_names") or {}
    return {int(k): str(v) for k, v in names.items()}


def _some(names: dict[int, str]) -> str:
    shown = ", ".join(list(names.values())[:4])
    return f"{len(names)} classes ({shown}{', …' if len(names) > 4 else ''})"


def _decode(spec: SourceSpec, count: int, console: Console) -> list[np.ndarray]:
    """Every evaluated frame, decoded once (the sample's 600 frames take about 1.7 GB)."""
    images = []
    with _progress(console) as progress:
        task = progress.add_task("decoding", total=count)
        for image in read_frames(spec, count):
            images.append(image)
            progress.advance(task)
    return images


def _detect(candidates: list[str], model: ModelRef, settings, images: list[np.ndarray], console: Console,
            factory=None) -> tuple[str, list[Detections], str]:
    """One engine's detections on every frame, through the engine runner (its own process, every
    frame in order, as fast as it takes them): (the engine that ran, its detections, the notice of
    a fallback or ""). The engine process is stopped before this returns."""
    found: dict[int, Detections] = {}

    def keep(result, skipped: int) -> None:
        found[result.frame.index] = result.detections

    options = RunnerOptions.of(settings, log_dir=None, factory=factory)
    runner = EngineRunner(list(candidates), model, settings, options, role=registry.role(candidates[0]), on_result=keep)
    runner.start(max(im.nbytes for im in images))
    with _progress(console) as progress:
        task = progress.add_task(f"{candidates[0]}: loading", total=len(images))
        try:
            if not runner.wait_loaded():
                raise UserError(f"engine: {runner.name}: {runner.metrics.error}")
            progress.update(task, description=f"{runner.name}: detecting")
            runner.follow(PoolFeed(images, 0, len(images)), ends_run=False)
            while not runner.fed.wait(0.2):
                if runner.metrics.state == EngineState.FAILED:
                    raise UserError(f"engine: {runner.name}: {runner.metrics.error}")
                progress.update(task, completed=len(found))
            progress.update(task, completed=len(found))
            if runner.metrics.state == EngineState.FAILED:
                raise UserError(f"engine: {runner.name}: {runner.metrics.error}")
        finally:
            runner.stop()
    return runner.name, [found[i] for i in range(len(images))], runner.notice


def _progress(console: Console) -> Progress:
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=False)


def _above(per_frame: list[Detections], conf: float) -> list[Detections]:
    """The detections an engine reports at threshold `conf` (engines keep scores > conf)."""
    return [d.above(conf) for d in per_frame]


def agreement_rate(reference: list[Detections], other: list[Detections], iou: float = AGREEMENT_IOU) -> float:
    """Share of all `reference` boxes, over every frame, matched one-to-one in `other`
    (same class, IoU ≥ `iou`); 1.0 when neither has any box, 0.0 when only `other` has."""
    total = sum(len(r) for r in reference)
    if not total:
        return 1.0 if not any(len(o) for o in other) else 0.0
    matched = sum(len(match_pairs(r, o, iou)) for r, o in zip(reference, other, strict=True))
    return matched / total


def coco_map(truth: list[np.ndarray], detections: list[Detections], class_names: dict[int, str]) -> tuple[float, float]:
    """(mAP50, mAP50-95) of `detections` against `truth` rows, by COCO's protocol.

    Image ids are frame index + 1 and category ids class id + 1 (COCO ids start at 1). COCO
    keeps the `maxDets[-1]` most confident detections per image, so that limit is raised to
    the engines' own `max_det` ceiling rather than COCO's default 100.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    images = [{"id": i + 1, "width": 0, "height": 0} for i in range(len(truth))]
    annotations = []
    for i, rows in enumerate(truth):
        for cls, x1, y1, x2, y2 in rows.tolist():
            w, h = x2 - x1, y2 - y1  # x2/y2 are exclusive: the box spans [x1, x2)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": k + 1, "name": v} for k, v in sorted(class_names.items())]
    quiet = log.debug
    gt = COCO({"images": images, "annotations": annotations, "categories": categories}, print_function=quiet)
    results = [
        {"image_id": i + 1, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)}
        for i, d in enumerate(detections)
        for (x1, y1, x2, y2), s, c in zip(d.xyxy.tolist(), d.confidence.tolist(), d.class_id.tolist(), strict=True)
    ]
    dt = gt.loadRes(results)
    evaluator = COCOeval_faster(gt, dt, iouType="bbox", print_function=quiet)
    evaluator.params.maxDets = [1, 10, max(100, max((len(d) for d in detections), default=0))]
    evaluator.run()
    stats = evaluator.stats_as_dict
    return max(stats["AP_50"], 0.0), max(stats["AP_all"], 0.0)  # COCO reports -1 when there is no ground truth


def _percent(share: float | None) -> str:
    return fmt(None if share is None else share * 100, ".2f", "%")


def summary_table(report: dict) -> Table:
    base = next((e for e in report["engines"] if e["name"] == report["agreement"]["reference"]), None)
    table = Table(title=f"rtmon eval — {report['model']['label']}, {report['source']['uri']}, {report['frames']} frames "
                        f"({report['created']})")
    agreement = report["agreement"]
    columns = ["engine", "mAP50", "mAP50-95", "Δ mAP50-95 (points)",
               f"agreement IoU≥{agreement['iou']} (conf>{agreement['conf']})"]
    loose_iou = agreement.get("loose_iou")  # reports before 2026-12-01 have only the strict figure
    if loose_iou is not None:
        columns.append(f"agreement IoU≥{loose_iou}")
    for col in columns:
        table.add_column(col, justify="left" if col == "engine" else "right")
    for e in report["engines"]:
        delta = None if base is None or e is base else (e["mAP50-95"] - base["mAP50-95"]) * 100
        cells = [e["name"], f"{e['mAP50']:.4f}", f"{e['mAP50-95']:.4f}", fmt(delta, "+.2f"), _percent(e["agreement_vs_baseline"])]
        if loose_iou is not None:
            cells.append(_percent(e.get("agreement_vs_baseline_iou50")))
        table.add_row(*cells)
    return table


