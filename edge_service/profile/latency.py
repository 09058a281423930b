"""Latency of an engine at a batch size: warm-up, then timed runs, p50/p99/mean."""

from __future__ import annotations

import time

import numpy as np

from edge_service.runtime.engine import Engine


def measure_latency(
    engine: Engine, batch: int = 1, *, warmup: int = 10, runs: int = 100, seed: int = 0
) -> dict[str, float]:
    """Time ``runs`` calls of ``engine.infer`` on a random batch; milliseconds."""
    shape = [batch, *(d if isinstance(d, int) else 1 for d in engine.info().input_shape[1:])]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        engine.infer(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        engine.infer(x)
        times[i] = (time.perf_counter() - start) * 1e3
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()),
        "runs": runs,
    }
