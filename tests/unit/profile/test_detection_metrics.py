"""COCO-style detection AP: known answers worked by hand, and a brute-force cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from edge_service.profile.detection_metrics import (
    COCO_IOUS,
    GroundTruth,
    agreement_map50,
    average_precision,
    iou_matrix,
    map50,
    map50_95,
    mean_ap,
    score_against_labels,
    score_against_reference,
)
from edge_service.runtime.detection import Detection

Box = tuple[float, float, float, float]
Preds = list[list[Detection]]
Truths = list[list[GroundTruth]]


def det(box: Box, score: float = 0.9, index: int = 0) -> Detection:
    return Detection(label=f"c{index}", index=index, score=score, box=box)


def gt(box: Box, index: int = 0) -> GroundTruth:
    return GroundTruth(index=index, box=box)


A: Box = (0.0, 0.0, 10.0, 10.0)
B: Box = (50.0, 50.0, 70.0, 80.0)
FAR: Box = (200.0, 200.0, 210.0, 210.0)


def test_iou_matrix_gives_known_overlaps_and_zero_for_disjoint_boxes() -> None:
    a = np.array([A, B])
    b = np.array([(0.0, 0.0, 10.0, 20.0), (5.0, 0.0, 15.0, 10.0), FAR])
    got = iou_matrix(a, b)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got[0], [0.5, 50 / 150, 0.0])
    np.testing.assert_allclose(got[1], [0.0, 0.0, 0.0])


def test_iou_matrix_handles_empty_and_degenerate_boxes() -> None:
    assert iou_matrix(np.zeros((0, 4)), np.array([A])).shape == (0, 1)
    assert iou_matrix(np.array([(1.0, 1.0, 1.0, 1.0)]), np.array([(1.0, 1.0, 1.0, 1.0)]))[0, 0] == 0


def test_map50_is_one_when_predictions_equal_truths() -> None:
    truths = [[gt(A), gt(B, 1)], [gt(FAR, 2)]]
    preds = [[det(A), det(B, 0.8, 1)], [det(FAR, 0.7, 2)]]
    assert map50(preds, truths) == pytest.approx(1.0)
    assert map50_95(preds, truths) == pytest.approx(1.0)


def test_ap_is_51_over_101_when_one_of_two_objects_found_without_false_positives() -> None:
    # recall 0.5 at precision 1: the 51 recall points 0.00..0.50 read 1, the rest 0
    ap = average_precision([[det(A)]], [[gt(A), gt(B)]], 0.5, 0)
    assert ap == pytest.approx(51 / 101)


def test_ap_is_half_when_false_positive_outranks_the_only_true_positive() -> None:
    # ranks: FP (P 0, R 0), TP (P 1/2, R 1); envelope 1/2 at every recall point
    ap = average_precision([[det(FAR, 0.9), det(A, 0.5)]], [[gt(A)]], 0.5, 0)
    assert ap == pytest.approx(0.5)


def test_ap_uses_precision_envelope_when_false_positive_sits_between_true_positives() -> None:
    # ranks: TP (P 1, R .5), FP (P 1/2, R .5), TP (P 2/3, R 1); envelope 1, 2/3, 2/3:
    # recall points 0..0.50 (51) read 1, 0.51..1 (50) read 2/3 -> (51 + 100/3) / 101
    preds = [[det(A, 0.9), det(FAR, 0.8), det(B, 0.7)]]
    ap = average_precision(preds, [[gt(A), gt(B)]], 0.5, 0)
    assert ap == pytest.approx(253 / 303)


def test_ranking_spans_images_when_scores_interleave() -> None:
    # same as above, split over two images: the TP/FP/TP order is global by score
    preds = [[det(A, 0.9), det(B, 0.7)], [det(FAR, 0.8)]]
    truths = [[gt(A), gt(B)], []]
    assert average_precision(preds, truths, 0.5, 0) == pytest.approx(253 / 303)


@pytest.mark.parametrize(("height", "matched"), [(19.8, True), (20.0, True), (20.2, False)])
def test_match_needs_iou_at_least_threshold(height: float, matched: bool) -> None:
    # IoU of (0,0,10,h) with A is 10/h: 0.505, exactly 0.5, 0.495
    ap = average_precision([[det((0.0, 0.0, 10.0, height))]], [[gt(A)]], 0.5, 0)
    assert ap == (pytest.approx(1.0) if matched else 0.0)


def test_map50_95_counts_an_iou_0625_box_at_three_thresholds_of_ten() -> None:
    preds, truths = [[det((0.0, 0.0, 10.0, 16.0))]], [[gt(A)]]  # IoU 100/160 = 0.625
    per_threshold = [average_precision(preds, truths, t, 0) for t in COCO_IOUS]
    assert per_threshold == pytest.approx([1.0] * 3 + [0.0] * 7)
    assert map50(preds, truths) == pytest.approx(1.0)
    assert map50_95(preds, truths) == pytest.approx(0.3)


def test_class_mismatch_is_not_a_match() -> None:
    preds, truths = [[det(A, index=1)]], [[gt(A, index=0)]]
    assert average_precision(preds, truths, 0.5, 0) == 0.0
    assert average_precision(preds, truths, 0.5, 1) is None  # no truth of class 1
    assert map50(preds, truths) == 0.0


def test_each_truth_matches_at_most_one_prediction() -> None:
    # duplicate of a found object is a false positive ranked below it: AP stays 1
    assert map50([[det(A, 0.9), det(A, 0.8)]], [[gt(A)]]) == pytest.approx(1.0)
    # duplicate ranked above the only other object's hit: TP, FP, TP -> 253/303
    preds = [[det(A, 0.9), det(A, 0.8), det(B, 0.7)]]
    assert map50(preds, [[gt(A), gt(B)]]) == pytest.approx(253 / 303)


def test_mean_ap_leaves_out_classes_without_truth() -> None:
    preds = [[det(A, index=0), det(B, index=1)]]
    # class 1 has predictions but no truth: excluded, so class 0 alone gives 1.0
    assert map50(preds, [[gt(A, index=0)]]) == pytest.approx(1.0)
    # class 1 has truth and nothing predicted: AP 0 averages in
    assert map50([[det(A)]], [[gt(A), gt(B, 1)]]) == pytest.approx(0.5)


def test_mean_ap_without_any_truth_is_one_without_predictions_else_zero() -> None:
    assert mean_ap([[], []], [[], []]) == 1.0
    assert mean_ap([[], [det(A)]], [[], []]) == 0.0
    assert mean_ap([], []) == 1.0
    assert mean_ap([[]], [[gt(A)]]) == 0.0


def test_mismatched_image_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="1 images of predictions but 2"):
        map50([[det(A)]], [[gt(A)], []])


def test_agreement_of_a_set_with_itself_is_one_despite_low_score_detections() -> None:
    # the 0.1 box is below the reference threshold: no truth for it, and as a prediction
    # it ranks after every hit, so it cannot lower precision at any recall reached
    ref = [[det(A, 0.9), det(FAR, 0.1)], [det(B, 0.3, 1)]]
    assert agreement_map50(ref, ref) == pytest.approx(1.0)


def test_agreement_uses_only_reference_detections_above_threshold() -> None:
    ref = [[det(A, 0.9), det(B, 0.2)]]
    variant = [[det(A, 0.9)]]
    assert agreement_map50(variant, ref) == pytest.approx(1.0)  # B not a truth at 0.25
    assert agreement_map50(variant, ref, reference_min_score=0.1) == pytest.approx(51 / 101)
    # nothing confident in the reference, but the variant predicts: 0.0
    assert agreement_map50(variant, [[det(A, 0.1)]]) == 0.0


def test_scores_carry_metric_name_and_image_count() -> None:
    preds, truths = [[det((0.0, 0.0, 10.0, 16.0))], []], [[gt(A)], []]
    labelled = score_against_labels(preds, truths)
    assert (labelled.metric, labelled.images) == ("map50", 2)
    assert labelled.value == pytest.approx(1.0)
    assert labelled.map50_95 == pytest.approx(0.3)
    ref = score_against_reference(preds, [[det(A, 0.9)], []])
    assert (ref.metric, ref.map50_95, ref.images) == ("agreement_map50", None, 2)
    assert ref.value == pytest.approx(1.0)


# --- brute force: the same definition written the slow, obvious way ------------------


def _iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_ap(preds: Preds, truths: Truths, iou: float, cls: int) -> float | None:
    n_truths = sum(1 for image in truths for t in image if t.index == cls)
    if n_truths == 0:
        return None
    ranked = [(p, i) for i, image in enumerate(preds) for p in image if p.index == cls]
    ranked.sort(key=lambda pi: -pi[0].score)  # stable: ties keep image, then list order
    taken: set[tuple[int, int]] = set()
    tp = fp = 0
    points = []
    for p, i in ranked:
        best, match = iou, None
        for j, t in enumerate(truths[i]):
            if t.index != cls or (i, j) in taken:
                continue
            o = _iou(p.box, t.box)
            if o >= best:
                best, match = o, j
        if match is None:
            fp += 1
        else:
            taken.add((i, match))
            tp += 1
        points.append((tp / n_truths, tp / (tp + fp)))
    total = 0.0
    for r in np.linspace(0, 1, 101):
        reached = [prec for rec, prec in points if rec >= r]
        total += max(reached) if reached else 0.0
    return total / 101


def _random_case(rng: np.random.Generator, images: int, classes: int) -> tuple[Preds, Truths]:
    def box() -> Box:
        x, y = rng.integers(0, 40, 2)
        w, h = rng.integers(4, 20, 2)
        return (float(x), float(y), float(x + w), float(y + h))

    truths = [
        [gt(box(), int(rng.integers(classes))) for _ in range(rng.integers(0, 6))]
        for _ in range(images)
    ]
    preds = []
    for image in truths:
        found = [
            det(
                tuple(float(v) + float(rng.normal(0, 2)) for v in t.box),  # type: ignore[arg-type]
                round(float(rng.random()), 1),
                t.index if rng.random() < 0.8 else int(rng.integers(classes)),
            )
            for t in image
            if rng.random() < 0.8
        ]
        noise = [
            det(box(), round(float(rng.random()), 1), int(rng.integers(classes)))
            for _ in range(rng.integers(0, 4))
        ]
        preds.append(found + noise)
    return preds, truths


@pytest.mark.parametrize("seed", range(25))
def test_ap_equals_brute_force_reimplementation_on_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds, truths = _random_case(rng, images=int(rng.integers(1, 6)), classes=3)
    for cls in range(3):
        for t in (0.3, 0.5, 0.75):
            want = _brute_ap(preds, truths, t, cls)
            got = average_precision(preds, truths, t, cls)
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, abs=1e-9)
    per_class = [_brute_ap(preds, truths, 0.5, c) for c in range(3)]
    kept = [ap for ap in per_class if ap is not None]
    if kept:
        assert map50(preds, truths) == pytest.approx(float(np.mean(kept)), abs=1e-9)
