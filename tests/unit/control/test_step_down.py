"""Step-down on what was served: calls over the budget back to back break the served
variant at once, whatever its prediction says, and raise the contention so the step down
lands where it fits; the loop is woken to act on them now, not at the end of its period."""

from __future__ import annotations

import math
import time

import pytest
from support import ConstantEngine, mode_context, serving_base

from edge_service.control.events import EventLog
from edge_service.control.evidence import EVIDENCE_STALE_S, OVER_STREAK, far_over
from edge_service.control.learner import LatencyLearner
from edge_service.control.loop import AdaptationLoop
from edge_service.monitor.replay import ReplaySource
from edge_service.runtime.pool import EnginePool

BASE, DW = "base@fp32", "dw@fp32"  # PROFILED: base 1.0 / 3.0 ms, dw 0.3 / 0.9 ms (MAXN / MIN)
WAIT_S = 30.0  # a bound on waiting for the loop thread, never an expected speed


def test_two_served_calls_over_the_budget_back_to_back_step_down_at_once() -> None:
    s, clock = serving_base()
    assert s.estimate_of(BASE).p99_ms < 3.0  # type: ignore[union-attr]  # predicted to fit
    assert OVER_STREAK == 2
    assert s.observe(BASE, 3.5) is False  # one slow call: no evidence yet
    clock.t = 0.05
    assert s.observe(BASE, 3.6) is True  # the second in a row: decide now
    down = s.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    assert down.changed and down.variant_id == DW
    assert down.violations  # a forced move, not a voluntary one
    assert "2 served calls in a row over the budget (3.5, 3.6 ms)" in down.reason


def test_one_undisturbed_call_far_over_a_detector_budget_steps_down_at_once() -> None:
    s, _ = serving_base()  # budget 3 ms: a single call proves nothing, however slow
    assert s.observe(BASE, 72.0) is False  # a classifier's stall (seen: 16-72 ms)
    s2, _ = serving_base(budget=130.0)
    assert s2.observe(BASE, 200.0, learn=False) is False  # the server's own load slowed it
    s3, _ = serving_base(budget=130.0)
    assert s3.observe(BASE, 140.0) is False  # 1.1x 130 ms is 143 ms: not that far
    s4, _ = serving_base(budget=130.0)
    assert s4.observe(BASE, 200.0) is True
    down = s4.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    assert down.violations
    assert "a served call far over the budget (200 ms)" in down.reason


def test_calls_the_servers_own_loads_slowed_are_no_evidence_for_a_step_down() -> None:
    s, _ = serving_base()
    assert s.observe(BASE, 3.5, learn=False) is False  # a power-mode reload slowed both
    assert s.observe(BASE, 3.6, learn=False) is False
    assert s.observe(BASE, 3.5) is False  # the first undisturbed one over: no streak yet
    assert s.observe(BASE, 3.6, learn=False) is False  # neither breaks nor extends it
    assert s.observe(BASE, 3.7) is True
    down = s.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    assert "2 served calls in a row over the budget (3.5, 3.7 ms)" in down.reason


@pytest.mark.parametrize(
    ("ms", "budget", "far"),
    [
        (170.0, 124.0, True),  # a detector at 1.37x its budget
        (140.0, 124.0, True),  # 1.13x: no variant that kept its SLO went that far
        (135.0, 124.0, False),  # 1.09x: not yet proof alone
        (130.0, 124.0, False),
        (2.6, 1.3, False),  # a classifier's 2x: one preemption does that
        (72.0, 1.3, False),  # and a 72 ms stall was seen: short budgets never count
        (61.0, 50.0, True),
        (59.0, 50.0, False),  # 50 ms + 10 ms: the floor over 1.1x (55 ms)
    ],
)
def test_far_over_needs_a_long_budget_a_tenth_over_and_ten_milliseconds(
    ms: float, budget: float, far: bool
) -> None:
    assert far_over(ms, budget) is far


def test_the_step_down_predicts_every_variant_slower_by_what_the_calls_showed() -> None:
    s, _ = serving_base()
    before = s.estimate_of(DW).p99_ms  # type: ignore[union-attr]
    base_p99 = s.estimate_of(BASE).p99_ms  # type: ignore[union-attr]
    s.observe(BASE, 3.5)
    s.observe(BASE, 3.6)
    s.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    after = s.estimate_of(DW)
    assert after is not None
    # base was predicted ~1.2 ms and ran 3.5 ms: the processor is ~3x slower for every variant
    assert after.correction == pytest.approx(3.5 / base_p99, rel=0.1)
    assert after.p99_ms > 2 * before
    assert s.estimate_of(BASE).p99_ms >= 3.5  # type: ignore[union-attr]


def test_two_slow_calls_among_twenty_move_nothing() -> None:
    s, _ = serving_base()
    for ms in (3.5, 1.0, 1.0, 1.1, 3.7) + (1.0,) * 15:
        assert s.observe(BASE, ms) is False
    stay = s.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    assert not stay.changed and stay.variant_id == BASE
    assert s.estimate_of(BASE).correction < 1.5  # type: ignore[union-attr]


def test_three_slow_calls_among_twenty_step_down_though_none_came_in_a_row() -> None:
    s, _ = serving_base()  # a competitor that preempts one call in six: 3 in 13 here
    calls = (3.5,) + (1.0,) * 5 + (3.7,) + (1.0,) * 5 + (3.6,)
    urgent = [s.observe(BASE, ms) for ms in calls]
    assert urgent == [False] * 12 + [True]
    down = s.decide(mode_context(0.1, "MAXN"), BASE, 0.0)
    assert down.changed and down.variant_id == DW
    assert "3 of the last 13 served calls over the budget (3.5, 3.7, 3.6 ms)" in down.reason


def test_slow_calls_further_apart_than_the_window_prove_nothing() -> None:
    s, _ = serving_base()
    for _ in range(3):
        assert s.observe(BASE, 3.5) is False
        assert not any(s.observe(BASE, 1.0) for _ in range(20))
    # (the learned stall tail may still break the budget: 3 in 63 is 5%; not this rule)
    assert "served calls" not in s.decide(mode_context(0.1, "MAXN"), BASE, 0.0).reason


def test_a_streak_is_used_once_and_only_for_the_variant_that_ran_it() -> None:
    s, _ = serving_base()
    s.observe(BASE, 3.5)
    s.observe(BASE, 3.6)
    # the streak was base's: a decision about dw (served now, say) takes nothing from it
    assert not s.decide(mode_context(0.1, "MAXN"), DW, 0.0).violations
    s.observe(BASE, 3.5)
    s.observe(BASE, 3.6)
    assert s.decide(mode_context(0.2, "MAXN"), BASE, 0.0).changed


def test_a_stale_streak_is_no_evidence_about_now() -> None:
    s, clock = serving_base()
    s.observe(BASE, 3.5)
    s.observe(BASE, 3.6)
    clock.t = EVIDENCE_STALE_S + 1.0
    stay = s.decide(mode_context(clock.t, "MAXN"), BASE, 0.0)
    assert not stay.changed and not stay.violations


def test_without_a_latency_budget_no_call_makes_a_streak() -> None:
    s, _ = serving_base(budget=None)
    assert not any(s.observe(BASE, 50.0) for _ in range(10))


def test_raised_contention_never_falls_below_what_it_was() -> None:
    learner = LatencyLearner()
    assert learner.raise_contention("cpu", "MAXN", 2.0) == 2.0
    assert learner.raise_contention("cpu", "MAXN", 1.5) == 2.0
    assert learner.contention("cpu", "MAXN") == 2.0
    assert learner.contention("cpu", "MIN") == 2.0  # a new mode starts from the last one
    with pytest.raises(ValueError, match="contention"):
        learner.raise_contention("cpu", "MAXN", math.nan)


def test_a_woken_loop_ticks_at_once_not_at_the_end_of_its_period() -> None:
    s, clock = serving_base()
    source = ReplaySource([mode_context(float(i), "MAXN") for i in range(10)], clock=clock)
    loop = AdaptationLoop(
        source=source, pool=EnginePool(ConstantEngine), strategy=s, events=EventLog(16),
        period_s=3600.0,
    )  # fmt: skip
    loop.start()
    try:
        assert loop.state().ticks == 1  # start() decides once
        loop.wake()
        deadline = time.monotonic() + WAIT_S
        while loop.state().ticks < 2:
            assert time.monotonic() < deadline, "the woken loop did not tick"
            time.sleep(0.005)
    finally:
        loop.stop()
    assert loop.state().ticks == 2


def test_a_wake_that_waits_returns_once_the_loop_stepped_down() -> None:
    s, clock = serving_base()
    source = ReplaySource([mode_context(float(i), "MAXN") for i in range(10)], clock=clock)
    pool = EnginePool(ConstantEngine)
    loop = AdaptationLoop(
        source=source, pool=pool, strategy=s, events=EventLog(16), period_s=3600.0
    )  # fmt: skip
    loop.start()
    try:
        assert pool.active_id == BASE
        s.observe(BASE, 3.5)
        assert s.observe(BASE, 3.6)  # proof: the batcher's worker wakes the loop and waits
        loop.wake(wait_s=WAIT_S)
        assert pool.active_id == DW  # swapped before the wait ended: the next call is DW's
        started = time.monotonic()
        loop.wake(wait_s=WAIT_S)  # nothing to do: the tick stays, and the wait ends with it
        assert time.monotonic() - started < WAIT_S / 2 and pool.active_id == DW
    finally:
        loop.stop()
    started = time.monotonic()
    loop.wake(wait_s=0.05)  # a stopped loop: the wait ends at its bound, not never
    assert time.monotonic() - started >= 0.05


def test_a_new_regime_lifts_the_holds_and_forgets_the_stalls() -> None:
    s, clock = serving_base()
    s.observe(BASE, 3.5)
    s.observe(BASE, 3.6)
    assert s.decide(mode_context(0.1, "MAXN"), BASE, 0.0).variant_id == DW
    for _ in range(64):  # served calls with stalls: a tail that bounds every p99
        clock.t += 0.01
        s.observe(DW, 0.3)
        s.observe(DW, 2.9)
    s.decide(mode_context(clock.t, "MAXN"), DW, 0.0)
    assert s.estimate_of(BASE).p99_ms > 3.0  # type: ignore[union-attr]
    for _ in range(200):  # the competitor left: the served calls say so
        clock.t += 0.01
        s.observe(DW, 0.3)
    s.decide(mode_context(clock.t, "MAXN"), DW, -100.0)
    s.shadow(BASE, [1.0] * 48)  # and base measures well again
    held = s.decide(mode_context(clock.t, "MAXN"), DW, -100.0)
    assert held.variant_id == DW  # still held, and its p99 still carries the old stalls
    s.new_regime()  # the board says the competitor left
    back = s.decide(mode_context(clock.t, "MAXN"), DW, -100.0)
    assert back.variant_id == BASE, back.reason
    assert s.estimate_of(BASE).p99_ms < 3.0  # type: ignore[union-attr]
