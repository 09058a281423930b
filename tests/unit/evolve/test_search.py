"""Search: prediction from branch profiles, the Pareto front, and thinning."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("torch")

from edge_service.evolve.search import (
    BranchProfiles,
    LatencyTable,
    Prediction,
    pareto_front,
    predict,
    thin,
)
from edge_service.variants import VariantSpec

FP32 = LatencyTable(
    overhead_ms=0.01,
    stem_ms=0.02,
    head_ms=0.01,
    branch_ms={(s, b): ms for s in range(2) for b, ms in {"id": 0.1, "dw": 0.02}.items()},
)
# INT8 as measured on a CPU: wide convolutions faster, small depthwise ones slower
INT8 = LatencyTable(
    overhead_ms=0.01,
    stem_ms=0.02,
    head_ms=0.01,
    branch_ms={(s, b): ms for s in range(2) for b, ms in {"id": 0.04, "dw": 0.03}.items()},
)
PROFILES = BranchProfiles(
    latency={"fp32": FP32, "int8": INT8},
    base_accuracy=0.9,
    branch_drop={(s, b): d for s in range(2) for b, d in {"id": 0.0, "dw": 0.03}.items()},
    resolution_drop={28: 0.0, 20: 0.02},
    native=28,
)


def _spec(stages, res=28, precision="fp32"):
    return VariantSpec(tuple(stages), precision, res, 28, "evolve")


def test_predict_sums_pieces_and_scales_by_pixels_when_resolution_is_lower() -> None:
    p = predict(PROFILES, _spec(("dw", "id"), 20))
    compute = 0.02 + 0.01 + 0.02 + 0.1
    assert p.latency_ms == pytest.approx(0.01 + compute * (20 / 28) ** 2)
    assert p.accuracy == pytest.approx(0.9 - 0.03 - 0.02)


def test_predict_uses_the_paths_precision_table_when_int8() -> None:
    p = predict(PROFILES, _spec(("dw", "id"), 28, "int8"))
    assert p.latency_ms == pytest.approx(0.01 + 0.02 + 0.01 + 0.03 + 0.04)
    assert p.accuracy == pytest.approx(0.9 - 0.03)


def test_front_mixes_precisions_when_each_wins_somewhere() -> None:
    specs = [
        _spec(c, 28, prec)
        for c in itertools.product(("id", "dw"), repeat=2)
        for prec in ("fp32", "int8")
    ]
    front = pareto_front([predict(PROFILES, s) for s in specs])
    ids = [p.spec.id for p in front]
    assert "dw-dw@fp32" in ids  # depthwise: FP32 is the faster
    assert "base@int8" in ids and "base@fp32" not in ids  # wide: INT8 dominates


def test_base_prediction_is_base_accuracy_when_nothing_changes() -> None:
    assert predict(PROFILES, _spec(("id", "id"))).accuracy == pytest.approx(0.9)


def _pred(ms: float, acc: float) -> Prediction:
    return Prediction(_spec(("id", "id")), ms, acc)


def test_front_drops_dominated_points_when_slower_and_less_accurate() -> None:
    preds = [_pred(1, 0.5), _pred(2, 0.4), _pred(2, 0.7), _pred(3, 0.7), _pred(4, 0.9)]
    front = pareto_front(preds)
    assert [(p.latency_ms, p.accuracy) for p in front] == [(1, 0.5), (2, 0.7), (4, 0.9)]


def test_front_is_monotone_when_built_from_every_combination() -> None:
    specs = [_spec(c, r) for c in itertools.product(("id", "dw"), repeat=2) for r in (28, 20)]
    front = pareto_front([predict(PROFILES, s) for s in specs])
    lat = [p.latency_ms for p in front]
    acc = [p.accuracy for p in front]
    assert lat == sorted(lat) and acc == sorted(acc)
    assert len(set(acc)) == len(acc)


def test_thin_keeps_ends_and_at_most_max_when_front_is_long() -> None:
    front = [_pred(1.1**i, 0.5 + i * 0.01) for i in range(40)]
    kept = thin(front, 12)
    assert len(kept) <= 12
    assert kept[0] == front[0] and kept[-1] == front[-1]
    ratios = [b.latency_ms / a.latency_ms for a, b in itertools.pairwise(kept)]
    assert max(ratios) < 1.6


def test_thin_returns_front_unchanged_when_short() -> None:
    front = [_pred(1, 0.5), _pred(2, 0.6)]
    assert thin(front, 12) == front


def test_validation_split_is_the_train_tail_and_disjoint_when_held_out() -> None:
    import numpy as np

    from edge_service.data.fashion import Split
    from edge_service.evolve.run import split_train_val

    images = np.arange(60, dtype=np.uint8).reshape(60, 1, 1).repeat(2, axis=1)
    data = Split(images, np.arange(60))
    rest, val = split_train_val(data, 10, 0, 0)
    assert list(val.labels) == list(range(50, 60))
    assert set(rest.labels).isdisjoint(val.labels) and len(rest) == 50


def test_kept_set_holds_the_base_network_once_when_the_search_kept_it_at_int8() -> None:
    from edge_service.evolve.search import keep_base as _keep_base

    base8 = Prediction(_spec(("id", "id"), 28, "int8"), 0.1, 0.9)
    base32 = Prediction(_spec(("id", "id"), 28, "fp32"), 0.2, 0.9)
    small = Prediction(_spec(("dw", "dw"), 28, "fp32"), 0.05, 0.85)
    kept = _keep_base([small, base8], [small, base32, base8], 28)
    assert kept == [small, base8]  # not base@fp32 as well: same network


def test_kept_set_gains_the_base_network_at_its_fastest_precision_when_left_out() -> None:
    from edge_service.evolve.search import keep_base as _keep_base

    base32 = Prediction(_spec(("id", "id"), 28, "fp32"), 0.2, 0.9)
    base8 = Prediction(_spec(("id", "id"), 28, "int8"), 0.1, 0.9)
    small = Prediction(_spec(("dw", "dw"), 28, "fp32"), 0.05, 0.85)
    mid = Prediction(_spec(("dw", "id"), 28, "int8"), 0.08, 0.88)
    kept = _keep_base([small, mid], [small, mid, base32, base8], 28)
    assert kept == [small, mid, base8]


def test_kept_set_stays_within_max_and_keeps_its_ends_when_the_base_is_added() -> None:
    from edge_service.evolve.search import keep_base as _keep_base

    pts = [
        Prediction(_spec(("dw", "dw"), 28, "fp32"), 0.05 * 1.2**i, 0.8 + i / 100) for i in range(4)
    ]
    base = Prediction(_spec(("id", "id"), 28, "int8"), 0.5, 0.9)
    kept = _keep_base(pts, [*pts, base], 28, max_kept=4)
    assert len(kept) == 4 and kept[0] == pts[0] and base in kept and pts[-1] in kept
