"""Synthetic scenes with exact ground truth: the sample clip and the demo detector's training data.

A scene is a deterministic function of its seed: textured shapes (one class per shape, colour
random) move, turn, grow and shrink over a slowly panning background, under drifting light,
with motion blur, sensor noise and foreground bars that occlude them. Every frame comes with
the boxes of what is actually visible: objects are drawn back to front into an owner map, and
an object's box is the bounding box of the pixels it still owns (before blur), so occlusion and
the image border are accounted for exactly. Objects with less than 30% of their area visible,
or with a box under `MIN_BOX` pixels, are left out of the labels.

The sample clip, seed `SAMPLE_SEED` rendered to an H.264 file with its labels, lives in
`rtmon.sample`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

CLASS_NAMES: dict[int, str] = {0: "disc", 1: "square", 2: "triangle", 3: "star", 4: "ring", 5: "cross"}

SAMPLE_SEED = 7
SAMPLE_FRAMES = 600
SAMPLE_FPS = 30
SAMPLE_SIZE = (1280, 720)
SAMPLE_CRF = 18
# Bump whenever the generator's output changes: cached clips of another version are regenerated.
SAMPLE_VERSION = "v1"

MIN_VISIBLE = 0.30
MIN_BOX = 10  # pixels, either side
BACKGROUND_PERIOD = 240  # frames between background changes
BACKGROUND_FADE = 30  # frames of cross-fade between two backgrounds
PAN_MARGIN = 96  # extra background pixels on each side, for the camera drift


def _unit_shapes() -> dict[int, list[np.ndarray]]:
    """Outline polygons of circumradius 1 per class; a second polygon is a hole."""

    def circle(radius: float, n: int = 64) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1) * radius

    def regular(n: int, phase: float) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
        return np.stack([np.cos(t), np.sin(t)], 1)

    star_t = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
    star_r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    arm = 0.36
    cross_half = np.array(
        [[arm, 1], [arm, arm], [1, arm], [1, -arm], [arm, -arm], [arm, -1]], dtype=np.float64
    )
    cross = np.concatenate([cross_half, -cross_half]) / math.hypot(1, arm)
    return {
        0: [circle(1.0)],
        1: [regular(4, np.pi / 4)],
        2: [regular(3, -np.pi / 2)],
        3: [np.stack([np.cos(star_t), np.sin(star_t)], 1) * star_r[:, None]],
        4: [circle(1.0), circle(0.56)],
        5: [cross],
    }


SHAPES = _unit_shapes()


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


SHAPE_AREA = {
    cls: _polygon_area(polys[0]) - sum(_polygon_area(p) for p in polys[1:]) for cls, polys in SHAPES.items()
}


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(70, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _pattern(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """A float32 (h, w) pattern in [0, 1]: stripes, checkers, blotches or dots."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = scale * rng.uniform(0.12, 0.4)
    kind = rng.integers(0, 4)
    if kind == 0:
        u = x * np.cos(angle) + y * np.sin(angle)
        return (np.sin(u * (2 * np.pi / period)) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    if kind == 1:
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 2:
        cells = max(2, int(max(height, width) / period))
        small = rng.random((cells, cells)).astype(np.float32)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    dots = np.zeros((height, width), np.float32)
    count = int(height * width / (period * period) * 0.6) + 1
    centers = rng.random((count, 2)) * (width, height)
    radius = max(1, int(period * 0.22))
    for cx, cy in centers.astype(int):
        cv2.circle(dots, (int(cx), int(cy)), radius, 1.0, -1)
    return dots


def _object_texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A square BGR float32 texture: two colours mixed by a pattern, with a shading ramp."""
    first, second = _random_color(rng), _random_color(rng)
    if np.abs(first - second).sum() < 120:
        second = 255 - first
    mix = _pattern(rng, side, side, side)[..., None] * rng.uniform(0.5, 1.0)
    texture = first * (1 - mix) + second * mix
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    ramp = 1 + rng.uniform(-0.35, 0.35) * (x - 0.5) + rng.uniform(-0.35, 0.35) * (y - 0.5)
    return np.clip(texture * ramp[..., None], 0, 255).astype(np.float32)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A BGR uint8 background: a colour gradient, low-frequency clouds and a faint texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(angle) + y * np.sin(angle)) / math.hypot(width, height) + 0.5
    first, second = _random_color(rng) * 0.8, _random_color(rng) * 0.8
    image = first * (1 - ramp[..., None]) + second * ramp[..., None]
    clouds = cv2.resize(
        rng.random((rng.integers(3, 9), rng.integers(5, 14))).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    image *= (0.7 + 0.6 * clouds.clip(0, 1))[..., None]
    texture = _pattern(rng, height, width, rng.uniform(40, 400))
    image += (texture[..., None] - 0.5) * rng.uniform(10, 60) * rng.choice([-1.0, 1.0], 3).astype(np.float32)
    for _ in range(rng.integers(0, 25)):  # clutter: thin lines, never closed shapes
        p0 = rng.random(2) * (width, height)
        p1 = p0 + rng.normal(0, 150, 2)
        color = tuple(float(c) for c in _random_color(rng) * 0.8)
        cv2.line(image, tuple(int(v) for v in p0), tuple(int(v) for v in p1), color, int(rng.integers(1, 4)))
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class _Object:
    cls: int
    texture: np.ndarray
    x: float
    y: float
    vx: float
    vy: float
    size: float  # circumscribed diameter, pixels
    growth: float  # per-frame factor on size
    angle: float
    spin: float
    z: float


@dataclass
class _Occluder:
    """A foreground bar (not a class): it hides parts of objects as it sweeps across."""

    color: np.ndarray
    x: float
    vx: float
    width: int
    angle: float


@dataclass
class _Scene:
    """The state of one scene, advanced one frame at a time; all randomness comes from its seed."""

    seed: int
    width: int
    height: int
    rng: np.random.Generator = field(init=False)
    objects: list[_Object] = field(default_factory=list)
    occluders: list[_Occluder] = field(default_factory=list)
    frame: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 0])
        rng = self.rng
        self.unit = min(self.width, self.height) / 720
        self.target = (int(rng.integers(6, 10)), int(rng.integers(10, 16)))
        self.speed = rng.uniform(1.5, 5.0) * self.unit
        self.blur_gain = rng.uniform(0.6, 1.4)
        self.light = rng.uniform(0, 2 * np.pi, 6)
        self.light_depth = rng.uniform(0.1, 0.45)
        self.noise_sigma = rng.uniform(1.5, 6.0)
        self.pan = rng.uniform(0, 2 * np.pi, 2)
        self._noise = self._noise_field()
        self._backgrounds: dict[int, np.ndarray] = {}
        for _ in range(rng.integers(*self.target)):
            self.objects.append(self._spawn(inside=True))
        for _ in range(rng.choice([0, 0, 1, 2])):
            self.occluders.append(self._occluder(inside=True))

    def _noise_field(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1])
        shape = (self.height + 64, self.width + 64, 3)
        noise = rng.normal(0, self.noise_sigma, shape).astype(np.float32)
        return np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)

    def _spawn(self, inside: bool) -> _Object:
        rng = self.rng
        size = float(np.exp(rng.uniform(np.log(34), np.log(250)))) * self.unit
        speed = self.speed * rng.uniform(0.2, 3.0)
        heading = rng.uniform(0, 2 * np.pi)
        vx, vy = speed * np.cos(heading), speed * np.sin(heading)
        if inside:
            x, y = rng.uniform(0, self.width), rng.uniform(0, self.height)
        else:  # just outside an edge, heading inwards
            r = size / 2
            edge = rng.integers(0, 4)
            if edge < 2:
                x = -r if edge == 0 else self.width + r
                y = rng.uniform(0, self.height)
                vx = abs(vx) if edge == 0 else -abs(vx)
            else:
                x = rng.uniform(0, self.width)
                y = -r if edge == 2 else self.height + r
                vy = abs(vy) if edge == 2 else -abs(vy)
        side = int(size * 1.25) + 8
        return _Object(
            cls=int(rng.integers(0, len(CLASS_NAMES))),
            texture=_object_texture(rng, side),
            x=float(x),
            y=float(y),
            vx=float(vx),
            vy=float(vy),
            size=size,
            growth=float(np.exp(rng.normal(0, 0.002))),
            angle=rng.uniform(0, 2 * np.pi),
            spin=rng.normal(0, 0.03),
            z=rng.random(),
        )

    def _occluder(self, inside: bool) -> _Occluder:
        rng = self.rng
        speed = rng.uniform(1, 6) * self.unit * rng.choice([-1, 1])
        width = int(rng.uniform(12, 40) * self.unit)
        start = rng.uniform(0, self.width) if inside else (-60 if speed > 0 else self.width + 60)
        return _Occluder(_random_color(rng) * 0.6, float(start), float(speed), width, rng.uniform(-0.4, 0.4))

    def background(self) -> np.ndarray:
        """This frame's background crop: the panned canvas, cross-faded between periods."""
        period, phase = divmod(self.frame, BACKGROUND_PERIOD)
        canvas = self._canvas(period)
        if phase < BACKGROUND_FADE and period > 0:
            weight = phase / BACKGROUND_FADE
            canvas = cv2.addWeighted(self._canvas(period - 1), 1 - weight, canvas, weight, 0)
        t = self.frame / 30
        ox = int(PAN_MARGIN * (1 + np.sin(t * 0.21 + self.pan[0])))
        oy = int(PAN_MARGIN * (1 + np.sin(t * 0.17 + self.pan[1])))
        return canvas[oy : oy + self.height, ox : ox + self.width].copy()

    def _canvas(self, period: int) -> np.ndarray:
        if period not in self._backgrounds:
            rng = np.random.default_rng([self.seed, 2, period])
            self._backgrounds = {k: v for k, v in self._backgrounds.items() if k >= period - 1}
            self._backgrounds[period] = _background(
                rng, self.width + 2 * PAN_MARGIN, self.height + 2 * PAN_MARGIN
            )
        return self._backgrounds[period]

    def step(self) -> None:
        """Advance one frame: move everything, let objects leave and new ones enter."""
        self.frame += 1
        margin = 10
        kept = []
        for obj in self.objects:
            obj.x += obj.vx
            obj.y += obj.vy
            obj.angle += obj.spin
            obj.size = float(np.clip(obj.size * obj.growth, 30 * self.unit, 260 * self.unit))
            r = obj.size / 2 + margin
            if -r < obj.x < self.width + r and -r < obj.y < self.height + r:
                kept.append(obj)
        self.objects = kept
        low, high = self.target
        wanted = low + (high - low) * (0.5 + 0.5 * np.sin(self.frame / 90 + self.light[5]))
        if len(self.objects) < wanted and self.rng.random() < 0.15:
            self.objects.append(self._spawn(inside=False))
        for bar in self.occluders:
            bar.x += bar.vx
        self.occluders = [b for b in self.occluders if -100 < b.x < self.width + 100]
        if len(self.occluders) < 2 and self.rng.random() < 0.004:
            self.occluders.append(self._occluder(inside=False))

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        image = self.background()
        owner = np.full((self.height, self.width), 255, np.uint8)
        drawn = []
        # Owner ids are uint8 with 254 (a bar) and 255 (background) taken: at most 254 objects.
        for index, obj in enumerate(sorted(self.objects, key=lambda o: o.z)[:254]):
            placed = self._draw(image, owner, obj, index)
            if placed is not None:
                drawn.append((index, obj, *placed))
        for bar in self.occluders:
            self._draw_bar(image, owner, bar)
        labels = [box for box in (self._visible_box(owner, *d) for d in drawn) if box is not None]
        image = self._light(image)
        image = self._add_noise(image)
        return image, np.array(labels, np.float32).reshape(-1, 5)

    def _draw(self, image: np.ndarray, owner: np.ndarray, obj: _Object, index: int):
        r = obj.size / 2
        speed = math.hypot(obj.vx, obj.vy)
        blur = int(speed * self.blur_gain) if speed * self.blur_gain >= 3 else 0
        pad = blur // 2 + 2
        x0, y0 = max(0, math.floor(obj.x - r) - pad), max(0, math.floor(obj.y - r) - pad)
        x1 = min(self.width, math.ceil(obj.x + r) + pad + 1)
        y1 = min(self.height, math.ceil(obj.y + r) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        w, h = x1 - x0, y1 - y0
        cos, sin = math.cos(obj.angle), math.sin(obj.angle)
        rotation = np.array([[cos, -sin], [sin, cos]]) * r
        mask = np.zeros((h, w), np.uint8)
        for hole, unit in enumerate(SHAPES[obj.cls]):
            points = unit @ rotation.T + (obj.x - x0, obj.y - y0)
            cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 0 if hole else 255, cv2.LINE_8, 4)
        side = obj.texture.shape[0]
        scale = obj.size / (side - 8) * 1.25
        a, b = scale * cos, scale * sin
        c = (side - 1) / 2
        warp = np.array([[a, -b, obj.x - x0 - (a * c - b * c)], [b, a, obj.y - y0 - (b * c + a * c)]])
        texture = cv2.warpAffine(
            obj.texture, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        region = image[y0:y1, x0:x1]
        if blur:
            kernel = np.zeros((blur | 1, blur | 1), np.float32)
            k = blur // 2
            dx, dy = obj.vx / speed * k, obj.vy / speed * k
            cv2.line(
                kernel, (round(k - dx), round(k - dy)), (round(k + dx), round(k + dy)), 1.0, 1, cv2.LINE_AA
            )
            kernel /= kernel.sum()
            alpha = cv2.filter2D(mask.astype(np.float32) / 255, -1, kernel)[..., None]
            premultiplied = cv2.filter2D(texture * (mask[..., None].astype(np.float32) / 255), -1, kernel)
            region[:] = np.clip(region * (1 - alpha) + premultiplied, 0, 255).astype(np.uint8)
        else:
            np.copyto(region, texture.astype(np.uint8), where=mask[..., None] > 0)
        owner[y0:y1, x0:x1][mask > 0] = index
        return x0, y0, mask, SHAPE_AREA[obj.cls] * r * r

    def _draw_bar(self, image: np.ndarray, owner: np.ndarray, bar: _Occluder) -> None:
        dx = math.tan(bar.angle) * self.height
        points = np.array(
            [
                [bar.x, 0],
                [bar.x + bar.width, 0],
                [bar.x + bar.width + dx, self.height],
                [bar.x + dx, self.height],
            ]
        )
        polygon = [np.round(points).astype(np.int32)]
        cv2.fillPoly(image, polygon, tuple(float(c) for c in bar.color))
        cv2.fillPoly(owner, polygon, 254)

    @staticmethod
    def _visible_box(owner, index, obj, x0, y0, mask, area) -> list[float] | None:
        region = owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        visible = region == index
        count = int(np.count_nonzero(visible))
        if count < MIN_VISIBLE * area:
            return None
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        box = [x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1]
        if box[2] - box[0] < MIN_BOX or box[3] - box[1] < MIN_BOX:
            return None
        return [obj.cls, *box]

    def _light(self, image: np.ndarray) -> np.ndarray:
        """Global gain and gamma drifting over time, and a broad light spot wandering across."""
        t = self.frame / 30
        p = self.light
        gain = 1 + 0.25 * np.sin(t * 0.5 + p[0]) + 0.08 * np.sin(t * 1.7 + p[1])
        gamma = np.exp(0.25 * np.sin(t * 0.33 + p[2]))
        lut = np.clip(255 * gain * (np.arange(256) / 255) ** gamma, 0, 255).astype(np.uint8)
        image = cv2.LUT(image, lut)
        gx, gy = 0.5 + 0.5 * np.sin(t * 0.23 + p[3]), 0.5 + 0.5 * np.sin(t * 0.31 + p[4])
        y, x = np.mgrid[0:9, 0:16].astype(np.float32)
        spot = 1 + self.light_depth * (np.exp(-((x / 15 - gx) ** 2 + (y / 8 - gy) ** 2) * 4) - 0.5)
        light = cv2.resize(
            (spot * 128).astype(np.uint8), (self.width, self.height), interpolation=cv2.INTER_LINEAR
        )
        return cv2.multiply(image, cv2.merge([light, light, light]), scale=1 / 128)

    def _add_noise(self, image: np.ndarray) -> np.ndarray:
        plus, minus = self._noise
        # Derived from the frame index, not drawn from the scene's generator, so that rendering
        # every k-th frame only leaves the scene's evolution unchanged.
        ox, oy = (self.frame * 23 + self.seed) % 64, (self.frame * 41 + self.seed * 7) % 64
        crop = np.s_[oy : oy + self.height, ox : ox + self.width]
        return cv2.subtract(cv2.add(image, plus[crop]), minus[crop])


def render_scene(
    seed: int, frames: int, size: tuple[int, int] = SAMPLE_SIZE, stride: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames 0, stride, 2·stride… < frames of the scene `seed`: (BGR uint8, labels (n,5) float32).

    Labels rows are `class_id, x1, y1, x2, y2` in pixels (x2, y2 exclusive). A scene's first
    frames do not depend on how many frames are asked for.
    """
    scene = _Scene(seed, *size)
    for index in range(frames):
        if index % stride == 0:
            yield scene.render()
        scene.step()
