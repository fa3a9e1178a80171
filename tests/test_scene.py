import json
import logging

import numpy as np
import pytest

from rtmon.errors import UserError
from rtmon.sample import check_labels_match, ensure_sample, load_labels, video_info
from rtmon.scene import CLASS_NAMES, MIN_BOX, _Object, _Scene, render_scene

CLASS_IDS = {name: cls for cls, name in CLASS_NAMES.items()}

SMALL = (640, 360)


def frames_of(seed, count, size=SMALL, stride=1):
    return list(render_scene(seed, count, size, stride))


def test_same_seed_same_frames_and_labels():
    first, second = frames_of(3, 6), frames_of(3, 6)
    for (image_a, labels_a), (image_b, labels_b) in zip(first, second, strict=True):
        assert np.array_equal(image_a, image_b)
        assert np.array_equal(labels_a, labels_b)


def test_different_seeds_differ():
    (image_a, labels_a), (image_b, labels_b) = frames_of(3, 1)[0], frames_of(4, 1)[0]
    assert not np.array_equal(image_a, image_b)
    assert not np.array_equal(labels_a, labels_b)


def test_strided_rendering_is_the_same_scene():
    every = frames_of(5, 10)
    strided = frames_of(5, 10, stride=3)
    for (image, labels), index in zip(strided, (0, 3, 6, 9), strict=True):
        assert np.array_equal(image, every[index][0])
        assert np.array_equal(labels, every[index][1])


def test_labels_are_sane_boxes_of_known_classes():
    width, height = 1280, 720
    counts = []
    for image, labels in render_scene(11, 40, (width, height), stride=4):
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert labels.dtype == np.float32 and labels.shape[1] == 5
        cls, x1, y1, x2, y2 = labels.T
        assert set(cls.astype(int)) <= set(CLASS_NAMES)
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
        assert ((x2 - x1) >= MIN_BOX).all() and ((y2 - y1) >= MIN_BOX).all()
        counts.append(len(labels))
    assert min(counts) >= 3 and max(counts) <= 20


def one_frame_of(objects):
    scene = _Scene(1, 1280, 720)
    scene.objects, scene.occluders = objects, []
    return scene.render()[1]


def still(cls, x, size, z):
    texture = np.full((int(size * 1.25) + 8,) * 2 + (3,), 200, np.float32)
    return _Object(cls, texture, x, 300.0, 0.0, 0.0, size, 1.0, 0.0, 0.0, z)


def test_boxes_cover_only_the_visible_part_of_an_occluded_object():
    square, disc = CLASS_IDS["square"], CLASS_IDS["disc"]
    alone = one_frame_of([still(square, 300.0, 200.0, 0.0)])
    assert alone.tolist() == [[square, 229, 229, 372, 372]]  # half side 100/sqrt(2)
    labels = one_frame_of([still(square, 300.0, 200.0, 0.0), still(disc, 400.0, 200.0, 1.0)])
    by_class = {int(row[0]): row[1:].tolist() for row in labels}
    assert by_class[disc] == [300, 200, 501, 401]
    x1, y1, x2, y2 = by_class[square]
    assert (x1, y1, y2) == (229, 229, 372) and 328 <= x2 <= 332  # cut where the disc begins
    hidden = one_frame_of([still(square, 300.0, 200.0, 0.0), still(disc, 300.0, 300.0, 1.0)])
    assert [int(row[0]) for row in hidden] == [disc]


def test_ensure_sample_round_trip(tmp_path):
    clip = ensure_sample(tmp_path, frames=12)
    assert clip.video.is_file() and clip.labels.is_file()
    assert video_info(clip.video) == (12, clip.size)
    labels = load_labels(clip.labels)
    assert sorted(labels) == list(range(12))
    expected = [labels for _, labels in render_scene(7, 12)]
    for index, rows in labels.items():
        assert np.array_equal(rows, expected[index])
    stamp = clip.video.stat().st_mtime_ns
    assert ensure_sample(tmp_path, frames=12) == clip
    assert clip.video.stat().st_mtime_ns == stamp  # valid cache: not regenerated


def test_corrupt_video_is_regenerated_with_a_warning(tmp_path, caplog):
    clip = ensure_sample(tmp_path, frames=8)
    clip.video.write_bytes(b"\x00" * 1000)
    with caplog.at_level(logging.WARNING, logger="rtmon.sample"):
        ensure_sample(tmp_path, frames=8)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "corrupt" in warning[0] and "\n" not in warning[0]
    assert video_info(clip.video) == (8, clip.size)


def test_mismatched_labels_are_regenerated_with_a_warning(tmp_path, caplog):
    clip = ensure_sample(tmp_path, frames=8)
    meta = json.loads(clip.labels.read_text())
    meta["labels"] = meta["labels"][:5]
    clip.labels.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="rtmon.sample"):
        ensure_sample(tmp_path, frames=8)
    assert any("5 frames" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(load_labels(clip.labels)) == 8


def test_labels_that_do_not_match_the_video_are_a_one_line_user_error(tmp_path):
    clip = ensure_sample(tmp_path, frames=8)
    check_labels_match(clip.labels, 8, clip.size)
    with pytest.raises(
        UserError, match=r"^labels: .* 8 frames of 1280x720 but the video has 9 frames"
    ) as info:
        check_labels_match(clip.labels, 9, clip.size)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"^labels: .*640x360"):
        check_labels_match(clip.labels, 8, (640, 360))


def test_unreadable_labels_are_a_user_error(tmp_path):
    path = tmp_path / "broken.labels.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match=r"^labels: broken\.labels\.json is not valid JSON$"):
        load_labels(path)
    with pytest.raises(UserError, match=r"^labels: cannot read"):
        load_labels(tmp_path / "missing.json")
