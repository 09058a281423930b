"""The pressure rule, a pure function: every branch of it."""

from __future__ import annotations

import itertools

import pytest

from edge_service.control.pressure_rule import Candidate, PressureRule, decide
from edge_service.monitor.context import Context

RULE = PressureRule(cpu_high=0.85, mem_high=0.90, upgrade_cooldown_s=5.0)
ACCURATE = Candidate("base@fp32", accuracy=0.93, latency_ms=0.40)
FAST = Candidate("base@int8", accuracy=0.925, latency_ms=0.18)
UNMEASURED = Candidate("x@fp32", accuracy=0.50, latency_ms=None)
ALL = [ACCURATE, FAST, UNMEASURED]


def ctx(cpu: float = 0.1, mem_used: float = 0.2, t: float = 100.0) -> Context:
    return Context(
        t=t,
        source="test",
        cpu_online=2,
        cpu_load=cpu,
        mem_available_mb=1000 * (1 - mem_used),
        mem_total_mb=1000,
    )


def test_most_accurate_served_when_board_is_idle() -> None:
    d = decide(ctx(), ALL, RULE, current=None)
    assert d.variant_id == ACCURATE.variant_id and d.feasible and d.changed


def test_fastest_served_when_cpu_load_is_high() -> None:
    d = decide(ctx(cpu=0.95), ALL, RULE, current=ACCURATE.variant_id)
    assert d.variant_id == FAST.variant_id and not d.feasible
    assert "cpu load 0.95" in d.reason


def test_fastest_served_when_memory_pressure_is_high() -> None:
    d = decide(ctx(mem_used=0.95), ALL, RULE, current=ACCURATE.variant_id)
    assert d.variant_id == FAST.variant_id and "memory pressure" in d.reason


def test_downgrade_ignores_cooldown_when_pressure_appears_right_after_a_change() -> None:
    d = decide(ctx(cpu=0.99, t=100.5), ALL, RULE, ACCURATE.variant_id, last_change_t=100.0)
    assert d.variant_id == FAST.variant_id and d.changed


def test_upgrade_waits_when_inside_cooldown() -> None:
    d = decide(ctx(t=102.0), ALL, RULE, FAST.variant_id, last_change_t=100.0)
    assert d.variant_id == FAST.variant_id and not d.changed and "cooling down" in d.reason


def test_upgrade_happens_when_cooldown_is_over() -> None:
    d = decide(ctx(t=106.0), ALL, RULE, FAST.variant_id, last_change_t=100.0)
    assert d.variant_id == ACCURATE.variant_id and d.changed


def test_unmeasured_variant_never_counts_as_fastest_when_others_are_measured() -> None:
    d = decide(ctx(cpu=0.99), [UNMEASURED, ACCURATE], RULE, current=None)
    assert d.variant_id == ACCURATE.variant_id


def test_unknown_current_variant_is_replaced_when_not_in_catalog() -> None:
    d = decide(ctx(t=100.1), ALL, RULE, "gone@fp32", last_change_t=100.0)
    assert d.variant_id == ACCURATE.variant_id and d.changed


def test_decide_refuses_when_there_are_no_candidates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        decide(ctx(), [], RULE, None)


@pytest.mark.parametrize(
    ("cpu", "mem", "current", "since"),
    list(
        itertools.product(
            [0.0, 0.5, 0.85, 1.0],
            [0.0, 0.9, 1.0],
            [None, "base@fp32", "base@int8", "x@fp32"],
            [None, 0.0, 99.0],
        )
    ),
)
def test_decision_is_always_a_catalog_variant_and_consistent_when_any_state(
    cpu: float, mem: float, current: str | None, since: float | None
) -> None:
    d = decide(ctx(cpu=cpu, mem_used=mem), ALL, RULE, current, since)
    assert d.variant_id in {c.variant_id for c in ALL}
    assert d.changed == (d.variant_id != current)
    pressured = cpu >= RULE.cpu_high or mem >= RULE.mem_high
    assert d.feasible != pressured
    if pressured:
        assert d.variant_id == FAST.variant_id
