"""Output decoding for YOLO detectors: raw head tensor -> scored, class-labelled boxes.

Two ONNX output layouts are understood, told apart by shape given ``nc = len(labels)``
(the batch axis, if present, must be 1):

* ``v8`` -- YOLOv8 / YOLO11: ``(1, 4 + nc, N)``; per anchor ``cx, cy, w, h`` then ``nc``
  class scores, no objectness. Score = best class score.
* ``v5`` -- YOLOv5 / YOLOv7: ``(1, N, 5 + nc)``; per anchor ``cx, cy, w, h, obj`` then
  ``nc`` class scores. Score = ``obj * best class score``.

Rule: the output is ``v8`` when its first axis is ``4 + nc``, ``v5`` when its last axis is
``5 + nc``. When both hold (only if ``N`` equals the other axis) the shape is ambiguous and
refused, as is a shape where neither holds. Each anchor keeps its single best class, as
Ultralytics does without ``multi_label``. Boxes are in model-input pixels; pass the
:class:`~edge_service.data.letterbox.Letterbox` used for the frame to get original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_service.data.letterbox import Letterbox
from edge_service.errors import BadInputError, EngineError

YoloLayout = Literal["v8", "v5"]

#: Candidates kept (best first) before NMS, bounding its cost on a flat score map.
MAX_CANDIDATES = 30_000


@dataclass(frozen=True)
class Detection:
    """One detected object: class, confidence and ``(x1, y1, x2, y2)`` box in pixels."""

    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Candidates:
    boxes: np.ndarray  # (N, 4) float64 xyxy
    scores: np.ndarray  # (N,) float64
    classes: np.ndarray  # (N,) int64


def detect_layout(shape: tuple[int, ...], num_classes: int) -> YoloLayout:
    """``v8`` or ``v5`` for a ``(1, A, B)`` or ``(A, B)`` output of ``num_classes`` classes.

    See the module docstring for the rule; raises :class:`EngineError` on a shape that
    matches neither layout or both.
    """
    if num_classes <= 0:
        raise EngineError("a detector needs at least one class label; check the model's labels")
    rows, cols = _per_image_shape(shape)
    is_v8, is_v5 = rows == 4 + num_classes, cols == 5 + num_classes
    if is_v8 and is_v5:
        raise EngineError(
            f"detector output {shape} is ambiguous for {num_classes} classes: it reads as "
            f"YOLOv8 (4+nc, N) and as YOLOv5 (N, 5+nc); re-export with a different input size"
        )
    if not (is_v8 or is_v5):
        raise EngineError(
            f"detector output {shape} does not match {num_classes} labels: expected YOLOv8 "
            f"(1, {4 + num_classes}, N) or YOLOv5 (1, N, {5 + num_classes}); check that the "
            "labels belong to this model (a transposed (1, N, 4+nc) export must be transposed)"
        )
    return "v8" if is_v8 else "v5"


def _per_image_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 3 and shape[0] == 1:
        return shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise EngineError(
        f"detector output has shape {shape}; expected one image, (1, A, B) or (A, B) "
        "-- decode a batch one image at a time"
    )


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` (4,) with each of ``others`` (M, 4); 0 where both are empty."""
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0.0, None))
    areas = np.prod(np.clip(others[:, 2:] - others[:, :2], 0.0, None), axis=1)
    union = area + areas - inter
    iou: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, max_keep: int | None = None
) -> np.ndarray:
    """Greedy non-maximum suppression over (N, 4) xyxy ``boxes`` and (N,) ``scores``.

    Takes boxes best score first (ties in input order) and drops every later box whose
    IoU with a kept one is above ``iou_threshold``. Returns kept indices (int64), best
    first, at most ``max_keep`` of them.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = len(order) if max_keep is None else max_keep
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best, order = order[0], order[1:]
        kept.append(int(best))
        order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware :func:`nms`: boxes only suppress boxes of the same class.

    Each class is shifted by a multiple of the boxes' full extent, so boxes of different
    classes never overlap and one NMS pass serves all classes.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + np.asarray(classes, dtype=np.float64)[:, None] * span
    return nms(shifted, scores, iou_threshold, max_keep=max_keep)


def _check_thresholds(conf_threshold: float, iou_threshold: float, max_detections: int) -> None:
    if not 0.0 <= conf_threshold <= 1.0:
        raise BadInputError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise BadInputError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_detections < 1:
        raise BadInputError(f"max_detections must be >= 1, got {max_detections}")


def _anchor_rows(output: np.ndarray, layout: YoloLayout) -> np.ndarray:
    """One row per anchor: (N, 4 + nc) for v8, (N, 5 + nc) for v5, float32."""
    per_image = output.reshape(_per_image_shape(output.shape))
    rows = per_image.T if layout == "v8" else per_image
    return rows.astype(np.float32, copy=False)


def _candidates(rows: np.ndarray, layout: YoloLayout, conf_threshold: float) -> _Candidates:
    class_scores = rows[:, 4:] if layout == "v8" else rows[:, 5:] * rows[:, 4:5]
    classes = class_scores.argmax(axis=1)
    scores = class_scores.max(axis=1)
    keep = np.flatnonzero(scores > conf_threshold)  # strictly above, as Ultralytics
    keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_CANDIDATES]]
    return _Candidates(
        _xywh_to_xyxy(rows[keep, :4].astype(np.float64)),
        scores[keep].astype(np.float64),
        classes[keep].astype(np.int64),
    )


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:] / 2.0
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def decode_detections(
    output: np.ndarray,
    labels: list[str],
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
    letterbox: Letterbox | None = None,
) -> list[Detection]:
    """Decode one image's YOLO output into detections, best score first.

    ``output`` is the raw head tensor in either layout (see :func:`detect_layout`). Anchors
    scoring strictly above ``conf_threshold`` go through class-aware NMS at
    ``iou_threshold``; at most ``max_detections`` are returned. With ``letterbox`` the boxes
    are mapped back to (and clipped to) the original frame, else left in input pixels.
    """
    _check_thresholds(conf_threshold, iou_threshold, max_detections)
    output = np.asarray(output)
    layout = detect_layout(tuple(output.shape), len(labels))
    cand = _candidates(_anchor_rows(output, layout), layout, conf_threshold)
    kept = batched_nms(
        cand.boxes, cand.scores, cand.classes, iou_threshold, max_keep=max_detections
    )
    boxes = cand.boxes[kept]
    if letterbox is not None:
        boxes = letterbox.unmap(boxes)
    return [
        Detection(labels[int(c)], int(c), float(s), _box_tuple(b))
        for b, s, c in zip(boxes, cand.scores[kept], cand.classes[kept], strict=True)
    ]


def _box_tuple(box: np.ndarray) -> tuple[float, float, float, float]:
    return float(box[0]), float(box[1]), float(box[2]), float(box[3])
