"""YOLO output decoding on constructed head tensors with known boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_service.data.letterbox import letterbox
from edge_service.errors import BadInputError, EngineError
from edge_service.runtime.detection import (
    Detection,
    batched_nms,
    decode_detections,
    detect_layout,
    nms,
)

LABELS = ["person", "car", "dog"]
# (cx, cy, w, h, class, score); boxes A and B overlap with IoU 0.6 (100x100, shifted 25 px).
A = (100.0, 100.0, 100.0, 100.0)
B = (125.0, 100.0, 100.0, 100.0)
FAR = (400.0, 400.0, 50.0, 50.0)


def _v8(anchors: list[tuple[float, float, float, float, int, float]]) -> np.ndarray:
    """(1, 4 + nc, N): box rows then one score row per class."""
    out = np.zeros((1, 4 + len(LABELS), len(anchors)), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


def _v5(
    anchors: list[tuple[float, float, float, float, int, float]], obj: float = 1.0
) -> np.ndarray:
    """(1, N, 5 + nc): box, objectness, class scores (class score = score / obj)."""
    out = np.zeros((1, len(anchors), 5 + len(LABELS)), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, i, :5] = (cx, cy, w, h, obj)
        out[0, i, 5 + cls] = score / obj
    return out


def test_lower_score_is_suppressed_when_same_class_boxes_overlap() -> None:
    dets = decode_detections(_v8([(*A, 0, 0.9), (*B, 0, 0.8)]), LABELS)
    assert len(dets) == 1
    assert dets[0] == Detection("person", 0, dets[0].score, (50.0, 50.0, 150.0, 150.0))
    assert dets[0].score == pytest.approx(0.9)


def test_both_boxes_are_kept_when_overlap_is_across_classes() -> None:
    dets = decode_detections(_v8([(*A, 0, 0.9), (*B, 1, 0.8)]), LABELS)
    assert [(d.label, d.index) for d in dets] == [("person", 0), ("car", 1)]
    assert dets[1].box == (75.0, 50.0, 175.0, 150.0)


def test_both_boxes_are_kept_when_overlap_is_below_iou_threshold() -> None:
    dets = decode_detections(_v8([(*A, 0, 0.9), (*B, 0, 0.8)]), LABELS, iou_threshold=0.7)
    assert len(dets) == 2


def test_box_is_dropped_when_score_is_below_confidence_threshold() -> None:
    dets = decode_detections(_v8([(*A, 0, 0.9), (*FAR, 2, 0.2)]), LABELS, conf_threshold=0.25)
    assert [d.label for d in dets] == ["person"]


def test_v8_and_v5_decode_identically_when_boxes_are_the_same() -> None:
    anchors = [(*A, 0, 0.9), (*B, 0, 0.8), (*B, 1, 0.7), (*FAR, 2, 0.6), (*FAR, 1, 0.1)]
    v8, v5 = decode_detections(_v8(anchors), LABELS), decode_detections(_v5(anchors), LABELS)
    assert len(v8) == 3
    assert [(d.label, d.box) for d in v5] == [(d.label, d.box) for d in v8]
    assert [d.score for d in v5] == pytest.approx([d.score for d in v8])


def test_v5_score_is_objectness_times_class_when_objectness_below_one() -> None:
    out = _v5([(*A, 0, 0.4)], obj=0.5)  # class score 0.8, objectness 0.5
    assert decode_detections(out, LABELS)[0].score == pytest.approx(0.4)
    assert decode_detections(out, LABELS, conf_threshold=0.45) == []


def test_max_detections_caps_output_best_first_when_more_boxes_survive() -> None:
    anchors = [(50.0 + 60 * i, 50.0, 40.0, 40.0, 0, 0.3 + 0.05 * i) for i in range(10)]
    dets = decode_detections(_v8(anchors), LABELS, max_detections=3)
    assert [d.score for d in dets] == pytest.approx([0.75, 0.7, 0.65])


def test_boxes_map_to_original_frame_when_letterbox_is_given() -> None:
    _, box = letterbox(np.zeros((480, 640, 3), np.uint8), 320)
    dets = decode_detections(_v8([(160.0, 160.0, 100.0, 100.0, 1, 0.9)]), LABELS, letterbox=box)
    assert dets[0].box == pytest.approx((220.0, 140.0, 420.0, 340.0))


def test_decode_returns_empty_when_nothing_passes_threshold() -> None:
    assert decode_detections(_v8([(*A, 0, 0.1)]), LABELS) == []
    assert decode_detections(np.zeros((1, 4 + len(LABELS), 0), np.float32), LABELS) == []


def test_detect_layout_reads_v8_and_v5_when_shapes_match_class_count() -> None:
    assert detect_layout((1, 84, 8400), 80) == "v8"
    assert detect_layout((1, 25200, 85), 80) == "v5"
    assert detect_layout((84, 8400), 80) == "v8"


def test_detect_layout_raises_engine_error_when_shape_is_ambiguous() -> None:
    with pytest.raises(EngineError, match="ambiguous"):
        detect_layout((1, 84, 85), 80)


@pytest.mark.parametrize("shape", [(1, 85, 8400), (1, 8400, 84), (2, 84, 8400), (84,)])
def test_detect_layout_raises_engine_error_when_shape_does_not_fit(
    shape: tuple[int, ...],
) -> None:
    with pytest.raises(EngineError):
        detect_layout(shape, 80)


def test_decode_raises_engine_error_when_labels_are_empty() -> None:
    with pytest.raises(EngineError, match="label"):
        decode_detections(np.zeros((1, 5, 3), np.float32), [])


@pytest.mark.parametrize(
    "kwargs", [{"conf_threshold": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}]
)
def test_decode_raises_bad_input_when_thresholds_are_out_of_range(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadInputError):
        decode_detections(_v8([(*A, 0, 0.9)]), LABELS, **kwargs)


def test_nms_keeps_indices_best_first_when_one_box_overlaps() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [1, 0, 11, 10]], np.float64)
    kept = nms(boxes, np.array([0.5, 0.9, 0.8]), 0.5)
    assert kept.tolist() == [1, 2]


def test_batched_nms_keeps_overlap_when_classes_differ() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float64)
    assert batched_nms(boxes, np.array([0.9, 0.8]), np.array([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, np.array([0.9, 0.8]), np.array([1, 1]), 0.5).tolist() == [0]
