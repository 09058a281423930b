"""The simulator: the budget policy against static baselines and an oracle, on profiles."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from edge_service.control.budget import Policy
from edge_service.control.predictor import Predictor
from edge_service.monitor.context import Context, PowerMode
from edge_service.repository import parse_catalog
from edge_service.sim.replay import simulate
from edge_service.variants import VariantSpec

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()


def _variant(stages, acc: float, ms: dict[str, float]) -> dict[str, Any]:
    spec = VariantSpec(stages, "fp32", 28, 28, "evolve")
    profile = {
        mode: {
            "backend": "onnxruntime",
            "threads": 0,
            "measured_at": NOW,
            "latency": {"1": {"p50_ms": v, "p99_ms": v * 1.2, "mean_ms": v, "runs": 10}},
        }
        for mode, v in ms.items()
    }
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": "onnxruntime",
        "artifact": {"path": f"{spec.family_key}/fp32.onnx", "sha256": "0" * 64, "bytes": 1},
        "accuracy": {"top1": acc, "examples": 100},
        "profiles": {"dev": profile},
    }


CATALOG = parse_catalog(
    {
        "schema_version": 1,
        "family": "fashion",
        "task": "classification",
        "labels": ["a"],
        "input": {"shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
        "variants": [
            _variant(("id",), 0.93, {"MAXN": 1.0, "MIN": 3.0}),
            _variant(("dw",), 0.90, {"MAXN": 0.3, "MIN": 0.9}),
        ],
    }
)


def _trace(modes: list[str]) -> list[Context]:
    return [
        Context(
            t=float(i),
            source="trace",
            cpu_online=2,
            cpu_load=0.1,
            mem_available_mb=1000,
            mem_total_mb=2000,
            power_mode=PowerMode(0 if m == "MAXN" else 2, m),
        )
        for i, m in enumerate(modes)
    ]


def test_policy_beats_static_baselines_when_power_mode_drops_mid_trace() -> None:
    trace = _trace(["MAXN"] * 10 + ["MIN"] * 10 + ["MAXN"] * 10)
    policy = Policy(latency_budget_ms=2.0, cooldown_s=2.0)
    results = {r.name: r for r in simulate(trace, Predictor(CATALOG, "dev"), policy)}
    largest, smallest = results["static-largest"], results["static-smallest"]
    assert largest.slo_violation_rate == pytest.approx(10 / 30)  # id is 3.6 ms p99 in MIN
    assert smallest.slo_violation_rate == 0 and smallest.mean_accuracy == pytest.approx(0.90)
    ours, oracle = results["policy"], results["oracle"]
    assert ours.slo_violation_rate == 0  # downgrades at once
    assert ours.mean_accuracy > smallest.mean_accuracy
    assert oracle.mean_accuracy >= ours.mean_accuracy
    assert (
        ours.switches == 2 and ours.timeline[10] == "dw@fp32" and ours.timeline[-1] == "base@fp32"
    )


def test_upgrade_waits_for_cooldown_when_mode_recovers() -> None:
    trace = _trace(["MIN"] * 3 + ["MAXN"] * 6)
    results = {
        r.name: r
        for r in simulate(
            trace, Predictor(CATALOG, "dev"), Policy(latency_budget_ms=2.0, cooldown_s=4.0)
        )
    }
    timeline = results["policy"].timeline
    assert timeline[3] == "dw@fp32"  # MAXN again, but inside the cooldown
    assert timeline[-1] == "base@fp32"


def test_simulate_refuses_when_trace_is_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        simulate([], Predictor(CATALOG, "dev"), Policy())
