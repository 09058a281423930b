"""The budget policy, a pure function: invariants over a grid, then each rule by example."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from edge_service.control.budget_policy import PolicyState, choose
from edge_service.control.decision import Decision
from edge_service.control.limits import Objective, Policy
from edge_service.control.predictor import Estimate
from edge_service.errors import ConfigError
from edge_service.monitor.context import Context, PowerMode


def est(
    vid: str,
    accuracy: float | None,
    p99: float,
    memory: float | None = None,
    power: float | None = None,
    energy: float | None = None,
) -> Estimate:
    return Estimate(
        variant_id=vid,
        accuracy=accuracy,
        p50_ms=p99 / 2,
        p99_ms=p99,
        memory_mb=memory,
        power_mw=power,
        energy_mj=energy,
        energy_estimated=True,
        source="measured" if math.isfinite(p99) else "unmeasured",
    )


BIG = est("big@fp32", 0.95, 8.0, memory=600, power=9000, energy=40)
MID = est("mid@fp16", 0.92, 4.0, memory=300, power=6000, energy=15)
SMALL = est("small@int8", 0.85, 1.5, memory=100, power=4000, energy=5)
BYO = est("byo@fp32", None, 3.0)  # no accuracy, memory, power or energy
NEW = est("new@fp32", 0.97, math.inf)  # never profiled
ALL = [BIG, MID, SMALL, BYO, NEW]


def ctx(t: float = 100.0, mem: float = 4000.0, mode: str | None = "MAXN") -> Context:
    return Context(
        t=t,
        source="test",
        power_mode=PowerMode(0, mode) if mode else None,
        cpu_online=4,
        cpu_load=0.2,
        mem_available_mb=mem,
        mem_total_mb=8000.0,
    )


def pick(
    estimates: Sequence[Estimate] = ALL,
    current: str | None = None,
    since: float | None = None,
    c: Context | None = None,
    **policy: Any,
) -> Decision:
    return choose(c or ctx(), estimates, Policy(**policy), PolicyState(current, since))


# --- invariants over a grid -------------------------------------------------------------


def meets(e: Estimate, c: Context, p: Policy, current: str | None) -> bool:
    """Every constraint, restated independently of the module."""
    own = (e.memory_mb or 0.0) if e.variant_id == current else 0.0
    free = c.mem_available_mb + own
    mem_limit = min(free, p.memory_budget_mb if p.memory_budget_mb is not None else math.inf)
    return (
        (p.latency_budget_ms is None or e.p99_ms <= p.latency_budget_ms)
        and (e.memory_mb is None or e.memory_mb <= mem_limit)
        and (p.max_power_mw is None or e.power_mw is None or e.power_mw <= p.max_power_mw)
        and (p.min_accuracy is None or (e.accuracy is not None and e.accuracy >= p.min_accuracy))
    )


def objective_key(e: Estimate, objective: str) -> tuple[float, ...]:
    acc = -e.accuracy if e.accuracy is not None else math.inf
    energy = e.energy_mj if e.energy_mj is not None else math.inf
    return {
        "accuracy": (acc, e.p99_ms),
        "latency": (e.p99_ms, acc),
        "energy": (energy, e.p99_ms, acc),
    }[objective]


OBJECTIVE_VALUES: list[Objective] = ["accuracy", "latency", "energy"]
SUBSETS = [
    list(s) for n in (1, 2, 3, 4) for s in itertools.combinations([BIG, MID, SMALL, BYO], n)
] + [[BIG, NEW], [NEW], [SMALL, MID, NEW]]
CONTEXTS = [ctx(100.0, mem, mode) for mem, mode in itertools.product([250, 4000], ["MAXN", "15W"])]
POLICIES = [
    Policy(
        latency_budget_ms=budget,
        min_accuracy=min_acc,
        max_power_mw=power,
        memory_budget_mb=memory,
        objective=objective,
        pins=pins,
    )
    for budget, min_acc, power, memory, objective, pins in itertools.product(
        [None, 2.0, 4.5, 9.0],
        [None, 0.9],
        [None, 7000.0],
        [None, 400.0],
        OBJECTIVE_VALUES,
        [{}, {"15W": SMALL.variant_id, "MAXN": "ghost@fp32"}],  # a pin, an unknown pin
    )
]
STATES = [
    PolicyState(current, since)
    for current, since in itertools.product(
        [None, BIG.variant_id, MID.variant_id, SMALL.variant_id, BYO.variant_id, "gone@fp32"],
        [None, 97.0, 90.0],  # inside and past the 5 s cooldown at t=100
    )
]


def check_invariants(c: Context, es: list[Estimate], p: Policy, s: PolicyState) -> None:
    choice = choose(c, es, p, s)
    by_id = {e.variant_id: e for e in es}
    chosen = by_id[choice.variant_id]  # always one of the estimates
    assert choice.changed == (choice.variant_id != s.current)
    pin = p.pins.get(c.power_mode.name if c.power_mode else "default")
    if pin in by_id:  # pins win
        assert choice.pinned and choice.variant_id == pin
        return
    assert not choice.pinned
    ok = [e for e in es if meets(e, c, p, s.current)]
    assert choice.feasible == bool(ok)
    if choice.feasible:
        assert meets(chosen, c, p, s.current)
    else:  # the fastest, flagged
        assert chosen.p99_ms == min(e.p99_ms for e in es)
        assert "no variant meets the policy" in choice.reason
    current = by_id.get(s.current) if s.current else None
    if current is None:
        if ok:
            best = min(objective_key(e, p.objective) for e in ok)
            assert objective_key(chosen, p.objective) == best
        return
    current_ok = meets(current, c, p, s.current)
    assert bool(choice.violations) == (not current_ok)
    if not current_ok and ok:
        assert choice.variant_id != s.current  # a violating variant is always left
    if current_ok and choice.changed:  # a voluntary move: past cooldown, within margin
        assert s.last_change_t is None or c.t - s.last_change_t >= p.cooldown_s
        budget = p.latency_budget_ms
        assert (
            chosen.p99_ms <= current.p99_ms
            or budget is None
            or chosen.p99_ms <= budget * (1 - p.upgrade_margin)
        )


def test_choice_keeps_every_invariant_when_run_over_the_grid() -> None:
    cases = 0
    for c, es, p, s in itertools.product(CONTEXTS, SUBSETS, POLICIES, STATES):
        check_invariants(c, es, p, s)
        cases += 1
    assert cases > 100_000


# --- each rule by example ------------------------------------------------------------------


def test_most_accurate_served_when_nothing_constrains() -> None:
    choice = pick([BIG, MID, SMALL])
    assert choice.variant_id == BIG.variant_id and choice.feasible and choice.changed


def test_lower_p99_wins_when_accuracy_ties() -> None:
    twin = est("twin@fp16", BIG.accuracy, 5.0)
    assert pick([BIG, twin]).variant_id == "twin@fp16"


def test_most_accurate_within_budget_served_when_budget_excludes_slow_ones() -> None:
    assert pick(latency_budget_ms=5.0).variant_id == MID.variant_id


def test_lowest_p99_served_when_objective_is_latency() -> None:
    assert pick(objective="latency").variant_id == SMALL.variant_id


def test_least_energy_served_when_objective_is_energy() -> None:
    assert pick([BIG, MID, BYO], objective="energy").variant_id == MID.variant_id


def test_unknown_energy_ranks_last_when_objective_is_energy() -> None:
    assert pick([BYO, BIG], objective="energy").variant_id == BIG.variant_id


def test_variant_excluded_when_memory_available_is_too_small() -> None:
    choice = pick([BIG, MID], c=ctx(mem=500))
    assert choice.variant_id == MID.variant_id


def test_current_engine_memory_counts_as_free_when_it_is_loaded() -> None:
    choice = pick([BIG, MID], current=BIG.variant_id, c=ctx(mem=100))
    assert choice.variant_id == BIG.variant_id and not choice.changed and not choice.violations


def test_variant_excluded_when_memory_budget_is_too_small() -> None:
    choice = pick([BIG, MID], memory_budget_mb=400)
    assert choice.variant_id == MID.variant_id


def test_variant_excluded_when_power_exceeds_max() -> None:
    assert pick([BIG, MID], max_power_mw=8000).variant_id == MID.variant_id


def test_variant_excluded_when_accuracy_below_min() -> None:
    assert pick([MID, SMALL], objective="latency", min_accuracy=0.9).variant_id == MID.variant_id


def test_unknown_accuracy_fails_min_accuracy_when_one_is_set() -> None:
    choice = pick([BYO, SMALL], objective="latency", min_accuracy=0.8)
    assert choice.variant_id == SMALL.variant_id


def test_unknown_memory_and_power_pass_when_limits_are_set() -> None:
    choice = pick([BYO], c=ctx(mem=1), memory_budget_mb=1, max_power_mw=1)
    assert choice.feasible and choice.variant_id == BYO.variant_id


def test_unmeasured_variant_fails_budget_when_one_is_set() -> None:
    assert pick([NEW, SMALL], latency_budget_ms=100).variant_id == SMALL.variant_id


def test_fastest_served_and_flagged_when_nothing_is_feasible() -> None:
    choice = pick([BIG, MID, SMALL], latency_budget_ms=1.0, min_accuracy=0.9)
    assert choice.variant_id == SMALL.variant_id and not choice.feasible
    assert "latency budget: 3 of 3 fail" in choice.reason
    assert "min accuracy: 1 of 3 fail" in choice.reason


def test_with_nothing_feasible_the_fastest_is_the_lowest_p50_not_the_lowest_p99() -> None:
    """Under a competitor's preemptions every tail breaks the budget: the served variant's
    observed tail (here 5 ms) must not send it to a slower one whose tail is only
    predicted (3 ms), which would break the budget as often and cost more per call."""
    served = dataclasses.replace(est("small@fp32", 0.90, 5.0), p50_ms=0.40)
    slower = dataclasses.replace(est("mid@int8", 0.92, 3.0), p50_ms=0.60)
    choice = pick([served, slower], current=served.variant_id, since=99.9, latency_budget_ms=1.0)
    assert choice.variant_id == served.variant_id and not choice.feasible
    assert "within 10% of the fastest" in choice.reason
    fresh = pick([served, slower], latency_budget_ms=1.0)
    assert fresh.variant_id == served.variant_id and "serving the fastest" in fresh.reason


def test_violating_current_left_at_once_when_inside_cooldown() -> None:
    choice = pick(current=BIG.variant_id, since=99.9, latency_budget_ms=5.0)
    assert choice.variant_id == MID.variant_id and choice.changed
    assert choice.violations == ("p99 8 ms > budget 5 ms",)
    assert "big@fp32 breaks p99 8 ms > budget 5 ms" in choice.reason


def test_upgrade_waits_when_inside_cooldown() -> None:
    choice = pick([BIG, SMALL], current=SMALL.variant_id, since=97.0)
    assert choice.variant_id == SMALL.variant_id and not choice.changed
    assert "cooldown 5 s" in choice.reason


def test_upgrade_happens_when_cooldown_is_over() -> None:
    choice = pick([BIG, SMALL], current=SMALL.variant_id, since=90.0)
    assert choice.variant_id == BIG.variant_id and choice.changed


def test_cooldown_counts_as_running_when_clock_steps_back() -> None:
    choice = pick([BIG, SMALL], current=SMALL.variant_id, since=200.0)
    assert choice.variant_id == SMALL.variant_id


def test_upgrade_refused_when_it_leaves_less_than_margin_free() -> None:
    choice = pick([BIG, SMALL], current=SMALL.variant_id, since=90.0, latency_budget_ms=9.0)
    assert choice.variant_id == SMALL.variant_id and not choice.changed
    assert "less than 15%" in choice.reason


def test_upgrade_taken_when_budget_leaves_the_margin_free() -> None:
    choice = pick([BIG, SMALL], current=SMALL.variant_id, since=90.0, latency_budget_ms=9.5)
    assert choice.variant_id == BIG.variant_id  # 8.0 <= 9.5 * 0.85


def test_best_within_margin_taken_when_best_lacks_margin() -> None:
    choice = pick([BIG, MID, SMALL], current=SMALL.variant_id, since=90.0, latency_budget_ms=9.0)
    assert (
        choice.variant_id == MID.variant_id and "leaves too little budget margin" in choice.reason
    )


def test_faster_better_variant_waits_for_cooldown_when_current_is_feasible() -> None:
    faster_better = est("fb@fp16", 0.99, 1.0)
    choice = pick([MID, faster_better], current=MID.variant_id, since=99.0)
    assert choice.variant_id == MID.variant_id


def test_current_kept_when_it_is_still_the_best() -> None:
    choice = pick(current=BIG.variant_id, since=99.0, latency_budget_ms=100)
    assert choice.variant_id == BIG.variant_id and not choice.changed
    assert "still the best" in choice.reason


def test_unknown_current_replaced_when_it_left_the_catalog() -> None:
    choice = pick([BIG, SMALL], current="gone@fp32", since=99.9)
    assert choice.variant_id == BIG.variant_id and choice.changed and not choice.violations
    assert "gone@fp32 is unknown" in choice.reason


def test_pin_wins_when_it_breaks_the_policy() -> None:
    choice = pick(c=ctx(mode="15W"), latency_budget_ms=2.0, pins={"15W": BIG.variant_id})
    assert choice.variant_id == BIG.variant_id and choice.pinned and not choice.feasible
    assert "operator pin for power mode '15W'" in choice.reason


def test_pin_wins_when_inside_cooldown() -> None:
    choice = pick(current=SMALL.variant_id, since=99.9, pins={"MAXN": MID.variant_id})
    assert choice.variant_id == MID.variant_id and choice.pinned and choice.changed


def test_pin_ignored_when_mode_differs() -> None:
    choice = pick(c=ctx(mode="MAXN"), pins={"15W": SMALL.variant_id})
    assert choice.variant_id == NEW.variant_id and not choice.pinned


def test_pin_for_default_mode_applies_when_context_has_no_power_mode() -> None:
    choice = pick(c=ctx(mode=None), pins={"default": SMALL.variant_id})
    assert choice.variant_id == SMALL.variant_id and choice.pinned


def test_unknown_pin_ignored_with_reason_when_it_names_no_variant() -> None:
    choice = pick([BIG, SMALL], pins={"MAXN": "ghost@fp32"})
    assert choice.variant_id == BIG.variant_id and not choice.pinned
    assert "pin 'ghost@fp32' for power mode 'MAXN' is not a known variant" in choice.reason


def test_choose_refuses_when_there_are_no_estimates() -> None:
    with pytest.raises(ValueError, match="at least one estimate"):
        pick([])


# --- Policy: validation and round trip --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("latency_budget_ms", 0.0, "positive number of milliseconds"),
        ("latency_budget_ms", -5.0, "positive number of milliseconds"),
        ("latency_budget_ms", math.nan, "positive number of milliseconds"),
        ("latency_budget_ms", True, "positive number of milliseconds"),
        ("latency_budget_ms", "10", "positive number of milliseconds"),
        ("min_accuracy", 1.5, "fraction from 0 to 1"),
        ("max_power_mw", -1.0, "milliwatts"),
        ("memory_budget_mb", math.inf, "megabytes"),
        ("objective", "speed", "one of"),
        ("upgrade_margin", 1.0, r"\[0, 1\)"),
        ("upgrade_margin", -0.1, r"\[0, 1\)"),
        ("cooldown_s", -1.0, "seconds >= 0"),
        ("pins", {"MAXN": 3}, "map power mode names to variant ids"),
        ("pins", ["MAXN"], "map power mode names to variant ids"),
    ],
)
def test_policy_refused_naming_field_and_fix_when_value_is_bad(
    field: str, value: object, hint: str
) -> None:
    with pytest.raises(ConfigError, match=rf"'{field}' must .*{hint}"):
        kwargs: dict[str, Any] = {field: value}
        Policy(**kwargs)


def test_policy_round_trips_through_json_when_every_field_is_set() -> None:
    policy = Policy(
        latency_budget_ms=12.5,
        min_accuracy=0.9,
        max_power_mw=7000,
        memory_budget_mb=512,
        objective="energy",
        upgrade_margin=0.2,
        cooldown_s=3,
        pins={"15W": "base@int8"},
    )
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy and isinstance(again.max_power_mw, float)


def test_policy_from_dict_takes_defaults_when_fields_are_missing() -> None:
    assert Policy.from_dict({}) == Policy()
    assert Policy().to_dict()["upgrade_margin"] == 0.15


def test_policy_from_dict_refuses_when_field_is_unknown() -> None:
    with pytest.raises(ConfigError, match=r"unknown policy field\(s\) \['budget'\]"):
        Policy.from_dict({"budget": 10})


def test_policy_from_dict_refuses_when_not_an_object() -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        Policy.from_dict([1, 2])  # type: ignore[arg-type]


def test_policy_pins_are_a_private_copy_when_caller_mutates_its_dict() -> None:
    pins = {"MAXN": "base@fp32"}
    policy = Policy(pins=pins)
    pins["MAXN"] = "other@fp32"
    assert policy.pins == {"MAXN": "base@fp32"} and hash(policy) == hash(Policy(pins=pins))


def test_nothing_feasible_keeps_the_current_variant_when_it_is_nearly_the_fastest() -> None:
    slow = Policy(latency_budget_ms=0.01)
    ests = [est("a", 0.90, 1.00), est("b", 0.91, 1.05), est("c", 0.93, 3.0)]
    kept = choose(ctx(10.0), ests, slow, PolicyState("b", 0.0))
    assert kept.variant_id == "b" and not kept.changed and not kept.feasible
    assert "within 10% of the fastest" in kept.reason
    moved = choose(ctx(10.0), ests, slow, PolicyState("c", 0.0))
    assert moved.variant_id == "a" and moved.changed


def test_a_step_down_lands_on_a_variant_that_leaves_the_margin_free() -> None:
    policy = Policy(latency_budget_ms=2.0, upgrade_margin=0.15)
    ests = [est("big", 0.95, 2.5), est("edge", 0.93, 1.95), est("safe", 0.90, 1.2)]
    down = choose(ctx(10.0), ests, policy, PolicyState("big", 0.0))
    assert down.variant_id == "safe" and "leaves 15% of the budget free" in down.reason
    no_room = [est("big", 0.95, 2.5), est("edge", 0.93, 1.95)]
    assert choose(ctx(10.0), no_room, policy, PolicyState("big", 0.0)).variant_id == "edge"
