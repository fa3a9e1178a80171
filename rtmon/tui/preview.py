"""The in-terminal preview (key v): the split screen in half-block characters, for SSH without a window."""

from __future__ import annotations

from functools import lru_cache, partial

import cv2
import numpy as np
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import Worker, WorkerState

UPPER_HALF = "▀"


def fit_size(image_w: int, image_h: int, cells_w: int, cells_h: int) -> tuple[int, int]:
    """Largest (pixels wide, pixels high) that keeps the image's aspect within the cells.

    A cell shows two pixels stacked, so the box is `cells_w` × `2 * cells_h` pixels; the height
    is kept even so every cell gets a top and a bottom pixel.
    """
    box_h = 2 * cells_h
    scale = min(cells_w / image_w, box_h / image_h)
    width = max(1, min(cells_w, round(image_w * scale)))
    height = max(2, min(box_h, round(image_h * scale / 2) * 2))
    return width, height


@lru_cache(maxsize=16384)
def _rgb(red: int, green: int, blue: int) -> RichColor:
    return RichColor.from_rgb(red, green, blue)


def half_block_strips(image_bgr: np.ndarray, cells_w: int, cells_h: int) -> list[Strip]:
    """`image_bgr` as lines of '▀' cells: foreground = the upper pixel, background = the lower."""
    width, height = fit_size(image_bgr.shape[1], image_bgr.shape[0], cells_w, cells_h)
    small = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    # 6 bits a channel (low bits copied from the high ones, so 0 and 255 stay exact): colours
    # repeat far more often, and the colour cache above stays useful from frame to frame.
    rgb = ((rgb & 0xFC) | (rgb >> 6)).tolist()
    pad = (cells_w - width) // 2
    lead = [Segment(" " * pad)] if pad else []
    strips: list[Strip] = []
    for row in range(height // 2):
        top, bottom = rgb[2 * row], rgb[2 * row + 1]
        segments = lead + [
            Segment(UPPER_HALF, Style.from_color(_rgb(*up), _rgb(*down)))
            for up, down in zip(top, bottom, strict=True)
        ]
        strips.append(Strip(segments, pad + width))
    return strips


class PreviewWidget(Widget):
    """A low-resolution picture of the split screen in half-block characters, for SSH without a window.

    Scaling and colouring a picture takes tens of milliseconds, so it happens in a thread worker,
    one at a time: a picture that arrives while one is being converted waits, and only the newest
    waiting picture is converted next. (Cancelling the conversion in flight instead would starve
    the preview whenever pictures arrive faster than a slow machine converts them.)
    """

    # Arrays do not compare to a single bool, so every assignment counts as a change.
    frame: reactive[np.ndarray | None] = reactive(None, always_update=True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._strips: list[Strip] = []
        self._converting = False
        self._stale = False

    def watch_frame(self, frame: np.ndarray | None) -> None:
        self._convert()

    def on_resize(self) -> None:
        self._convert()

    def _convert(self) -> None:
        frame, (width, height) = self.frame, self.size
        if frame is None or width < 1 or height < 1:
            self._strips = []
            self.refresh()
            return
        if self._converting:
            self._stale = True
            return
        self._converting, self._stale = True, False
        self.run_worker(partial(half_block_strips, frame, width, height), thread=True, group="preview")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "preview" or not event.worker.is_finished:
            return
        if event.state == WorkerState.SUCCESS:
            self._strips = event.worker.result
            self.refresh()
        self._converting = False
        if self._stale:
            self._convert()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self.frame is None:
            return Strip([Segment("preview: no picture yet")]) if y == 0 else Strip.blank(width)
        return self._strips[y].crop_extend(0, width, None) if y < len(self._strips) else Strip.blank(width)
