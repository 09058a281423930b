"""Latency of an engine at a batch size: warm-up, then timed runs, p50/p99/mean."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from edge_service.runtime.engine import Engine

if TYPE_CHECKING:
    from edge_service.repository import Profile


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


def latency_profile(
    engine: Engine, batches: Iterable[int], *, runs: int = 100, threads: int = 0
) -> Profile:
    """A catalog profile of ``engine``'s latency at each batch size, measured now."""
    from edge_service.repository import LatencyStats, Profile

    latency = {str(b): LatencyStats(**measure_latency(engine, b, runs=runs)) for b in batches}
    info = engine.info()
    backend = info.backend
    if info.providers:
        backend += f"[{','.join(info.providers)}]"
    return Profile(
        backend=backend, threads=threads, latency=latency, measured_at=datetime.now(timezone.utc)
    )
