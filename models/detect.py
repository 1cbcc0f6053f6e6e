"""From a FOMO-style score map to detections, and how good detections are.

A detect model (card ``task: detect``) outputs one score per class per output cell, the cells
``stride`` input pixels apart; class 0 is the background. ``decode`` turns the map into
detections: per foreground class, the output cells whose softmax probability reaches the
threshold, grouped into 8-connected blobs; each blob is one detection whose score is its largest
probability and whose centre is the probability-weighted mean of its cells' centres, scaled from
model pixels to the source image's pixels. Numpy and OpenCV only: the runtime on a board decodes
with it too.

``match`` counts a detection as a true positive when it lies within half a cell of a defective
cell's centre (both axes) that no other detection has claimed; ``detection_metrics`` sums that
over images into precision and recall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Detection:
    """One object found: its class, score (probability) and centre in source-image pixels."""

    label: str
    label_index: int
    score: float
    x: float
    y: float

    def to_dict(self) -> dict:
        return asdict(self)


def stream_order(outputs: np.ndarray) -> np.ndarray:
    """A model's outputs (N, ...) as rows of scores in the order the accelerator streams them:
    (N, classes) as they are; a detector's (N, classes, h, w) map cell by cell, row-major, each
    cell's class scores together (NHWC), which is how every stage streams a map."""
    if outputs.ndim == 4:
        outputs = outputs.transpose(0, 2, 3, 1)
    return outputs.reshape(len(outputs), -1)


def unstream(row: np.ndarray, classes: int, cells: tuple[int, int]) -> np.ndarray:
    """One image's stream-ordered scores back to its (classes, h, w) map."""
    return np.asarray(row).reshape(cells[0], cells[1], classes).transpose(2, 0, 1)


def map_probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax over the class axis of (classes, h, w) scores."""
    shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def decode(scores: np.ndarray, classes: list[str], stride: int, image_size: tuple[int, int],
           threshold: float = 0.5) -> list[Detection]:
    """Detections of the (classes, h, w) score map of one image; ``image_size`` is the source
    image's (height, width), the map covers the model's input (h * stride, w * stride)."""
    probs = map_probabilities(np.asarray(scores, np.float64))
    _, h, w = probs.shape
    sy, sx = image_size[0] / (h * stride), image_size[1] / (w * stride)
    cy, cx = np.mgrid[0:h, 0:w].astype(np.float64)
    found = []
    for k in range(1, len(classes)):
        p = probs[k]
        count, blobs = cv2.connectedComponents((p >= threshold).astype(np.uint8), connectivity=8)
        for blob in range(1, count):
            mask = blobs == blob
            weight = p[mask]
            y = ((cy[mask] + 0.5) * stride * weight).sum() / weight.sum()
            x = ((cx[mask] + 0.5) * stride * weight).sum() / weight.sum()
            found.append(Detection(classes[k], k, float(weight.max()), float(x * sx), float(y * sy)))
    return sorted(found, key=lambda d: -d.score)


def match(detections: list[tuple[float, float]], truths: np.ndarray, cell: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of detection centres (x, y), highest score
    first, against true centres (K, 2): a hit is within half a ``cell`` of a true centre on both
    axes, and each true centre is hit once (a second detection of it is a false positive)."""
    taken = np.zeros(len(truths), bool)
    tp = 0
    for x, y in detections:
        if len(truths):
            d = np.maximum(np.abs(truths[:, 0] - x), np.abs(truths[:, 1] - y))
            d[taken] = np.inf
            best = int(np.argmin(d))
            if d[best] <= cell / 2:
                taken[best] = True
                tp += 1
    return tp, len(detections) - tp, len(truths) - tp


def detection_metrics(counts: list[tuple[int, int, int]]) -> dict:
    """Precision, recall and F1 of summed (tp, fp, fn) counts."""
    tp, fp, fn = (int(sum(c[i] for c in counts)) for i in range(3))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_positives": tp, "false_positives": fp, "false_negatives": fn, "images": len(counts)}
