"""The NMS that GPU engines record inside their CUDA graph (`fixed_shape_nms`), run here on the
CPU: the same code, the same decisions as the shared host NMS (`nms_rows` / `postprocess`,
tested against ultralytics in test_prepost.py), with fixed shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtmon.engines.prepost import (
    Letterbox,
    Thresholds,
    detections_from_fixed,
    fixed_shape_nms,
    nms_rows,
    postprocess,
    scale_boxes,
    top_candidates,
)

BOX = Letterbox.fit(1280, 720, 640)


def _prediction(batch: int, anchors: int = 2000, classes: int = 6, objects: int = 12, seed: int = 0,
                round_scores: bool = False) -> torch.Tensor:
    """Raw head outputs (B, 4+nc, N) shaped like YOLO's: clusters of overlapping boxes around a
    few objects (several anchors per object, scores falling off), the rest background."""
    rng = np.random.default_rng(seed)
    pred = np.zeros((batch, 4 + classes, anchors), np.float32)
    for b in range(batch):
        cx, cy = rng.uniform(20, 620, anchors), rng.uniform(150, 490, anchors)
        w, h = rng.uniform(4, 60, anchors), rng.uniform(4, 60, anchors)
        scores = rng.uniform(0, 0.2, (classes, anchors))
        for _ in range(objects):
            centre, size, cls = rng.uniform([40, 160], [600, 480]), rng.uniform(15, 120, 2), rng.integers(classes)
            members = rng.choice(anchors, 25, replace=False)
            cx[members] = centre[0] + rng.normal(0, size[0] * 0.08, 25)
            cy[members] = centre[1] + rng.normal(0, size[1] * 0.08, 25)
            w[members] = size[0] * rng.uniform(0.8, 1.2, 25)
            h[members] = size[1] * rng.uniform(0.8, 1.2, 25)
            scores[cls, members] = rng.uniform(0.2, 0.98, 25)
        if round_scores:  # FP16 network outputs: many equal scores
            scores = scores.astype(np.float16).astype(np.float32)
        pred[b, 0], pred[b, 1], pred[b, 2], pred[b, 3] = cx, cy, w, h
        pred[b, 4:] = scores
    return torch.from_numpy(pred)


def _host_on_candidates(pred: torch.Tensor, k: int, th: Thresholds) -> list[np.ndarray]:
    """The shared host NMS on the same candidates, rescaled: the reference per image."""
    out = []
    for rows in top_candidates(pred, k):
        passing = rows[rows[:, 4] > th.conf]
        kept = nms_rows(passing, th)
        out.append(torch.cat((scale_boxes(kept[:, :4], BOX), kept[:, 4:]), 1).numpy())
    return out


@pytest.mark.parametrize("round_scores", [False, True], ids=["distinct scores", "fp16 ties"])
def test_keeps_the_same_boxes_as_the_host_nms_on_the_same_candidates(round_scores):
    th = Thresholds()
    pred = _prediction(4, round_scores=round_scores)
    out = fixed_shape_nms(pred, BOX, th, k=512).numpy()
    reference = _host_on_candidates(pred, 512, th)
    for rows, want in zip(out, reference, strict=True):
        got = detections_from_fixed(rows)
        assert got is not None  # exact: few candidates, short chains
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.xyxy, want[:, :4], atol=1e-3)  # one to one, same order
        np.testing.assert_array_equal(got.class_id, want[:, 5].astype(int))
        np.testing.assert_allclose(got.confidence, want[:, 4], atol=1e-3)


def test_equals_postprocess_on_the_whole_prediction_when_scores_are_distinct():
    th = Thresholds()
    pred = _prediction(3, seed=5)
    out = fixed_shape_nms(pred, BOX, th).numpy()
    for i in range(3):
        got, want = detections_from_fixed(out[i]), postprocess(pred[i], BOX, th)
        assert len(got) == len(want)
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_id, want.class_id)


def test_fixed_shapes_and_padding():
    th = Thresholds(max_det=50)
    pred = _prediction(2, seed=1)
    out = fixed_shape_nms(pred, BOX, th, k=512)
    assert out.shape == (2, 51, 6) and out.dtype == torch.float32
    for rows in out.numpy():
        count = int(rows[-1, 0])
        assert 0 < count <= 50 and rows[-1, 1] == 1.0
        assert (rows[count:-1] == 0).all()  # unused rows are zero
        assert (np.diff(rows[:count, 4]) <= 0).all()  # best first
        assert (rows[:count, [0, 2]] <= 1280).all() and (rows[:count, [1, 3]] <= 720).all()


def test_max_det_keeps_the_best_boxes():
    th = Thresholds(conf=0.25, iou=0.7, max_det=3)
    pred = _prediction(1, seed=2)
    got = detections_from_fixed(fixed_shape_nms(pred, BOX, th).numpy()[0])
    want = postprocess(pred[0], BOX, th)
    assert len(got) == len(want) == 3
    np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-6)


def test_more_candidates_than_k_is_flagged_for_the_host_path():
    th = Thresholds(conf=0.01)  # nearly every anchor passes
    pred = _prediction(1, anchors=600, seed=3)
    rows = fixed_shape_nms(pred, BOX, th, k=64).numpy()[0]
    assert rows[-1, 1] == 0.0 and detections_from_fixed(rows) is None
    assert detections_from_fixed(fixed_shape_nms(pred, BOX, th, k=600).numpy()[0]) is not None  # k = anchors: exact


def _chain(length: int) -> torch.Tensor:
    """Boxes in a row, each overlapping the next by IoU ≈ 0.8, scores falling: greedy NMS keeps
    every other one, and each decision waits on the one before (a chain of `length`)."""
    pred = torch.zeros(1, 5, length)
    for i in range(length):
        pred[0, :, i] = torch.tensor([100.0 + 5.5 * i, 300.0, 50.0, 50.0, 0.9 - 0.01 * i])
    return pred


def test_a_chain_longer_than_the_rounds_is_flagged_and_enough_rounds_decide_it():
    th = Thresholds()
    pred = _chain(12)
    assert detections_from_fixed(fixed_shape_nms(pred, BOX, th, rounds=3).numpy()[0]) is None
    got = detections_from_fixed(fixed_shape_nms(pred, BOX, th, rounds=12).numpy()[0])
    want = postprocess(pred[0], BOX, th)
    assert got is not None and len(got) == len(want) == 6
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)


def test_no_candidate_gives_zero_boxes_exactly():
    pred = torch.zeros(2, 10, 300)
    out = fixed_shape_nms(pred, BOX).numpy()
    for rows in out:
        got = detections_from_fixed(rows)
        assert got is not None and len(got) == 0


def test_the_compiled_nms_falls_back_to_the_eager_rows_and_says_so_once():
    """torch-graph-compiled's batch-1 plans record `fixed_shape_nms` compiled by Inductor; where
    Inductor cannot compile it, the plan records the eager function: the same rows, one note."""
    from rtmon.engines.torch_gpu import CompiledNms

    notes: list[str] = []
    nms = CompiledNms(notes.append)

    def fails(*args, **kwargs):
        raise NotImplementedError("NYI TritonSplitDimKernel reductions\nmore lines")

    nms._compiled = fails
    pred = _prediction(1)
    for _ in range(2):
        assert torch.equal(nms(pred, BOX, Thresholds(), 512), fixed_shape_nms(pred, BOX, Thresholds(), 512))
    assert notes == ["GPU NMS stays eager: Inductor could not compile it (NYI TritonSplitDimKernel reductions)"]


def test_the_compiled_nms_is_timed_once_then_called_directly():
    from rtmon.engines.torch_gpu import CompiledNms

    notes: list[str] = []
    nms = CompiledNms(notes.append)
    calls = []
    nms._compiled = lambda *args, **kwargs: calls.append(args) or fixed_shape_nms(*args, **kwargs)
    pred = _prediction(1)
    for _ in range(3):
        assert torch.equal(nms(pred, BOX, Thresholds(), 512), fixed_shape_nms(pred, BOX, Thresholds(), 512))
    assert len(calls) == 3 and len(notes) == 1 and notes[0].startswith("GPU NMS compiled by Inductor (batch 1)")
