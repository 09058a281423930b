"""Top-1 accuracy of an engine on a labelled split, through the shared preprocessing."""

from __future__ import annotations

import numpy as np

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec, preprocess
from edge_service.runtime.engine import Engine


def engine_accuracy(engine: Engine, split: Split, spec: InputSpec, batch: int = 256) -> float:
    """Fraction of ``split`` whose arg-max output equals the label."""
    correct = 0
    for start in range(0, len(split), batch):
        x = preprocess(split.images[start : start + batch], spec)
        pred = engine.infer(x).argmax(axis=1)
        correct += int((pred == split.labels[start : start + batch]).sum())
    return correct / max(len(split), 1)


def predictions(
    engine: Engine, images: np.ndarray, spec: InputSpec, batch: int = 256
) -> np.ndarray:
    """Arg-max class of each of (N, H, W) uint8 ``images``."""
    out = [
        engine.infer(preprocess(images[s : s + batch], spec)).argmax(axis=1)
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)
