"""Drawing, as pure functions of (frame, detections, numbers): boxes, overlays, split screen, mosaic.

Each half of the split screen shows the newest frame of the feed with the boxes *its engine* last
delivered for that stream, so a slow engine's boxes visibly trail moving objects. Each half names
its role (BASELINE / OPTIMIZED), the engine and the device it really runs on, and its measured
figures; the headline across the bottom compares the two from the same figures.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from rtmon.core import Detections, EngineInfo, EngineState, Result
from rtmon.formatting import fmt_mib
from rtmon.metrics import EngineSnapshot, Headline

FONT = cv2.FONT_HERSHEY_SIMPLEX
HALF_WIDTH = 960
ROLE_COLORS = {"baseline": (60, 140, 255), "peer": (200, 200, 80), "optimized": (80, 220, 120)}  # BGR
INACTIVE = (EngineState.OFF, EngineState.FAILED, EngineState.ENDED)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def annotate(image: np.ndarray, detections: Detections, class_names: dict[int, str]) -> np.ndarray:
    """A copy of `image` with a box and a `name conf` label per detection."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 540))
    scale = 0.4 * thickness
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


def _num(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


@dataclass(frozen=True)
class HalfView:
    """What one half shows: the newest frame, the engine's latest result for that stream."""

    image: np.ndarray
    result: Result | None
    snap: EngineSnapshot | None
    info: EngineInfo | None
    pace: str
    newest_index: int = 0  # the index of `image`, to say how far behind the boxes are


def title_line(snap: EngineSnapshot | None, info: EngineInfo | None, name: str) -> str:
    role = (snap.role.value if snap else "engine").upper()
    device = info.device if info and info.device else "…"
    precision = f"{info.precision}, " if info and info.precision else ""
    return f"{role}: {name} ({precision}{device})"


def overlay_lines(view: HalfView, name: str) -> list[str]:
    """The text block in a half's corner: role, engine, device; delivered FPS, capacity, P95,
    busy share; GPU memory with its counter; how old the boxes are; the state when not running."""
    snap = view.snap
    lines = [title_line(snap, view.info, name)]
    if snap is None:
        return [*lines, "starting…"]
    p95 = _num(snap.latency.p95 if snap.latency else None, ".1f", " ms")
    lines.append(f"FPS {_num(snap.fps)}   capacity {_num(snap.capacity_fps, '.0f')} FPS   P95 {p95}")
    mem = snap.memory
    share = f" (engine {fmt_mib(mem.engine_mib)} + context {fmt_mib(mem.context_mib)})" if mem.engine_mib is not None else ""
    lines.append(f"GPU mem {fmt_mib(mem.process_mib)}{share}")
    if view.result is not None:
        behind = max(view.newest_index - view.result.frame.index, 0)
        lines.append(f"boxes {behind} frame{'s' * (behind != 1)} behind the picture · pace {view.pace}")
    if snap.state != EngineState.RUNNING:
        lines.append(snap.state.value.upper() + (f": {snap.error}" if snap.error else ""))
    return lines


def draw_panel(image: np.ndarray, lines: list[str], color: tuple[int, int, int], origin: str = "top") -> np.ndarray:
    """Text on a translucent dark panel at the top-left (or bottom, centred), in place."""
    scale = max(0.45, image.shape[1] / 1800)
    thick = max(1, round(scale * 2))
    sizes = [cv2.getTextSize(line, FONT, scale, thick)[0] for line in lines]
    line_h = max(h for _, h in sizes) + int(12 * scale)
    width = min(max(w for w, _ in sizes) + int(24 * scale), image.shape[1])
    height = min(line_h * len(lines) + int(12 * scale), image.shape[0])
    x0 = 0 if origin == "top" else max((image.shape[1] - width) // 2, 0)
    y0 = 0 if origin == "top" else image.shape[0] - height
    roi = image[y0 : y0 + height, x0 : x0 + width]
    roi[:] = (roi * 0.3).astype(np.uint8)
    for i, line in enumerate(lines):
        y = y0 + (i + 1) * line_h
        cv2.putText(image, line, (x0 + int(12 * scale), y), FONT, scale, color if i == 0 else (255, 255, 255), thick,
                    cv2.LINE_AA)
    return image


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = round(h * width / w / 2) * 2  # even, for yuv420p
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def render_half(view: HalfView, name: str, class_names: dict[int, str], width: int = HALF_WIDTH) -> np.ndarray:
    """One annotated, scaled, captioned half; dimmed with its state written large when the
    engine is off, failed or ended."""
    snap = view.snap
    inactive = snap is not None and snap.state in INACTIVE
    out = fit_width(view.image, width)
    if view.result is not None and not inactive:
        out = annotate(out, scaled(view.result.detections, out.shape[1] / view.image.shape[1]), class_names)
    else:
        out = out.copy()
    if inactive:
        out[:] = (out * 0.25).astype(np.uint8)
        word = snap.state.value.upper()
        scale = out.shape[1] / 250
        (tw, th), _ = cv2.getTextSize(word, FONT, scale, 6)
        cv2.putText(out, word, ((out.shape[1] - tw) // 2, (out.shape[0] + th) // 2), FONT, scale, (255, 255, 255), 6,
                    cv2.LINE_AA)
    role = snap.role.value if snap else "optimized"
    return draw_panel(out, overlay_lines(view, name), ROLE_COLORS.get(role, (255, 255, 255)))


def split_screen(left: np.ndarray, right: np.ndarray, half_width: int = HALF_WIDTH) -> np.ndarray:
    """Two halves side by side, each scaled to `half_width`, with a thin divider."""
    a, b = fit_width(left, half_width), fit_width(right, half_width)
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    out = np.concatenate([a, b], axis=1)
    out[:, half_width - 1 : half_width + 1] = (40, 40, 40)
    return out


def draw_headline(image: np.ndarray, headline: Headline | None) -> np.ndarray:
    """The comparison across the bottom, computed from the figures on screen."""
    if headline is None:
        return image
    return draw_panel(image, [headline.text()], (80, 220, 120), origin="bottom")


def tile_width(count: int, width: int = 1920) -> int:
    """How wide each tile of a near-square grid of `count` tiles is (even, for yuv420p)."""
    return (width // math.ceil(math.sqrt(max(count, 1)))) // 2 * 2


def mosaic(tiles: list[np.ndarray], width: int = 1920) -> np.ndarray:
    """Tiles in a near-square grid `width` pixels wide (even sizes, for yuv420p)."""
    n = max(len(tiles), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tile_w = tile_width(n, width)
    tile_h = round(tile_w * 9 / 16 / 2) * 2
    out = np.zeros((rows * tile_h, cols * tile_w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        if tile.shape[:2] != (tile_h, tile_w):
            tile = cv2.resize(tile, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        out[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w] = tile
    return out


def stream_tile(image: np.ndarray, result: Result | None, class_names: dict[int, str], caption: list[str],
                width: int = 960) -> np.ndarray:
    """One stream of a mosaic: its newest frame, the engine's latest boxes for it, a caption."""
    out = fit_width(image, width)
    if result is not None:
        out = annotate(out, scaled(result.detections, out.shape[1] / image.shape[1]), class_names)
    else:
        out = out.copy()
    return draw_panel(out, caption, (80, 220, 120))


def scaled(detections: Detections, factor: float) -> Detections:
    """The same boxes on a picture scaled by `factor` (drawing after scaling costs less)."""
    return Detections(detections.xyxy * factor, detections.confidence, detections.class_id)
