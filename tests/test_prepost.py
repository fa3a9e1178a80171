"""Shared pre/post-processing, tested once against ultralytics' own implementation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes as ul_scale_boxes

from rtmon.engines.prepost import (
    PAD_VALUE,
    Letterbox,
    Thresholds,
    letterbox_cpu,
    nms,
    postprocess,
    preprocess_cpu,
    preprocess_torch,
    scale_boxes,
)

SIZES = [(1280, 720), (640, 480), (1920, 1080), (333, 777), (640, 640), (100, 50)]


def _image(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_letterbox_matches_ultralytics_pixel_for_pixel(w, h):
    image = _image(w, h)
    ours, box = letterbox_cpu(image, 640)
    theirs = LetterBox((640, 640), auto=False)(image=image)
    assert ours.shape == (640, 640, 3)
    np.testing.assert_array_equal(ours, theirs)
    assert box.left + box.new_w + box.right == 640 and box.top + box.new_h + box.bottom == 640


def test_letterbox_pads_with_grey_and_centres():
    ours, box = letterbox_cpu(np.zeros((720, 1280, 3), np.uint8), 640)
    assert (box.new_w, box.new_h, box.left, box.top) == (640, 360, 0, 140)
    assert (ours[:140] == PAD_VALUE).all() and (ours[500:] == PAD_VALUE).all()
    assert (ours[140:500] == 0).all()


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_scale_boxes_round_trip_and_agrees_with_ultralytics(w, h):
    box = Letterbox.fit(w, h, 640)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, [w, h], size=(50, 2))
    wh = rng.uniform(1, [w / 3, h / 3], size=(50, 2))
    src = np.clip(np.concatenate([xy, xy + wh], 1), 0, [w, h, w, h]).astype(np.float32)
    # forward map into the network input, as the network would see the boxes
    fwd = src.copy()
    fwd[:, [0, 2]] = fwd[:, [0, 2]] * box.new_w / w + box.left
    fwd[:, [1, 3]] = fwd[:, [1, 3]] * box.new_h / h + box.top
    back = scale_boxes(torch.from_numpy(fwd), box).numpy()
    np.testing.assert_allclose(back, src, atol=1e-3)
    theirs = ul_scale_boxes((640, 640), torch.from_numpy(fwd.copy()), (h, w)).numpy()
    np.testing.assert_allclose(back, theirs, atol=1e-3)


def test_preprocess_cpu_is_rgb_nchw_unit_range():
    image = _image(1280, 720)
    blob, _ = preprocess_cpu(image, 640)
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32 and blob.flags.c_contiguous
    padded, _ = letterbox_cpu(image, 640)
    np.testing.assert_allclose(blob[0, 0], padded[:, :, 2] / 255.0, atol=1e-7)  # R channel first


def test_preprocess_cpu_in_float16_is_the_float32_blob_rounded_and_not_slower_than_it():
    image = _image(1280, 720)
    half, _ = preprocess_cpu(image, 640, np.float16)
    full, _ = preprocess_cpu(image, 640)
    assert half.dtype == np.float16 and half.flags.c_contiguous
    np.testing.assert_array_equal(half, full.astype(np.float16))
    # numpy's own float16 arithmetic is scalar: ~8x the float32 path on one core (a Triton client
    # of an fp16 model spent 30 ms a frame there). Generous bound for a noisy machine.
    timings = {}
    for dtype in (np.float32, np.float16):
        start = time.perf_counter()
        for _ in range(5):
            preprocess_cpu(image, 640, dtype)
        timings[dtype] = time.perf_counter() - start
    assert timings[np.float16] < 3 * timings[np.float32], timings


@pytest.mark.parametrize(("w", "h"), [(1280, 720), (640, 480), (333, 777)])
def test_preprocess_torch_matches_cpu_path(w, h):
    image = _image(w, h, seed=3)
    cpu, box_cpu = preprocess_cpu(image, 640)
    gpu_path, box_torch = preprocess_torch(torch.from_numpy(image), 640, torch.float32)
    assert box_cpu == box_torch
    # OpenCV's fixed-point bilinear and torch's float bilinear differ by at most one grey level.
    assert np.abs(gpu_path.numpy() - cpu).max() <= 1.0 / 255 + 1e-6


def _random_prediction(nc: int = 5, n: int = 2000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 600 + 20
    sizes = torch.rand(n, 2, generator=g) * 120 + 8
    # clusters of overlapping boxes so suppression actually happens
    centres[n // 2 :] = centres[: n - n // 2] + torch.randn(n - n // 2, 2, generator=g) * 4
    scores = torch.rand(n, nc, generator=g) ** 3
    return torch.cat([centres, sizes, scores], 1).T.unsqueeze(0)  # 1 x (4+nc) x n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_ultralytics_reference(seed):
    pred = _random_prediction(seed=seed)
    t = Thresholds(conf=0.25, iou=0.7, max_det=300)
    ours = nms(pred[0], t)
    (theirs,) = non_max_suppression(pred.clone(), t.conf, t.iou, max_det=t.max_det)
    assert len(ours) > 10
    torch.testing.assert_close(ours, theirs)


def test_nms_is_class_aware_and_respects_max_det():
    # two identical boxes of different classes both survive; same class, one survives
    pred = torch.tensor([[100, 100, 50, 50, 0.9, 0.0], [100, 100, 50, 50, 0.0, 0.8], [101, 100, 50, 50, 0.85, 0.0]]).T
    rows = nms(pred, Thresholds())
    assert sorted(rows[:, 5].tolist()) == [0.0, 1.0]
    assert len(nms(_random_prediction()[0], Thresholds(max_det=7))) == 7


def test_postprocess_returns_source_pixel_detections():
    box = Letterbox.fit(1280, 720, 640)
    # one confident box centred in the picture area of the letterboxed input
    pred = torch.zeros(1, 4 + 3, 10)
    pred[0, :4, 0] = torch.tensor([320.0, 320.0, 100.0, 50.0])
    pred[0, 4 + 2, 0] = 0.9
    det = postprocess(pred, box)
    assert len(det) == 1 and det.class_id[0] == 2
    np.testing.assert_allclose(det.xyxy[0], [540, 310, 740, 410], atol=1e-3)
