"""The statistics the latency learner rests on: age weights, weighted quantiles, the
confidence-weighted blend of observations with the prior, and the contention's bounds."""

from __future__ import annotations

import math
from collections.abc import Iterable

CONTENTION_MIN = 0.25
CONTENTION_MAX = 20.0


def blend(learned: float, n: float, prior: float, confident_n: float) -> tuple[float, float]:
    """(confidence-weighted mix of ``learned`` and ``prior``, confidence); the learned
    value alone when there is no usable prior."""
    conf = n / (n + confident_n)
    if not (math.isfinite(prior) and prior > 0):
        return learned, 1.0 if n > 0 else 0.0
    return conf * learned + (1.0 - conf) * prior, conf


def top(values: list[float], q: float, seen: int = 1) -> float:
    """The ``q`` quantile of ``values``, not below 0, and at most the ``seen``-th largest
    (a tail that rests on fewer values than that is noise)."""
    ordered = sorted(values)
    n = len(ordered)
    return max(0.0, ordered[max(0, min(int(q * (n - 1)), n - seen))])


def weighted(
    samples: Iterable[tuple[float, float, bool]], now: float, half_life_s: float
) -> tuple[list[float], list[float]]:
    """Sample values and their weights, 0.5 ** (age / half-life)."""
    values, weights = [], []
    for t, v, _ in samples:
        values.append(v)
        weights.append(0.5 ** (max(0.0, now - t) / half_life_s))
    return values, weights


def quantile(values: list[float], weights: list[float], q: float) -> float:
    """The weighted ``q`` quantile (the smallest value whose cumulative weight reaches q)."""
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(weights)
    if total <= 0:
        return math.nan
    acc = 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= q * total:
            return value
    return pairs[-1][0]


def clamp(x: float) -> float:
    return min(CONTENTION_MAX, max(CONTENTION_MIN, x))
