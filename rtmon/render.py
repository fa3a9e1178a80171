"""Drawing, as pure functions of (frames, results, snapshot): boxes, overlays, split screen, mosaic.

`compose()` is the one picture every front end shows and every sink writes: the split screen of
the compared pair with one source, the mosaic of every stream with several. Each half of the
split screen shows the newest frame of the feed with the boxes *its engine* last delivered for
that stream, so a slow engine's boxes visibly trail moving objects. Each half names its role
(BASELINE / OPTIMIZED), the engine and the device it really runs on, and its measured figures;
the headline across the bottom compares the two from the same figures (`Headline.text()`).

Text goes through `hershey_text()`: OpenCV draws only its Hershey fonts, which hold printable
ASCII and nothing else (any other character comes out as one "?" per UTF-8 byte), so overlays
are written in ASCII and whatever arrives from elsewhere (an error, a device name) is made ASCII
before it is drawn. The picture then reads the same with every OpenCV version.
"""

from __future__ import annotations

import colorsys
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from rtmon.core import Detections, EngineInfo, EngineState, Frame, Result, Role
from rtmon.formatting import fmt, fmt_mib
from rtmon.metrics import EngineSnapshot, Headline, StreamFigures
from rtmon.snapshot import MonitorSnapshot, SourceStatus

FONT = cv2.FONT_HERSHEY_SIMPLEX
HALF_WIDTH = 960
BLANK_SHAPE = (540, 960, 3)  # what a half or a tile shows before its source's first frame
ROLE_COLORS = {Role.BASELINE: (60, 140, 255), Role.PEER: (200, 200, 80), Role.OPTIMIZED: (80, 220, 120)}  # BGR
HEADLINE_COLOR = ROLE_COLORS[Role.OPTIMIZED]
INACTIVE = (EngineState.OFF, EngineState.FAILED, EngineState.ENDED)
SEPARATOR = " | "
# What a Hershey font cannot draw, as the ASCII a reader expects in its place.
ASCII_FOR = {"×": "x", "·": "|", "•": "*", "…": "...", "→": "->", "←": "<-", "—": "-", "–": "-", "−": "-",
             "°": " deg", "µ": "u", "≤": "<=", "≥": ">=", "‘": "'", "’": "'", "“": '"', "”": '"'}


def hershey_text(text: str) -> str:
    """`text` in the characters every Hershey font has (printable ASCII): known symbols spelled
    out, accents dropped (NFKD), anything else left out rather than drawn as "?"."""
    spelled = "".join(ASCII_FOR.get(c, c) for c in text)
    plain = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in plain if " " <= c <= "~")


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, color: tuple[int, int, int],
             thickness: int) -> None:
    """`cv2.putText` of `hershey_text(text)`, anti-aliased, in place."""
    cv2.putText(image, hershey_text(text), origin, FONT, scale, color, thickness, cv2.LINE_AA)


def text_size(text: str, scale: float, thickness: int) -> tuple[tuple[int, int], int]:
    """((width, height), baseline) of `text` as `put_text` draws it."""
    return cv2.getTextSize(hershey_text(text), FONT, scale, thickness)


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
        (tw, th), base = text_size(label, scale, thickness)
        ty = max(y1, th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base - 2), (x1 + tw + 2, ty), color, -1)
        put_text(out, label, (x1 + 1, ty - base), scale, (0, 0, 0), thickness)
    return out


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
    device = info.device if info and info.device else "..."
    precision = f"{info.precision}, " if info and info.precision else ""
    return f"{role}: {name} ({precision}{device})"


def overlay_lines(view: HalfView, name: str) -> list[str]:
    """The text block in a half's corner: role, engine, device; delivered FPS, capacity, P95,
    busy share; GPU memory with its counter; how old the boxes are; the state when not running."""
    snap = view.snap
    lines = [title_line(snap, view.info, name)]
    if snap is None:
        return [*lines, "starting..."]
    p95 = fmt(snap.latency.p95 if snap.latency else None, ".1f", " ms")
    lines.append(f"FPS {fmt(snap.fps)}   capacity {fmt(snap.capacity_fps, '.0f')} FPS   P95 {p95}")
    mem = snap.memory
    share = f" (engine {fmt_mib(mem.engine_mib)} + context {fmt_mib(mem.context_mib)})" if mem.engine_mib is not None else ""
    lines.append(f"GPU mem {fmt_mib(mem.process_mib)}{share}")
    if view.result is not None:
        behind = max(view.newest_index - view.result.frame.index, 0)
        lines.append(f"boxes {behind} frame{'s' * (behind != 1)} behind the picture{SEPARATOR}pace {view.pace}")
    if snap.state != EngineState.RUNNING:
        lines.append(snap.state.value.upper() + (f": {snap.error}" if snap.error else ""))
    return lines


def draw_panel(image: np.ndarray, lines: list[str], color: tuple[int, int, int], origin: str = "top") -> np.ndarray:
    """Text on a translucent dark panel at the top-left (or bottom, centred), in place."""
    scale = max(0.45, image.shape[1] / 1800)
    thick = max(1, round(scale * 2))
    sizes = [text_size(line, scale, thick)[0] for line in lines]
    line_h = max(h for _, h in sizes) + int(12 * scale)
    width = min(max(w for w, _ in sizes) + int(24 * scale), image.shape[1])
    height = min(line_h * len(lines) + int(12 * scale), image.shape[0])
    x0 = 0 if origin == "top" else max((image.shape[1] - width) // 2, 0)
    y0 = 0 if origin == "top" else image.shape[0] - height
    roi = image[y0 : y0 + height, x0 : x0 + width]
    roi[:] = (roi * 0.3).astype(np.uint8)
    for i, line in enumerate(lines):
        y = y0 + (i + 1) * line_h
        put_text(image, line, (x0 + int(12 * scale), y), scale, color if i == 0 else (255, 255, 255), thick)
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
        (tw, th), _ = text_size(word, scale, 6)
        put_text(out, word, ((out.shape[1] - tw) // 2, (out.shape[0] + th) // 2), scale, (255, 255, 255), 6)
    role = snap.role if snap else Role.OPTIMIZED
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
    return draw_panel(image, [headline.text()], HEADLINE_COLOR, origin="bottom")


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
    return draw_panel(out, caption, HEADLINE_COLOR)


def tile_caption(source: SourceStatus, engine: str, figures: StreamFigures | None) -> list[str]:
    """A mosaic tile's caption: the stream, its state, and the shown engine's figures for it."""
    p99 = figures.latency.p99 if figures and figures.latency else None
    return [f"{source.stream}: {source.label or source.uri}{SEPARATOR}{source.state}",
            f"{engine}: FPS {fmt(figures.fps if figures else None)}",
            f"P99 {fmt(p99, '.1f', ' ms')}"]


def scaled(detections: Detections, factor: float) -> Detections:
    """The same boxes on a picture scaled by `factor` (drawing after scaling costs less)."""
    return Detections(detections.xyxy * factor, detections.confidence, detections.class_id)


# --- the picture of one instant -------------------------------------------------------------------


def compose(frames: Mapping[int, Frame], results: Mapping[str, Mapping[int, Result]], snapshot: MonitorSnapshot,
            class_names: dict[int, str]) -> np.ndarray:
    """The picture of this instant, from the newest frame of each stream (`frames`), each engine's
    latest result per stream (`results[engine][stream]`) and the figures of `snapshot`: the split
    screen of `snapshot.compared` with one source, the mosaic of every stream with several."""
    if len(snapshot.sources) > 1:
        return compose_mosaic(frames, results, snapshot, class_names)
    return compose_split(frames, results, snapshot, class_names)


def compose_split(frames: Mapping[int, Frame], results: Mapping[str, Mapping[int, Result]],
                  snapshot: MonitorSnapshot, class_names: dict[int, str]) -> np.ndarray:
    """Left the baseline, right the optimized engine, on the newest frame of stream 0 (or, before
    the feed has one, the frame each engine answered), with the headline across the bottom."""
    pair = snapshot.compared or (snapshot.engines[0].name, snapshot.engines[-1].name)
    halves = []
    for name in pair:
        result = results.get(name, {}).get(0)
        frame = frames.get(0) or (result.frame if result else None)
        image = frame.image if frame else np.zeros(BLANK_SHAPE, np.uint8)
        view = HalfView(image, result, snapshot.engine(name), snapshot.engine_info.get(name), snapshot.pace,
                        frame.index if frame else 0)
        halves.append(render_half(view, name, class_names))
    return draw_headline(split_screen(halves[0], halves[1]), snapshot.headline)


def compose_mosaic(frames: Mapping[int, Frame], results: Mapping[str, Mapping[int, Result]],
                   snapshot: MonitorSnapshot, class_names: dict[int, str]) -> np.ndarray:
    """Every stream as a tile with the compared optimized engine's boxes and its figures for it."""
    engine = snapshot.compared[1] if snapshot.compared else snapshot.engines[-1].name
    figures = {stream.source.stream: stream.engines.get(engine) for stream in snapshot.streams}
    latest = results.get(engine, {})
    width = tile_width(len(snapshot.sources))
    tiles = []
    for source in snapshot.sources:
        frame = frames.get(source.stream)
        image = frame.image if frame else np.zeros(BLANK_SHAPE, np.uint8)
        caption = tile_caption(source, engine, figures.get(source.stream))
        tiles.append(stream_tile(image, latest.get(source.stream), class_names, caption, width))
    return mosaic(tiles)
