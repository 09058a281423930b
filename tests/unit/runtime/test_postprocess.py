"""Top-k decoding of classification logits."""

from __future__ import annotations

import numpy as np

from edge_service.runtime.postprocess import softmax, top_k


def test_top_k_orders_classes_by_probability_when_logits_given() -> None:
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]], dtype=np.float32)
    out = top_k(logits, ["a", "b", "c"], 2)
    assert [p.label for p in out[0]] == ["b", "c"]
    assert [p.index for p in out[1]] == [0, 1]
    assert out[0][0].score > out[0][1].score


def test_top_k_caps_k_when_more_than_classes_requested() -> None:
    assert len(top_k(np.zeros((1, 3)), ["a", "b", "c"], 10)[0]) == 3


def test_softmax_is_stable_when_logits_are_huge() -> None:
    probs = softmax(np.array([[1000.0, 1000.0]]))
    assert np.allclose(probs, 0.5)
