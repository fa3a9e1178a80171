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
    """Network-input xyxy → source-image xyxy, clipped to the image."""
    out = xyxy.clone()
    # Per-axis gain: each side was rounded to whole pixels on the way in.
    out[:, [0, 2]] = ((out[:, [0, 2]] - box.left) * (box.src_w / box.new_w)).clamp_(0, box.src_w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - box.top) * (box.src_h / box.new_h)).clamp_(0, box.src_h)
    return out


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat((b[..., 0:2] - half, b[..., 0:2] + half), dim=-1)


def nms(prediction: torch.Tensor, thresholds: Thresholds = Thresholds()) -> torch.Tensor:
    """Raw YOLO head output (4+nc, N) for one image → (n, 6) rows x1 y1 x2 y2 conf cls.

    Class-aware: a box suppresses only boxes of its own class. Stays on the input's device.
    """
    pred = prediction.float().transpose(0, 1)  # N x (4+nc)
    scores, classes = pred[:, 4:].max(dim=1)
    keep = scores > thresholds.conf
    pred, scores, classes = pred[keep], scores[keep], classes[keep]
    if scores.numel() > _MAX_NMS_CANDIDATES:
        top = scores.topk(_MAX_NMS_CANDIDATES).indices
        pred, scores, classes = pred[top], scores[top], classes[top]
    boxes = cxcywh_to_xyxy(pred[:, :4])
    offset = classes.unsqueeze(1).to(boxes.dtype) * _CLASS_OFFSET
    kept = torchvision.ops.nms(boxes + offset, scores, thresholds.iou)[: thresholds.max_det]
    return torch.cat((boxes[kept], scores[kept, None], classes[kept, None].to(boxes.dtype)), dim=1)


def postprocess(prediction: torch.Tensor, box: Letterbox, thresholds: Thresholds = Thresholds()) -> Detections:
    """Raw head output for one image → Detections in source pixels (one copy to the host)."""
    if prediction.dim() == 3:
        prediction = prediction[0]
    rows = nms(prediction, thresholds)
    rows[:, :4] = scale_boxes(rows[:, :4], box)
    return Detections.from_array(rows.cpu().numpy())


def postprocess_batch(prediction: torch.Tensor, boxes: list[Letterbox], thresholds: Thresholds = Thresholds()) -> list[Detections]:
    """Raw head output (B, 4+nc, N) → one Detections per letterbox, with one copy to the host.

    The same decisions as `postprocess` image by image (class-aware NMS within each image, at
    most `max_det` boxes each) but done for the whole batch at once on the device, so a
    micro-batch costs one host synchronization instead of one per image. Rows beyond
    `len(boxes)` (padding of a fixed-shape batch) are ignored.
    """
    n = len(boxes)
    pred = prediction[:n].float().transpose(1, 2)  # B x N x (4+nc)
    scores, classes = pred[..., 4:].max(dim=2)
    image, anchor = (scores > thresholds.conf).nonzero(as_tuple=True)
    scores, classes = scores[image, anchor], classes[image, anchor]
    xyxy = cxcywh_to_xyxy(pred[image, anchor, :4])
    groups = image * pred.shape[2] + classes  # a box suppresses boxes of its own image and class
    kept = torchvision.ops.batched_nms(xyxy, scores, groups, thresholds.iou)  # by falling score
    kept = kept[torch.argsort(image[kept], stable=True)]  # grouped by image, score order kept
    image_of = image[kept]
    counts = torch.bincount(image_of, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(kept), device=kept.device) - first[image_of]
    kept, image_of = kept[rank < thresholds.max_det], image_of[rank < thresholds.max_det]
    geometry = torch.tensor(
        [[b.left, b.top, b.src_w / b.new_w, b.src_h / b.new_h, b.src_w, b.src_h] for b in boxes],
        dtype=torch.float32, device=xyxy.device,
    )[image_of]
    out = xyxy[kept]
    out[:, [0, 2]] = ((out[:, [0, 2]] - geometry[:, 0:1]) * geometry[:, 2:3]).clamp_(min=0).minimum(geometry[:, 4:5])
    out[:, [1, 3]] = ((out[:, [1, 3]] - geometry[:, 1:2]) * geometry[:, 3:4]).clamp_(min=0).minimum(geometry[:, 5:6])
    rows = torch.cat((out, scores[kept, None], classes[kept, None].to(out.dtype), image_of[:, None].to(out.dtype)), 1)
    rows = rows.cpu().numpy()
    per_image = rows[:, 6].astype(np.int64)
    return [Detections.from_array(rows[per_image == i, :6]) for i in range(n)]


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


def detections_from_candidates(rows: np.ndarray, box: Letterbox, thresholds: Thresholds = Thresholds(),
                               anchors: int | None = None) -> Detections | None:
    """`top_candidates` rows of one image (k, 6), on the host → the same Detections as
    `postprocess` on the full head output; None if all k rows pass the threshold (k < the
    number of `anchors`), since then boxes beyond the k-th might survive NMS too."""
    passing = int((rows[:, 4] > thresholds.conf).sum())  # rows are sorted by score
    if passing == len(rows) and (anchors is None or anchors > len(rows)):
        return None
    cand = torch.from_numpy(np.ascontiguousarray(rows[:passing]))
    boxes, scores, classes = cand[:, :4], cand[:, 4], cand[:, 5]
    kept = torchvision.ops.nms(boxes + classes.unsqueeze(1) * _CLASS_OFFSET, scores, thresholds.iou)
    kept = kept[: thresholds.max_det]
    out = torch.cat((scale_boxes(boxes[kept], box), scores[kept, None], classes[kept, None]), dim=1)
    return Detections.from_array(out.numpy())
