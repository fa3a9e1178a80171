"""The sample clip: the synthetic scene `SAMPLE_SEED` (`rtmon.scene`) as an H.264 MP4 with its
per-frame ground truth, cached so rtmon shows real detections on a real video with no camera
and no network.

`ensure_sample` writes the clip once to a cache (H.264 MP4 + a labels JSON that records the
video's sha256) and regenerates it, with a one-line warning, whenever either file is missing,
corrupt or from another version.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmon.errors import UserError
from rtmon.files import sha256_of, write_text_atomically
from rtmon.scene import (
    CLASS_NAMES,
    SAMPLE_CRF,
    SAMPLE_FPS,
    SAMPLE_FRAMES,
    SAMPLE_SEED,
    SAMPLE_SIZE,
    SAMPLE_VERSION,
    render_scene,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleClip:
    """The cached sample clip: an H.264 MP4 and its per-frame ground truth."""

    video: Path
    labels: Path
    frames: int
    fps: float
    size: tuple[int, int]
    class_names: dict[int, str]


def sample_paths(cache_dir: Path) -> tuple[Path, Path]:
    """Where the sample clip of this generator version lives: (video, labels)."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"sample-{SAMPLE_VERSION}.mp4", cache_dir / f"sample-{SAMPLE_VERSION}.labels.json"


def ensure_sample(cache_dir: Path, frames: int = SAMPLE_FRAMES) -> SampleClip:
    """The sample clip in `cache_dir`, generated the first time and whenever the cache is unusable.

    `frames` exists for tests; the real sample is `SAMPLE_FRAMES` long.
    """
    video, labels = sample_paths(cache_dir)
    clip = SampleClip(video, labels, frames, float(SAMPLE_FPS), SAMPLE_SIZE, dict(CLASS_NAMES))
    problem = _sample_problem(clip)
    if problem is None:
        return clip
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"sample: cannot create cache folder {cache_dir} ({exc.strerror})") from None
    with _locked(Path(cache_dir) / f".sample-{SAMPLE_VERSION}.lock"):
        problem = _sample_problem(clip)  # another process may have generated it meanwhile
        if problem is None:
            return clip
        if problem != "not generated yet":
            log.warning("sample clip: %s; regenerating it", problem)
        else:
            log.info("sample clip: generating %d frames into %s", frames, cache_dir)
        _write_sample(clip)
    return clip


def _sample_problem(clip: SampleClip) -> str | None:
    """What is wrong with the cached clip, in a few words; None when it is usable."""
    if not clip.video.is_file() and not clip.labels.is_file():
        return "not generated yet"
    for path in (clip.video, clip.labels):
        if not path.is_file():
            return f"{path.name} is missing"
    try:
        meta = json.loads(clip.labels.read_text())
        recorded = (meta["version"], meta["frames"], tuple(meta["size"]), meta["video_sha256"])
        if len(meta["labels"]) != meta["frames"]:
            return f"{clip.labels.name} lists {len(meta['labels'])} frames but says {meta['frames']}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{clip.labels.name} is unreadable ({type(exc).__name__})"
    expected = (SAMPLE_VERSION, clip.frames, clip.size)
    if recorded[:3] != expected:
        return f"{clip.labels.name} is for version/frames/size {recorded[:3]}, not {expected}"
    if sha256_of(clip.video) != recorded[3]:
        return f"{clip.video.name} is corrupt (its sha256 differs from the one its labels recorded)"
    try:
        check_labels_match(clip.labels, *video_info(clip.video))
    except UserError as exc:
        return str(exc)
    return None


def _write_sample(clip: SampleClip) -> None:
    from rtmon.sinks import H264Writer

    for path in (clip.video, clip.labels):
        path.unlink(missing_ok=True)
    all_labels = []
    # Encoding (libx264, which releases the GIL) overlaps with rendering the next frame.
    with ThreadPoolExecutor(1) as encoder, H264Writer(clip.video, clip.fps, clip.size, SAMPLE_CRF) as writer:
        pending = None
        for image, labels in render_scene(SAMPLE_SEED, clip.frames, clip.size):
            if pending is not None:
                pending.result()
            pending = encoder.submit(writer.write, image)
            all_labels.append(labels.astype(int).tolist())
        if pending is not None:
            pending.result()
    meta = {
        "version": SAMPLE_VERSION,
        "seed": SAMPLE_SEED,
        "frames": clip.frames,
        "fps": clip.fps,
        "size": list(clip.size),
        "class_names": {str(k): v for k, v in CLASS_NAMES.items()},
        "box_format": "class_id, x1, y1, x2, y2 in pixels; x2 and y2 exclusive",
        "video_sha256": sha256_of(clip.video),
        "labels": all_labels,
    }
    write_text_atomically(clip.labels, json.dumps(meta, separators=(",", ":")))


def load_labels(path: Path) -> dict[int, np.ndarray]:
    """Frame index → (n, 5) float32 rows `class_id, x1, y1, x2, y2` from a labels JSON."""
    meta = _read_labels_json(Path(path))
    return {i: np.array(rows, np.float32).reshape(-1, 5) for i, rows in enumerate(meta["labels"])}


def check_labels_match(path: Path, frames: int, size: tuple[int, int]) -> None:
    """Raise a one-line UserError unless the labels file describes a video of `frames` frames of `size`."""
    meta = _read_labels_json(Path(path))
    labelled = (len(meta["labels"]), tuple(meta.get("size", ())))
    if labelled != (frames, tuple(size)):
        raise UserError(
            f"labels: {Path(path).name} describes {labelled[0]} frames of {_wxh(labelled[1])} "
            f"but the video has {frames} frames of {_wxh(size)}"
        )


def video_info(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a video file; a one-line UserError if it does not open."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UserError(f"video: cannot open {Path(path).name}")
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if frames <= 0 or min(size) <= 0:
            raise UserError(f"video: {Path(path).name} has no readable frames")
        return frames, size
    finally:
        capture.release()


def _read_labels_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"labels: cannot read {path} ({exc.strerror})") from None
    except ValueError:
        raise UserError(f"labels: {path.name} is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        raise UserError(f"labels: {path.name} has no 'labels' list of per-frame boxes")
    return meta


def _wxh(size) -> str:
    return "x".join(str(v) for v in size) or "unknown size"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX flock; elsewhere, atomic renames alone)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
