"""The picture, from hand-made frames, results and snapshots (render.py is pure): the split screen
and the mosaic, what their overlays say, and that every character of it is one OpenCV's Hershey
font draws (OpenCV draws "?" in place of any other, one per UTF-8 byte)."""

from __future__ import annotations

import string

import cv2
import numpy as np
import pytest

from rtmon import render
from rtmon.core import Detections, EngineInfo, EngineState, Frame, GpuMemory, Result, Role, SourceState, StageTimes
from rtmon.metrics import EngineSnapshot, LatencyStats, StreamFigures
from rtmon.snapshot import MonitorSnapshot, SourceStatus, StreamSnapshot

CLASSES = {0: "car", 1: "café"}  # a class name a user's model may well have, accent and all
HERSHEY_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                 cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
                 cv2.FONT_HERSHEY_SCRIPT_COMPLEX)


def engine(name: str, role: Role, capacity: float, p95: float, state: EngineState = EngineState.RUNNING,
           error: str = "") -> EngineSnapshot:
    lat = LatencyStats(mean=p95 / 2, p50=p95 / 2, p95=p95, p99=p95 * 1.2, count=100)
    return EngineSnapshot(name, state, error, 100, 3, capacity / 2, capacity / 2, lat, {}, (), (), {},
                          memory=GpuMemory(process_mib=900.0, context_mib=500.0), role=role, capacity_fps=capacity)


def source(stream: int, state: SourceState = SourceState.RUNNING) -> SourceStatus:
    return SourceStatus("sample", "sample", 1280, 720, 30.0, 30.0, state, "", 500, 0, stream, "sample clip")


def frame(index: int, stream: int = 0) -> Frame:
    image = np.full((720, 1280, 3), 90, np.uint8)
    image[:, :640] = 160  # something to see: two greys
    return Frame(index, image, 0.0, stream)


def result(name: str, index: int, stream: int = 0) -> Result:
    boxes = Detections(np.array([[100, 100, 400, 300], [700, 200, 900, 500]]), np.array([0.9, 0.6]), np.array([0, 1]))
    return Result(name, frame(index, stream), boxes, StageTimes(1.0, 2.0, 1.0, 0.5))


def snapshot(engines: tuple[EngineSnapshot, ...], sources: tuple[SourceStatus, ...] = (source(0),),
             streams: tuple[StreamSnapshot, ...] = ()) -> MonitorSnapshot:
    info = {e.name: EngineInfo(e.name, "backend", "fp32", "NVIDIA H100 80GB HBM3 · MIG 1g.10gb", 640) for e in engines}
    return MonitorSnapshot(0.0, 10.0, "yolo11n", sources, engines, info, None, "", pace="max", streams=streams,
                           compared=(engines[0].name, engines[-1].name))


@pytest.fixture
def drawn_text(monkeypatch) -> list[str]:
    """Every string the picture hands to cv2.putText."""
    texts: list[str] = []
    put = cv2.putText

    def recording_put(image, text, *args, **kwargs):
        texts.append(text)
        return put(image, text, *args, **kwargs)

    monkeypatch.setattr(cv2, "putText", recording_put)
    return texts


def split_screen_inputs() -> tuple:
    # A slower "optimized" engine (the headline then says "slower" and "higher") and one that failed
    # with an error that is not ASCII, as errors from libraries often are not.
    engines = (engine("torch-fp32", Role.BASELINE, 100.0, 10.0),
               engine("ort-cpu", Role.OPTIMIZED, 80.0, 17.0, EngineState.FAILED, "CUDA error → out of memory × 2 … “oom”"))
    frames = {0: frame(109)}
    results = {"torch-fp32": {0: result("torch-fp32", 100)}, "ort-cpu": {0: result("ort-cpu", 108)}}
    return frames, results, snapshot(engines)


def mosaic_inputs() -> tuple:
    engines = (engine("torch-fp32", Role.BASELINE, 100.0, 10.0), engine("ort-cpu", Role.OPTIMIZED, 400.0, 2.0))
    sources = (source(0), source(1, SourceState.RECONNECTING), source(2))
    figures = StreamFigures(30.0, LatencyStats(5.0, 5.0, 8.0, 9.5), 100, 2)
    streams = tuple(StreamSnapshot(s, {"ort-cpu": figures}) for s in sources)
    frames = {0: frame(50, 0), 2: frame(50, 2)}  # stream 1 has no frame yet
    results = {"ort-cpu": {0: result("ort-cpu", 49, 0), 2: result("ort-cpu", 48, 2)}}
    return frames, results, snapshot(engines, sources, streams)


@pytest.mark.parametrize("inputs", [split_screen_inputs, mosaic_inputs], ids=["split screen", "mosaic"])
def test_every_character_drawn_is_one_the_hershey_fonts_have(drawn_text, inputs):
    frames, results, snap = inputs()
    render.compose(frames, results, snap, CLASSES)
    assert drawn_text
    for text in drawn_text:
        assert all(c in string.printable and c not in "\t\n\r\x0b\x0c" for c in text), repr(text)
        assert "?" not in text, repr(text)  # none of rtmon's overlays has one: a "?" would be a lost glyph


def test_the_split_screen_says_what_the_figures_say_in_ascii(drawn_text):
    frames, results, snap = split_screen_inputs()
    picture = render.compose(frames, results, snap, CLASSES)
    assert picture.shape == (540, 1920, 3)
    assert snap.headline.text() in drawn_text  # the one wording, drawn as it is
    assert "OPTIMIZED 1.2x slower than BASELINE (capacity), P95 1.7x higher" in drawn_text
    assert "BASELINE: torch-fp32 (fp32, NVIDIA H100 80GB HBM3 | MIG 1g.10gb)" in drawn_text
    assert "boxes 9 frames behind the picture | pace max" in drawn_text
    assert 'FAILED: CUDA error -> out of memory x 2 ... "oom"' in drawn_text
    assert "FAILED" in drawn_text  # written large across the failed engine's half
    assert "car 0.90" in drawn_text and "cafe 0.60" in drawn_text  # the accent dropped, the letter kept
    left, right = picture[:, :960].astype(float), picture[:, 960:].astype(float)
    assert right.mean() < 0.5 * left.mean()  # the failed engine's half is dimmed


def test_the_mosaic_has_a_tile_per_stream_with_its_figures(drawn_text):
    frames, results, snap = mosaic_inputs()
    picture = render.compose(frames, results, snap, CLASSES)
    assert picture.shape == (1080, 1920, 3)  # 2×2 tiles of 960×540
    captions = [t for t in drawn_text if t.endswith(("running", "reconnecting"))]
    assert captions == ["0: sample clip | running", "1: sample clip | reconnecting", "2: sample clip | running"]
    assert drawn_text.count("ort-cpu: FPS 30.0") == 3 and drawn_text.count("P99 9.5 ms") == 3
    assert picture[540:, 960:].max() == 0  # the fourth tile is empty
    assert picture[:540, 960:].mean() < picture[:540, :960].mean()  # stream 1 has no frame yet: black under its caption


def drawn(text: str, font: int = render.FONT) -> np.ndarray:
    image = np.zeros((60, 120), np.uint8)
    cv2.putText(image, text, (10, 40), font, 1.0, 255, 1)
    return image


@pytest.mark.parametrize("font", HERSHEY_FONTS)
def test_each_hershey_font_has_every_printable_ascii_glyph(font):
    """What `hershey_text` keeps is drawn as itself by every Hershey font of this OpenCV: no
    character comes out as the "?" that stands for a missing glyph."""
    question = drawn("?", font)
    for c in string.printable[:95]:  # digits, letters, punctuation, space
        if c in "? ":
            continue
        glyph = drawn(c, font)
        assert glyph.any() and not np.array_equal(glyph, question), f"{c!r} is not in Hershey font {font}"


def test_the_overlay_font_draws_other_characters_as_question_marks():
    """Why overlays are ASCII: the font they use drew "×" and "·" as "??" (fonts and OpenCV
    versions differ in what else they draw, which is why none of it is relied on)."""
    assert np.array_equal(drawn("0.8×"), drawn("0.8??")) and np.array_equal(drawn("a · b"), drawn("a ?? b"))


@pytest.mark.parametrize(("text", "drawn"), [
    ("OPTIMIZED 0.8× faster", "OPTIMIZED 0.8x faster"),
    ("9 frames behind · pace max", "9 frames behind | pace max"),
    ("starting…", "starting..."),
    ("45 °C, 3 µs", "45  degC, 3 us"),
    ("Ünïcödé naïve", "Unicode naive"),
    ("GPU 显卡 0\ttab", "GPU  0tab"),
])
def test_hershey_text_spells_out_or_drops_what_the_fonts_cannot_draw(text, drawn):
    assert render.hershey_text(text) == drawn
