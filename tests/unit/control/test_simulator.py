"""The simulator: the budget policy against static baselines and an oracle, on profiles."""

from __future__ import annotations

import pytest
from support import PROFILED as CATALOG

from edge_service.control.budget import Policy
from edge_service.control.predictor import Predictor
from edge_service.monitor.context import Context, PowerMode
from edge_service.sim.replay import simulate


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
