"""Pre- and post-processing shared by every optimized engine, on the CPU or the GPU.

The geometry is ultralytics' square letterbox (scale to fit, centre, pad with grey 114), so an
optimized engine sees exactly the input the baseline sees and only runtime and precision
differ. Post-processing mirrors ultralytics' `non_max_suppression` defaults for `predict`
(confidence > 0.25, class-aware IoU 0.7, at most 300 boxes) so detections can be compared
box for box with the baseline.

Both paths take torch tensors, so the same code runs on the CPU and, for GPU engines, on the
device, with one small copy of the final boxes back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from rtmon.core import Detections

PAD_VALUE = 114
# Class offset for class-aware NMS in one call: boxes of different classes never overlap.
_CLASS_OFFSET = 7680.0
_MAX_NMS_CANDIDATES = 30000


@dataclass(frozen=True)
class Thresholds:
    """ultralytics' `predict` defaults; every engine uses the same ones."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300

    @classmethod
    def of(cls, model_settings) -> Thresholds:
        """The thresholds of `settings.model`."""
        return cls(model_settings.conf, model_settings.iou, model_settings.max_det)


@dataclass(frozen=True)
class Letterbox:
    """Where a source image lands inside the square network input, and how to map back."""

    size: int
    src_w: int
    src_h: int
    gain: float
    new_w: int
    new_h: int
    left: int
    top: int

    @classmethod
    def fit(cls, src_w: int, src_h: int, size: int) -> Letterbox:
        gain = min(size / src_h, size / src_w)
        new_w, new_h = max(round(src_w * gain), 1), max(round(src_h * gain), 1)
        # Same rounding as ultralytics, so the two geometries agree to the pixel.
        left = round((size - new_w) / 2 - 0.1)
        top = round((size - new_h) / 2 - 0.1)
        return cls(size, src_w, src_h, gain, new_w, new_h, left, top)

    @property
    def right(self) -> int:
        return self.size - self.new_w - self.left

    @property
    def bottom(self) -> int:
        return self.size - self.new_h - self.top


def letterbox_cpu(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """BGR uint8 HxWx3 → BGR uint8 size×size×3 with grey borders (OpenCV, on the CPU)."""
    h, w = image.shape[:2]
    box = Letterbox.fit(w, h, size)
    if (w, h) != (box.new_w, box.new_h):
        image = cv2.resize(image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        image, box.top, box.bottom, box.left, box.right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return padded, box


def to_nchw(letterboxed: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
    """BGR uint8 HxWx3 → RGB 1x3xHxW in [0, 1], contiguous, in `dtype`; for uint8, the pixels as
    they are (0…255: the input of a network quantized with input scale 1/255, rtmon/quantize.py)."""
    rgb = letterboxed[:, :, ::-1].transpose(2, 0, 1)[None]
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(rgb)
    # Scale in float32, cast with torch: numpy's float16 arithmetic and casts are scalar, ~30 ms a
    # 640x640 frame on one core (measured) against ~4 ms; numpy's float16 division rounds the
    # float32 quotient anyway, so the values are the same.
    scaled = np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(255)
    if np.dtype(dtype) == np.float16:
        return torch.from_numpy(scaled).half().numpy()
    return scaled.astype(dtype, copy=False)


def preprocess_cpu(image: np.ndarray, size: int, dtype: np.dtype = np.float32) -> tuple[np.ndarray, Letterbox]:
    """The whole CPU preprocessing: letterbox, BGR→RGB, HWC→NCHW, scale to [0, 1]."""
    padded, box = letterbox_cpu(image, size)
    return to_nchw(padded, dtype), box


def preprocess_torch(image: torch.Tensor, size: int, dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, Letterbox]:
    """The same preprocessing on a uint8 HxWx3 (or BxHxWx3) BGR tensor, on whatever device it
    lives on; returns (Bx3xSxS tensor, the letterbox), B = 1 for a single image.

    Bilinear resize with half-pixel centres, as OpenCV's INTER_LINEAR; no antialiasing, as
    OpenCV does not antialias either.
    """
    batched = image.dim() == 4  # (B, H, W, 3): a micro-batch of frames of one size
    h, w = int(image.shape[-3]), int(image.shape[-2])
    box = Letterbox.fit(w, h, size)
    nhwc = image if batched else image.unsqueeze(0)
    chw = nhwc.permute(0, 3, 1, 2).flip(1).to(torch.float32)  # BGR→RGB, Bx3xHxW
    if (w, h) != (box.new_w, box.new_h):
        chw = F.interpolate(chw, size=(box.new_h, box.new_w), mode="bilinear", align_corners=False)
        chw = chw.round_().clamp_(0, 255)  # OpenCV rounds to uint8; match it
    out = F.pad(chw, (box.left, box.right, box.top, box.bottom), value=float(PAD_VALUE))
    return (out / 255.0).to(dtype).contiguous(), box


def scale_boxes(xyxy: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """Network-input xyxy (..., 4) → source-image xyxy, clipped to the image. Slices only (no
    index tensors), so a CUDA graph can record it."""
    # Per-axis gain: each side was rounded to whole pixels on the way in.
    xs = ((xyxy[..., 0::2] - box.left) * (box.src_w / box.new_w)).clamp(0, box.src_w)
    ys = ((xyxy[..., 1::2] - box.top) * (box.src_h / box.new_h)).clamp(0, box.src_h)
    return torch.stack((xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]), dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat((b[..., 0:2] - half, b[..., 0:2] + half), dim=-1)


def candidates(prediction: torch.Tensor, thresholds: Thresholds = Thresholds()) -> torch.Tensor:
    """Raw YOLO head output (4+nc, N) for one image → (n, 6) rows x1 y1 x2 y2 score class of the
    anchors scoring more than `conf`, best class per anchor, in anchor order."""
    pred = prediction.float().transpose(0, 1)  # N x (4+nc)
    scores, classes = pred[:, 4:].max(dim=1)
    keep = scores > thresholds.conf
    pred, scores, classes = pred[keep], scores[keep], classes[keep]
    if scores.numel() > _MAX_NMS_CANDIDATES:
        top = scores.topk(_MAX_NMS_CANDIDATES).indices
        pred, scores, classes = pred[top], scores[top], classes[top]
    return torch.cat((cxcywh_to_xyxy(pred[:, :4]), scores[:, None], classes[:, None].to(pred.dtype)), dim=1)


def nms_rows(rows: torch.Tensor, thresholds: Thresholds = Thresholds()) -> torch.Tensor:
    """Class-aware NMS of candidate rows (n, 6) → the kept rows, best score first, at most
    `max_det`. A box suppresses only boxes of its own class (offset trick: boxes of different
    classes are moved apart so they never overlap). Among equal scores the rows' own order
    decides (torchvision sorts stably)."""
    boxes, scores, classes = rows[:, :4], rows[:, 4], rows[:, 5]
    kept = torchvision.ops.nms(boxes + classes[:, None] * _CLASS_OFFSET, scores, thresholds.iou)[: thresholds.max_det]
    return rows[kept]


def nms(prediction: torch.Tensor, thresholds: Thresholds = Thresholds()) -> torch.Tensor:
    """Raw YOLO head output (4+nc, N) for one image → (n, 6) rows x1 y1 x2 y2 conf cls.

    Class-aware: a box suppresses only boxes of its own class. Stays on the input's device.
    """
    return nms_rows(candidates(prediction, thresholds), thresholds)


def postprocess(prediction: torch.Tensor, box: Letterbox, thresholds: Thresholds = Thresholds()) -> Detections:
    """Raw head output for one image → Detections in source pixels (one copy to the host)."""
    if prediction.dim() == 3:
        prediction = prediction[0]
    rows = nms(prediction, thresholds)
    rows[:, :4] = scale_boxes(rows[:, :4], box)
    return Detections.from_array(rows.cpu().numpy())


def top_candidates(prediction: torch.Tensor, k: int) -> torch.Tensor:
    """Raw head output (B, 4+nc, N) → (B, k, 6) rows x1 y1 x2 y2 score class, best score first.

    The first, fixed-shape half of `nms`: per anchor the best class and its score, then the k
    best anchors, boxes to corners. No boolean indexing and no host synchronization, so it can
    be recorded in a CUDA graph; rows at or under the threshold stay in (the host drops them).
    """
    pred = prediction.float()
    scores, classes = pred[:, 4:].max(dim=1)  # (B, N)
    top, index = scores.topk(min(k, scores.shape[1]), dim=1)  # sorted, best first
    boxes = pred[:, :4].gather(2, index.unsqueeze(1).expand(-1, 4, -1)).transpose(1, 2)  # (B, k, 4)
    labels = classes.gather(1, index).to(pred.dtype)
    return torch.cat((cxcywh_to_xyxy(boxes), top.unsqueeze(2), labels.unsqueeze(2)), dim=2)


# The greedy NMS below needs the suppression chain to settle: a box is kept iff no kept box of
# its class before it overlaps it. On the demo detector's sample frames (yolo11n, 640) it
# settled within 4 rounds, on tests' dense synthetic clusters within 8 (measured on the CPU,
# 2026-12-01); a frame that has not settled after NMS_ROUNDS is flagged and takes the host
# path, so results never depend on the count.
NMS_ROUNDS = 8


def fixed_shape_nms(prediction: torch.Tensor, box: Letterbox, thresholds: Thresholds = Thresholds(),
                    k: int = 512, rounds: int = NMS_ROUNDS) -> torch.Tensor:
    """Raw head output (B, 4+nc, N) → (B, max_det + 1, 6): per image its kept boxes in
    source-image pixels (x1 y1 x2 y2 score class, best first, zero rows after), and a last row
    [count, exact, 0, 0, 0, 0].

    The same decisions as `nms` followed by `scale_boxes`, with only fixed shapes and no host
    synchronization, so a CUDA graph can record it (and the CPU run it, for the tests):

    1. the k best anchors (`top_candidates`), those scoring more than `conf` valid;
    2. the IoU of every pair, computed exactly as torchvision does on class-offset boxes, and
       which earlier valid box would suppress which later one (IoU > `iou`);
    3. greedy NMS as a fixed point: keep[j] = valid[j] and no kept i < j suppresses j. The
       recursion has one solution (by induction over j) — greedy NMS in score order — and
       `rounds` Jacobi sweeps reach it whenever chains of suppression are shorter than that;
    4. the first `max_det` kept rows, rescaled to the source image.

    `exact` is 0 when the answer might differ from `nms`: the k-th anchor still passes the
    threshold (more candidates than k), or the sweeps had not settled; the caller then runs
    `postprocess` on that image instead.
    """
    n_anchors = prediction.shape[-1]
    k = min(k, n_anchors)
    rows = top_candidates(prediction, k)  # (B, k, 6), best score first
    boxes, scores, classes = rows[..., :4], rows[..., 4], rows[..., 5]
    valid = scores > thresholds.conf
    overflow = valid[:, -1] & (n_anchors > k)
    shifted = boxes + classes[..., None] * _CLASS_OFFSET
    x1, y1, x2, y2 = shifted.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = w * h
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    earlier = torch.ones(k, k, dtype=torch.bool, device=rows.device).triu_(1)  # [i, j]: i before j
    suppress = ((iou > thresholds.iou) & earlier & valid[:, :, None]).to(rows.dtype)
    keep = valid
    for _ in range(rounds):
        keep = valid & (torch.bmm(keep.to(rows.dtype)[:, None, :], suppress)[:, 0] == 0)
    settled = (keep == (valid & (torch.bmm(keep.to(rows.dtype)[:, None, :], suppress)[:, 0] == 0))).all(dim=1)
    rank = keep.cumsum(dim=1) - 1
    take = keep & (rank < thresholds.max_det)
    slot = torch.where(take, rank, torch.full_like(rank, thresholds.max_det))  # the rest into a spare row
    scaled = torch.cat((scale_boxes(boxes, box), rows[..., 4:]), dim=-1)
    out = torch.zeros(rows.shape[0], thresholds.max_det + 1, 6, dtype=rows.dtype, device=rows.device)
    out.scatter_(1, slot[..., None].expand(-1, -1, 6), scaled * take[..., None])
    out[:, -1] = 0
    out[:, -1, 0] = take.sum(dim=1).to(rows.dtype)
    out[:, -1, 1] = (settled & ~overflow).to(rows.dtype)
    return out


def detections_from_fixed(rows: np.ndarray) -> Detections | None:
    """One image's `fixed_shape_nms` rows (max_det + 1, 6), on the host → its Detections; None
    when the image must take the host path (not exact)."""
    count, exact = int(rows[-1, 0]), rows[-1, 1] > 0.5
    return Detections.from_array(rows[:count]) if exact else None
