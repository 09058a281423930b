"""Detection accuracy: COCO-style average precision, pure numpy.

The computation follows ``pycocotools`` (``COCOeval.evaluateImg`` + ``accumulate``) for
boxes, with no crowd regions, no area ranges and no per-image detection cap:

* per image and class, predictions are taken best score first; each is matched greedily to
  the unmatched ground truth of its class with the highest IoU, if that IoU is at least the
  threshold (on equal IoU the later ground truth wins, as in pycocotools);
* over all images, predictions of the class are ranked by score (a stable sort, so ties
  keep image order), giving cumulative precision and recall;
* precision is made monotone (the envelope) and read at the 101 recall points
  ``0, 0.01, ..., 1`` (``searchsorted(..., side="left")``; a recall not reached reads 0);
  AP is their mean. Precision is ``tp / (tp + fp + eps)`` as in pycocotools, so a perfect
  result reads ``1 / (1 + 2.2e-16)``, just under 1.0.

Empty cases: a class with no ground truth in any image has no AP (``None``) and is left
out of the mean, as COCO does, even if it has predictions. A class with ground truth and
no predictions has AP 0. When no class has any ground truth, :func:`mean_ap` returns 1.0
if there are no predictions either (nothing to find, nothing invented) and 0.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_service.runtime.detection import Detection

Box = tuple[float, float, float, float]

#: The 101 recall points of COCO's interpolated precision.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
#: COCO's IoU thresholds 0.50:0.05:0.95 (built as pycocotools builds them).
COCO_IOUS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))


@dataclass(frozen=True)
class GroundTruth:
    """One labelled object: class index and ``(x1, y1, x2, y2)`` box in pixels."""

    index: int
    box: Box
    label: str = ""


@dataclass(frozen=True)
class DetectionScore:
    """How well a variant detects: against labels (``map50``) or a reference model."""

    metric: Literal["agreement_map50", "map50"]
    value: float
    map50_95: float | None
    images: int


Preds = Sequence[Sequence[Detection]]
Truths = Sequence[Sequence[GroundTruth]]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both xyxy: (N, M).

    A pair whose union has no area has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _check_lengths(preds: Sequence[Sequence[object]], truths: Sequence[Sequence[object]]) -> None:
    if len(preds) != len(truths):
        raise ValueError(
            f"{len(preds)} images of predictions but {len(truths)} of ground truth; "
            "pass one list per image to both, in the same order"
        )


def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy matching of score-sorted predictions (rows) to truths (columns): hit flags."""
    limit = min(threshold, 1 - 1e-10)
    taken = np.zeros(ious.shape[1], dtype=bool)
    hits = np.zeros(ious.shape[0], dtype=bool)
    for d in range(ious.shape[0]):
        best, m = limit, -1
        for g in range(ious.shape[1]):
            if taken[g] or ious[d, g] < best:
                continue
            best, m = float(ious[d, g]), g
        if m >= 0:
            taken[m] = True
            hits[d] = True
    return hits


def _precision_at_recalls(hits: np.ndarray, truths: int) -> float:
    """Mean interpolated precision at :data:`RECALL_POINTS` of score-ranked ``hits``."""
    tp = np.cumsum(hits, dtype=np.float64)
    fp = np.cumsum(~hits, dtype=np.float64)
    recall = tp / truths
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    inds = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    ok = inds < len(precision)
    q[ok] = precision[inds[ok]]
    return float(q.mean())


def _class_aps(
    preds: Preds, truths: Truths, class_index: int, thresholds: Sequence[float]
) -> list[float] | None:
    """AP of one class at each threshold; None when the class has no ground truth."""
    _check_lengths(preds, truths)
    per_image: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted scores, ious)
    n_truths = 0
    for image_preds, image_truths in zip(preds, truths, strict=True):
        dets = [p for p in image_preds if p.index == class_index]
        gts = [t.box for t in image_truths if t.index == class_index]
        n_truths += len(gts)
        if not dets:
            continue
        scores = np.array([p.score for p in dets], dtype=np.float64)
        order = np.argsort(-scores, kind="mergesort")
        boxes = np.array([dets[i].box for i in order], dtype=np.float64)
        per_image.append((scores[order], iou_matrix(boxes, np.array(gts).reshape(-1, 4))))
    if n_truths == 0:
        return None
    if not per_image:
        return [0.0 for _ in thresholds]
    scores = np.concatenate([s for s, _ in per_image])
    rank = np.argsort(-scores, kind="mergesort")
    aps = []
    for t in thresholds:
        hits = np.concatenate([_match(ious, t) for _, ious in per_image])
        aps.append(_precision_at_recalls(hits[rank], n_truths))
    return aps


def average_precision(preds: Preds, truths: Truths, iou: float, class_index: int) -> float | None:
    """COCO AP of ``class_index`` at IoU threshold ``iou`` over all images.

    ``preds[i]`` and ``truths[i]`` belong to image ``i``. None when no image has a ground
    truth of the class (COCO leaves such a class out of its mean).
    """
    aps = _class_aps(preds, truths, class_index, (iou,))
    return None if aps is None else aps[0]


def mean_ap(preds: Preds, truths: Truths, iou_thresholds: Sequence[float] = (0.5,)) -> float:
    """Mean AP over the classes that have ground truth and over ``iou_thresholds``.

    With no ground truth of any class: 1.0 if there are no predictions either, else 0.0.
    """
    _check_lengths(preds, truths)
    if not iou_thresholds:
        raise ValueError("mean_ap needs at least one IoU threshold")
    classes = sorted({t.index for image in truths for t in image})
    aps: list[float] = []
    for c in classes:
        class_aps = _class_aps(preds, truths, c, iou_thresholds)
        if class_aps is not None:
            aps.extend(class_aps)
    if not aps:
        return 0.0 if any(len(image) for image in preds) else 1.0
    return float(np.mean(aps))


def map50(preds: Preds, truths: Truths) -> float:
    """mAP at IoU 0.5 (Pascal VOC / COCO ``AP50``, 101-point interpolation)."""
    return mean_ap(preds, truths, (0.5,))


def map50_95(preds: Preds, truths: Truths) -> float:
    """COCO mAP averaged over IoU 0.50:0.05:0.95 (10 thresholds)."""
    return mean_ap(preds, truths, COCO_IOUS)


def reference_truths(reference: Preds, min_score: float = 0.25) -> list[list[GroundTruth]]:
    """A reference model's detections scoring at least ``min_score``, as ground truth."""
    return [
        [GroundTruth(d.index, d.box, d.label) for d in image if d.score >= min_score]
        for image in reference
    ]


def agreement_map50(preds: Preds, reference: Preds, reference_min_score: float = 0.25) -> float:
    """mAP@0.5 of ``preds`` against a reference model's confident detections.

    The reference's detections with score >= ``reference_min_score`` stand in for labels
    (class kept); every prediction of the variant is scored, whatever its score. This
    rates a variant against the largest / FP32 model when there are no labels.
    """
    return map50(preds, reference_truths(reference, reference_min_score))


def score_against_labels(preds: Preds, truths: Truths) -> DetectionScore:
    """mAP@0.5 (the value) and mAP@0.5:0.95 against labelled ground truth."""
    return DetectionScore("map50", map50(preds, truths), map50_95(preds, truths), len(preds))


def score_against_reference(
    preds: Preds, reference: Preds, reference_min_score: float = 0.25
) -> DetectionScore:
    """:func:`agreement_map50` as a :class:`DetectionScore` (no mAP@0.5:0.95)."""
    _check_lengths(preds, reference)
    value = agreement_map50(preds, reference, reference_min_score)
    return DetectionScore("agreement_map50", value, None, len(preds))
