"""Output decoding: classification logits to top-k labels and scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One class with its softmax probability."""

    index: int
    label: str
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[list[Prediction]]:
    """The ``k`` most probable classes of each row of (N, C) ``logits``, best first."""
    probs = softmax(logits.astype(np.float64))
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [
        [
            Prediction(
                int(i), labels[int(i)] if int(i) < len(labels) else str(int(i)), float(row[int(i)])
            )
            for i in idx
        ]
        for row, idx in zip(probs, order, strict=True)
    ]
