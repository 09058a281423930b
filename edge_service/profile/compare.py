"""Side-by-side latency of a family's engines: interleaved rounds, so that drift in the
machine's speed (other load, clocks) hits every engine alike and ratios stay honest."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_service.profile.latency import measure_latency
from edge_service.repository import Catalog, verified_artifact_path
from edge_service.runtime.ort_engine import OrtEngine


@dataclass(frozen=True)
class Comparison:
    """Per-variant batch latency (median of round p50s / p99s), milliseconds."""

    batch: int
    threads: int
    rounds: int
    runs: int
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]

    def ratio(self, num: str, den: str) -> float:
        """p50 latency of ``num`` over ``den`` (< 1: ``num`` is faster)."""
        return self.p50_ms[num] / self.p50_ms[den]


def compare_variants(
    catalog: Catalog,
    family_dir: Path,
    *,
    batch: int = 1,
    threads: int = 0,
    rounds: int = 5,
    runs: int = 200,
) -> Comparison:
    """Measure every variant in ``rounds`` interleaved rounds of ``runs`` calls each."""
    items = [
        (v.id, verified_artifact_path(family_dir, v.artifact), v.precision)
        for v in catalog.variants
    ]
    return compare_engines(items, batch=batch, threads=threads, rounds=rounds, runs=runs)


def compare_engines(
    items: list[tuple[str, Path, str]],
    *,
    batch: int = 1,
    threads: int = 0,
    rounds: int = 5,
    runs: int = 200,
) -> Comparison:
    """Like :func:`compare_variants`, for any (name, ONNX path, precision) list."""
    engines = [
        OrtEngine(path, variant_id=name, precision=precision, threads=threads)
        for name, path, precision in items
    ]
    p50: dict[str, list[float]] = {e.variant_id: [] for e in engines}
    p99: dict[str, list[float]] = {e.variant_id: [] for e in engines}
    try:
        for engine in engines:
            engine.load()
        for r in range(rounds):
            for engine in engines:
                stats = measure_latency(engine, batch, warmup=20, runs=runs, seed=r)
                p50[engine.variant_id].append(stats["p50_ms"])
                p99[engine.variant_id].append(stats["p99_ms"])
    finally:
        for engine in engines:
            engine.close()
    return Comparison(
        batch=batch,
        threads=threads,
        rounds=rounds,
        runs=runs,
        p50_ms={k: statistics.median(v) for k, v in p50.items()},
        p99_ms={k: float(np.median(v)) for k, v in p99.items()},
    )
