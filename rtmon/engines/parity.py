"""Do two engines find the same boxes? Box-for-box matching of Detections.

The accuracy contract of every optimized engine: at least 99% of the baseline's boxes are
found again at IoU ≥ 0.9 with the same class, and matched confidences differ by less than a
small tolerance (FP16 rounding of the input and of the network's activations; see
`CONFIDENCE_TOLERANCE`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtmon.core import Detections

# FP16 has an 11-bit significand: the input pixels (k/255) carry a relative error ≤ 2^-12 and
# each of yolo11n's ~100 layers adds about as much; measured on the GPU the worst matched
# confidence moved by well under this (see scripts/gpu_bench_device.sh's parity table).
CONFIDENCE_TOLERANCE = 0.02


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n,4) against every box in b (m,4), xyxy → (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_pairs(reference: Detections, other: Detections, iou: float = 0.9) -> list[tuple[int, int]]:
    """One-to-one (reference index, other index) pairs: same class and IoU ≥ `iou`, matched
    greedily from the most confident reference box down, each to its best free partner."""
    if not len(reference) or not len(other):
        return []
    overlap = iou_matrix(reference.xyxy, other.xyxy)
    overlap[reference.class_id[:, None] != other.class_id[None, :]] = 0.0
    taken = np.zeros(len(other), bool)
    pairs = []
    for i in np.argsort(-reference.confidence, kind="stable"):
        candidates = np.where(taken, -1.0, overlap[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


def match_detections(reference: Detections, other: Detections, iou: float = 0.9) -> float:
    """Fraction of `reference`'s boxes found in `other` (1.0 when both are empty)."""
    if not len(reference):
        return 1.0 if not len(other) else 0.0
    return len(match_pairs(reference, other, iou)) / len(reference)


def max_confidence_gap(reference: Detections, other: Detections, iou: float = 0.9) -> float:
    """The largest confidence difference over matched boxes (0.0 when nothing matched)."""
    pairs = match_pairs(reference, other, iou)
    if not pairs:
        return 0.0
    i, j = np.array(pairs).T
    return float(np.abs(reference.confidence[i] - other.confidence[j]).max())


def make_detecting_weights(source: Path, target: Path, seed: int = 0, class_gain: float = 30.0,
                           class_bias: float = -4.0) -> Path:
    """An untrained model re-initialised so that it *does* output boxes, for parity tests.

    An untrained yolo11n outputs fixed, input-independent anchors with confidence ≈ 0, so
    every engine trivially "agrees" on nothing. Here every convolution gets He-normal weights
    (seeded) and the class convolutions a gain and bias that put a few dozen boxes per image
    over the 0.25 threshold, with positions and sizes that depend on the pixels. Parity on
    this model proves the engines compute the same function as the baseline (letterbox,
    network in FP16, NMS, rescaling) on meaningful boxes; it says nothing about the accuracy
    of a trained detector, which the trained model's parity test covers.
    """
    import torch

    from rtmon.models import load_yolo

    yolo = load_yolo(Path(source))
    net = yolo.model
    head = net.model[-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d) and module is not head.dfl.conv:
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
        for branch in head.cv3:
            branch[-1].weight.mul_(class_gain)
            branch[-1].bias.fill_(class_bias)
    target.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(target))
    return target
