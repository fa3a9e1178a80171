"""Drawing, as pure functions of (frame, detections, numbers): boxes, overlays, split screen.

Each half of the split screen shows the last frame *that engine* finished, with its boxes, so
a slow engine visibly lags behind a fast one on the same feed.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from rtmon.core import Detections
from rtmon.gpu import fmt_mib
from rtmon.metrics import EngineSnapshot

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def annotate(image: np.ndarray, detections: Detections, class_names: dict[int, str]) -> np.ndarray:
    """A copy of `image` with a box and a `name conf` label per detection."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 360))
    scale = 0.5 * thickness
    for (x1, y1, x2, y2), conf, cls in zip(
        detections.xyxy.astype(int), detections.confidence, detections.class_id, strict=True
    ):
        color = class_color(int(cls))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f"{class_names.get(int(cls), str(cls))} {conf:.2f}"
        (tw, th), base = cv2.getTextSize(label, FONT, scale, thickness)
        ty = max(y1, th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base - 2), (x1 + tw + 2, ty), color, -1)
        cv2.putText(out, label, (x1 + 1, ty - base), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def overlay_lines(snap: EngineSnapshot | None, title: str) -> list[str]:
    """The text block in a half's corner: engine, live FPS, P95 latency, GPU memory."""
    if snap is None:
        return [title, "starting..."]
    fps = "n/a" if snap.fps is None else f"{snap.fps:.1f}"
    p95 = "n/a" if snap.latency is None else f"{snap.latency.p95:.1f} ms"
    lines = [title, f"FPS {fps}   P95 {p95}", f"GPU mem {fmt_mib(snap.gpu_mem_mib)}"]
    if snap.state not in {"running"}:
        lines.append(snap.state + (f": {snap.error}" if snap.error else ""))
    return lines


def draw_overlay(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Text on a translucent dark panel in the top-left corner (in place; returns image)."""
    scale = max(0.5, image.shape[1] / 1600)
    thick = max(1, round(scale * 2))
    sizes = [cv2.getTextSize(line, FONT, scale, thick)[0] for line in lines]
    line_h = max(h for _, h in sizes) + int(12 * scale)
    width = max(w for w, _ in sizes) + int(24 * scale)
    height = line_h * len(lines) + int(12 * scale)
    roi = image[:height, :width]
    roi[:] = (roi * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        y = (i + 1) * line_h
        color = (255, 255, 255) if i else (80, 220, 255)
        cv2.putText(image, line, (int(12 * scale), y), FONT, scale, color, thick, cv2.LINE_AA)
    return image


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = round(h * width / w / 2) * 2  # even, for yuv420p
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def split_screen(left: np.ndarray, right: np.ndarray, half_width: int = 960) -> np.ndarray:
    """Two halves side by side, each scaled to `half_width`, with a thin divider."""
    a, b = fit_width(left, half_width), fit_width(right, half_width)
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    out = np.concatenate([a, b], axis=1)
    out[:, half_width - 1 : half_width + 1] = (40, 40, 40)
    return out


def render_half(
    image: np.ndarray,
    detections: Detections | None,
    class_names: dict[int, str],
    snap: EngineSnapshot | None,
    title: str,
    half_width: int,
) -> np.ndarray:
    """One annotated, scaled, captioned half of the split screen."""
    drawn = annotate(image, detections, class_names) if detections is not None else image.copy()
    return draw_overlay(fit_width(drawn, half_width), overlay_lines(snap, title))
