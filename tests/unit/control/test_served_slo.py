"""The served variant judged on its own calls: a p99 budget promises at most 1% of them
over it, so while its recent calls keep that the variant stays whatever its p99 estimate
says (no flapping on an estimate at the edge), and when they prove more (a binomial test
against 1%) it is left whatever the estimate says."""

from __future__ import annotations

import math

import pytest
from support import PROFILED, Clock, mode_context, serving_base

from edge_service.control.budget_strategy import BudgetStrategy, Exploration
from edge_service.control.evidence import (
    SLO_MIN_CALLS,
    SLO_WINDOW_S,
    ServedRecord,
    Verdict,
    judge,
    tail_probability,
)
from edge_service.control.learner import LatencyLearner
from edge_service.control.limits import Policy
from edge_service.control.predictor import Estimate, Predictor

BASE, DW = "base@fp32", "dw@fp32"  # PROFILED: base 1.0 / 3.0 ms, dw 0.3 / 0.9 ms (MAXN / MIN)
BUDGET = 3.0


def serve(s: BudgetStrategy, clock: Clock, times: list[float], dt: float = 0.02) -> None:
    for ms in times:
        clock.t += dt
        assert s.observe(BASE, ms) is False  # no fast evidence rule fires on these


def spread(n: int, over: int) -> list[float]:
    """``n`` calls of 1 ms with ``over`` of them at 3.5 ms, evenly apart (never two in a
    row, never three in twenty: only the SLO verdict can see them)."""
    step = n // max(over, 1)
    return [3.5 if over and i % step == step - 1 and i // step < over else 1.0 for i in range(n)]


def test_tail_probability_is_the_binomial_tail() -> None:
    def exact(n: int, k: int, p: float) -> float:
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    for n, k in ((100, 0), (100, 1), (100, 3), (200, 8), (1000, 15)):
        assert tail_probability(n, k) == pytest.approx(exact(n, k, 0.01), abs=1e-12)
    assert tail_probability(10, 11) == 0.0


def test_a_verdict_needs_enough_recent_calls_of_the_variant_served() -> None:
    r = ServedRecord()
    for i in range(SLO_MIN_CALLS - 1):
        r.add(BASE, i * 0.01, 1.0, False)
    assert r.verdict(BASE, 1.0) is None  # too few
    r.add(BASE, 1.0, 1.0, False)
    assert r.verdict(BASE, 1.0) is not None
    assert r.verdict(DW, 1.0) is None  # not the one recorded
    assert r.verdict(BASE, 1.0 + SLO_WINDOW_S + 0.5) is None  # every call aged out
    r.add(BASE, 1.0, 1.0, False)
    r.add(DW, 1.1, 0.3, False)  # a new variant starts a new record
    assert r.verdict(DW, 1.1) is None


@pytest.mark.parametrize(
    ("over", "outcome"), [(0, "compliant"), (2, "compliant"), (4, "undecided"), (9, "over")]
)
def test_the_verdict_weighs_the_share_over_the_budget(over: int, outcome: str) -> None:
    r = ServedRecord()
    for i, ms in enumerate(spread(200, over)):
        r.add(BASE, i * 0.02, ms, ms > BUDGET)
    v = r.verdict(BASE, 4.0)
    assert v is not None and (v.calls, v.over, v.outcome) == (200, over, outcome)
    assert (v.p99_ms <= BUDGET) == (outcome == "compliant")


def test_a_variant_that_keeps_its_slo_stays_though_its_estimate_breaks_the_budget() -> None:
    s, clock = serving_base()
    serve(s, clock, spread(200, 2))  # 1% over: the SLO is kept
    e = s.estimate_of(BASE)
    assert e is not None
    s.predictor.raise_contention(e, 4.0)  # the estimate says base now breaks the budget
    stay = s.decide(mode_context(clock.t, "MAXN"), BASE, 0.0)
    assert not stay.changed and not stay.violations
    assert s.estimate_of(BASE).p99_ms > BUDGET  # type: ignore[union-attr]  # reported as is
    slo = s.served_slo()
    assert slo is not None and (slo.calls, slo.over, slo.outcome) == (200, 2, "compliant")


def test_without_enough_calls_the_estimate_decides() -> None:
    s, clock = serving_base()
    serve(s, clock, [1.0] * (SLO_MIN_CALLS // 2))
    e = s.estimate_of(BASE)
    assert e is not None
    s.predictor.raise_contention(e, 4.0)
    down = s.decide(mode_context(clock.t, "MAXN"), BASE, 0.0)
    assert down.changed and down.variant_id == DW and down.violations


def test_calls_that_prove_more_than_one_percent_over_step_down_and_say_so() -> None:
    s, clock = serving_base()
    serve(s, clock, spread(200, 9))  # 4.5%: no two in a row, never three in twenty
    down = s.decide(mode_context(clock.t, "MAXN"), BASE, 0.0)
    assert down.changed and down.variant_id == DW and down.violations
    assert "9 of its last 200 served calls over the budget" in down.reason


def test_calls_served_in_another_power_mode_say_nothing_of_this_one() -> None:
    s, clock = serving_base()
    serve(s, clock, [1.0] * 200)  # compliant in MAXN
    down = s.decide(mode_context(clock.t, "MIN"), BASE, 0.0)  # base: p50 3 ms in MIN
    assert down.changed and down.variant_id == DW
    assert s.served_slo() is None


def test_a_new_regime_starts_the_record_afresh() -> None:
    s, clock = serving_base()
    serve(s, clock, [1.0] * 200)
    assert s.served_slo() is not None
    s.new_regime()
    assert s.served_slo() is None


def test_a_call_the_servers_own_loads_slowed_counts_for_the_slo_but_is_not_learned() -> None:
    s, clock = serving_base()
    serve(s, clock, [1.0] * 20)
    before = s.predictor.estimate(BASE, mode_context(clock.t, "MAXN"))
    for _ in range(SLO_MIN_CALLS):
        clock.t += 0.02
        s.observe(BASE, 2.9, learn=False)  # slowed by a load: 3x, just under the budget
    after = s.predictor.estimate(BASE, mode_context(clock.t, "MAXN"))
    assert after.p50_ms == pytest.approx(before.p50_ms, rel=0.05)  # nothing learned
    assert after.correction == pytest.approx(before.correction)
    slo = s.served_slo()
    assert slo is not None and slo.calls == 20 + SLO_MIN_CALLS  # all served: all counted
    assert slo.p99_ms == pytest.approx(2.9)


def leave_base_then_calm_down(
    s: BudgetStrategy, clock: Clock, calls: list[float], dt: float = 0.02
) -> str:
    """Serve ``calls`` on base, make its estimate break the budget (it is left), then let
    it fit again (the contention back to none: an estimate at the edge of the budget
    wanders so); the variant the next voluntary move (after the cooldown) serves."""
    s.set_measuring(False)  # no shadow runs: a voluntary move trusts the estimate
    serve(s, clock, calls, dt)
    e = s.estimate_of(BASE)
    assert e is not None
    s.predictor.raise_contention(e, 4.0)
    down = s.decide(mode_context(1.0, "MAXN"), BASE, 0.0)
    assert down.variant_id == DW and down.violations
    s.predictor.learner.reset_contention()
    return s.decide(mode_context(200.0, "MAXN"), DW, 1.0).variant_id


def test_a_variant_left_without_a_verdict_is_taken_back_when_it_fits_again() -> None:
    s, clock = serving_base()
    assert leave_base_then_calm_down(s, clock, [1.0] * (SLO_MIN_CALLS // 2)) == BASE


def test_a_variant_whose_own_calls_broke_the_slo_is_not_taken_back_while_they_say_so() -> None:
    s, clock = serving_base()
    # 2% over (undecided), all in the first third of the window: the estimate, whose
    # stall tail looks 4 s back, forgot them and says base fits
    early = [3.5 if i in (0, 25, 50, 75) else 1.0 for i in range(200)]
    assert leave_base_then_calm_down(s, clock, early, dt=0.07) == DW
    assert s.estimate_of(BASE).p99_ms < BUDGET  # type: ignore[union-attr]
    # (the estimate alone would take base back: the test above)
    clock.t += SLO_WINDOW_S  # its calls aged out: the estimate decides again
    assert s.decide(mode_context(300.0, "MAXN"), DW, 1.0).variant_id == BASE


def _est(vid: str, p99: float) -> Estimate:
    return Estimate(vid, 0.9, p99 / 2, p99, None, None, None, True, "measured")


def _verdict(outcome: str, p99: float) -> Verdict:
    return Verdict(200, {"compliant": 1, "undecided": 4, "over": 9}[outcome], p99, outcome)


def test_judging_the_served_variant_on_its_calls() -> None:
    est = [_est("a", 1.5)]
    assert judge(est, "a", {"a": _verdict("compliant", 1.2)}, 1.37)[0].p99_ms == 1.2
    assert judge(est, "a", {"a": _verdict("over", 2.5)}, 1.37)[0].p99_ms == 2.5
    assert judge(est, "a", {"a": _verdict("undecided", 1.6)}, 1.37)[0].p99_ms == 1.5
    assert judge(est, "a", {}, 1.37) == est
    assert judge(est, "a", {"a": _verdict("over", 2.5)}, None) == est  # no budget


def test_a_variant_served_before_is_judged_slow_on_its_calls_but_never_fast() -> None:
    est = [_est("a", 1.5), _est("b", 1.4)]
    judged = {e.variant_id: e.p99_ms for e in judge(est, "a", {
        "a": _verdict("over", 2.5), "b": _verdict("undecided", 2.6)}, 1.37)}  # fmt: skip
    # both judged on what they served: a, the faster there, stays the fastest (judged on
    # its calls against b's estimate, the two swapped on every tick)
    assert judged == {"a": 2.5, "b": 2.6}
    kept = judge(est, "a", {"b": _verdict("compliant", 0.9)}, 1.37)
    assert kept[1].p99_ms == 1.4  # compliant before: the contention may have risen since


def test_a_served_variant_that_keeps_its_slo_may_still_measure_a_better_one() -> None:
    """Exploring (step-up) stops while the served variant breaks the policy; one whose
    own calls keep the SLO does not break it, whatever its estimate says, so the loop is
    not stuck at the bottom on an estimate."""
    clock = Clock()
    predictor = Predictor(PROFILED, "dev", learner=LatencyLearner(clock=clock))
    policy = Policy(latency_budget_ms=1.1, cooldown_s=60.0)  # base (1.0 ms p50) breaks it
    s = BudgetStrategy(predictor, policy, Exploration(enabled=True, might_fit=10.0))
    assert s.decide(mode_context(0.0, "MAXN"), None, None).variant_id == DW
    for _ in range(150):
        clock.t += 0.02
        s.observe(DW, 0.3)
    e = s.estimate_of(DW)
    assert e is not None
    s.predictor.raise_contention(e, 5.0)  # the estimate says dw breaks the budget now
    assert s.decide(mode_context(3.0, "MAXN"), DW, 0.0).variant_id == DW
    assert s.estimate_of(DW).p99_ms > 1.1  # type: ignore[union-attr]
    assert s.probe_candidate() == BASE
