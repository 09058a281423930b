"""Safe exploration: measure a variant by shadow runs before a voluntary move to it
(step-up), step down at once on a violation, back off from variants that keep failing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import PROFILED, ConstantEngine, mode_context

from edge_service.control.budget_strategy import BudgetStrategy, Exploration
from edge_service.control.events import EventLog
from edge_service.control.factory import shadow_runs_are_safe
from edge_service.control.learner import LatencyLearner, LearnerConfig
from edge_service.control.limits import Policy
from edge_service.control.loop import AdaptationLoop
from edge_service.control.predictor import Predictor
from edge_service.control.shadow_runs import (
    PROBE_DUTY,
    PROBE_FAILED_WAIT_S,
    PROBE_MAX_GAP_S,
    ShadowRuns,
)
from edge_service.errors import EngineError
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.runtime.batcher import MicroBatcher
from edge_service.runtime.pool import EnginePool

BASE, DW = "base@fp32", "dw@fp32"  # PROFILED: base 1.0 / 3.0 ms, dw 0.3 / 0.9 ms (MAXN / MIN)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


WAIT_S = 30.0  # a bound on waiting for a shadow run, never an expected speed


def ctx(t: float, mode: str = "MIN") -> Context:
    return mode_context(t, mode)


def exploring(budget: float = 3.0, **policy: object) -> tuple[BudgetStrategy, Clock]:
    """A budget strategy that measures before it moves, on a clock the test moves."""
    clock = Clock()
    predictor = Predictor(PROFILED, "dev", learner=LatencyLearner(clock=clock))
    fields = {"latency_budget_ms": budget, "cooldown_s": 0.0, **policy}
    return BudgetStrategy(predictor, Policy(**fields), Exploration(enabled=True)), clock  # type: ignore[arg-type]


def test_probe_candidate_is_the_better_variant_the_profile_rules_out_but_might_fit() -> None:
    s, _ = exploring()
    first = s.decide(ctx(0.0), None, None)
    assert first.variant_id == DW  # base's MIN profile: p99 3.6 ms > 3 ms budget
    assert s.probe_candidate() == BASE  # 3.6 ms is within 1.5x the budget: worth measuring


def test_step_up_follows_shadow_runs_that_show_the_better_variant_fits() -> None:
    s, clock = exploring()
    s.decide(ctx(0.0), None, None)
    probes = 0
    while s.decide(ctx(clock.t), DW, 0.0).variant_id == DW and clock.t < 20:
        target = s.probe_candidate()  # the board is faster than its profile: base 1.5 ms
        if target is not None:
            s.shadow(target, [1.5] * 24)
            probes += 1
        clock.t += 0.5
    assert 1 <= probes <= 3 and clock.t < 10
    up = s.decide(ctx(clock.t), DW, 0.0)
    assert up.changed and up.variant_id == BASE
    assert s.estimate_of(BASE).confidence > 0.5  # type: ignore[union-attr]


def test_no_voluntary_move_goes_to_a_variant_that_was_not_measured() -> None:
    s, _ = exploring()
    s.decide(ctx(0.0), None, None)
    stay = s.decide(ctx(1.0, "MAXN"), DW, 0.0)  # base fits MAXN on paper: measure it first
    assert stay.variant_id == DW and not stay.changed
    s.shadow(BASE, [1.0] * 48)
    assert s.decide(ctx(2.0, "MAXN"), DW, 0.0).variant_id == BASE


def test_where_nothing_can_measure_a_voluntary_move_trusts_the_prediction() -> None:
    s, _ = exploring()
    s.set_measuring(False)  # no prober: shadow runs would slow the served engine here
    s.decide(ctx(0.0), None, None)
    assert s.probe_candidate() is None
    up = s.decide(ctx(1.0, "MAXN"), DW, 0.0)  # base fits MAXN on paper
    assert up.changed and up.variant_id == BASE


def test_the_loop_tells_its_strategy_whether_it_can_measure() -> None:
    s, clock = exploring()
    loop = AdaptationLoop(
        source=ReplaySource([ctx(0.0, "MAXN")], clock=clock),
        pool=EnginePool(ConstantEngine),
        strategy=s,
        events=EventLog(16),
    )
    s.decide(ctx(0.0), None, None)
    assert s.decide(ctx(1.0, "MAXN"), DW, 0.0).variant_id == BASE  # no prober: on paper
    loop.set_prober(lambda _vid: [1.0] * 24)
    assert s.decide(ctx(2.0, "MAXN"), DW, 0.0).variant_id == DW  # measure first
    loop.set_prober(None)
    assert s.decide(ctx(3.0, "MAXN"), DW, 0.0).variant_id == BASE


def test_a_violation_still_moves_at_once_to_an_unmeasured_variant() -> None:
    s, _ = exploring()
    s.decide(ctx(0.0, "MAXN"), None, None)  # nothing served yet: the prediction decides
    down = s.decide(ctx(1.0, "MIN"), BASE, 0.0)
    assert down.changed and down.variant_id == DW


def test_a_variant_that_does_not_fit_is_measured_less_and_less_often() -> None:
    s, clock = exploring()
    s.decide(ctx(0.0), None, None)
    waits = []
    for _ in range(4):
        target = s.probe_candidate()
        assert target == BASE
        s.shadow(BASE, [3.5] * 24)  # slower than the budget
        waited = 0.0
        while s.probe_candidate() is None and waited < 60:
            clock.t += 0.5
            waited += 0.5
        waits.append(waited)
    assert waits == sorted(waits) and waits[-1] > waits[0]
    assert s.decide(ctx(clock.t), DW, 0.0).variant_id == DW


def test_nothing_is_measured_while_the_served_calls_go_over_the_budget() -> None:
    s, _ = exploring()
    s.decide(ctx(0.0), None, None)
    for _ in range(20):
        s.observe(DW, 0.8)
    assert s.probe_candidate() == BASE
    for _ in range(5):
        s.observe(DW, 5.0)  # 5 of 25 calls over the 3 ms budget: beyond the 1% allowance
    assert s.probe_candidate() is None


def test_nothing_is_measured_when_an_operator_pin_holds_the_mode() -> None:
    s, _ = exploring(pins={"MIN": DW})
    s.decide(ctx(0.0), None, None)
    assert s.probe_candidate() is None


def test_nothing_is_measured_when_exploration_is_off() -> None:
    predictor = Predictor(PROFILED, "dev")
    s = BudgetStrategy(predictor, Policy(latency_budget_ms=3.0))
    s.decide(ctx(0.0), None, None)
    assert s.probe_candidate() is None


def test_a_hold_is_lifted_by_a_shadow_run_only_once_the_contention_has_eased() -> None:
    s, clock = exploring(cooldown_s=5.0)
    s.decide(ctx(0.0, "MAXN"), None, None)

    def serve(vid: str, ms: float, n: int) -> None:
        for _ in range(n):
            s.observe(vid, ms)
            clock.t += 0.025

    serve(BASE, 1.0, 20)  # learned at its profile
    serve(BASE, 4.0, 40)  # a competitor: the contention climbs
    left = s.decide(ctx(1.0, "MAXN"), BASE, 0.0)
    assert left.variant_id == DW  # held until 1 + 2 x cooldown = 11 s
    serve(DW, 1.2, 20)  # still contended
    s.shadow(BASE, [4.0] * 48)
    assert s.decide(ctx(5.0, "MAXN"), DW, 1.0).variant_id == DW  # measured, not relieved
    serve(DW, 0.3, 60)  # the competitor left: the contention falls
    clock.t += LearnerConfig().stall_window_s + 1.0  # and its stalls leave the window
    serve(DW, 0.3, 40)
    s.decide(ctx(5.5, "MAXN"), DW, 1.0)
    s.shadow(BASE, [1.0] * 48)
    assert s.decide(ctx(6.0, "MAXN"), DW, 1.0).variant_id == BASE  # before the hold ends


def test_where_nothing_can_measure_a_hold_is_lifted_once_the_contention_has_eased() -> None:
    s, clock = exploring(cooldown_s=5.0)
    s.set_measuring(False)
    s.decide(ctx(0.0, "MAXN"), None, None)

    def serve(vid: str, ms: float, n: int) -> None:
        for _ in range(n):
            s.observe(vid, ms)
            clock.t += 0.025

    serve(BASE, 1.0, 20)
    serve(BASE, 4.0, 40)  # a competitor: the contention climbs
    assert s.decide(ctx(1.0, "MAXN"), BASE, 0.0).variant_id == DW  # held until 11 s
    serve(DW, 1.2, 20)
    assert s.decide(ctx(5.0, "MAXN"), DW, 1.0).variant_id == DW  # still contended: held
    serve(DW, 0.3, 60)  # the competitor left: the contention falls
    clock.t += LearnerConfig().stall_window_s + 1.0  # and its stalls leave the window
    serve(DW, 0.3, 40)
    assert s.decide(ctx(6.0, "MAXN"), DW, 1.0).variant_id == BASE  # before the hold ends


def test_a_variant_left_for_its_own_cost_stays_held_whatever_a_shadow_run_shows() -> None:
    s, _ = exploring(cooldown_s=2.0)
    s.decide(ctx(0.0, "MAXN"), None, None)
    for _ in range(40):  # base itself runs slow: nothing else changed
        s.observe(BASE, 6.0)
    assert s.decide(ctx(1.0, "MAXN"), BASE, 0.0).variant_id == DW
    s.predictor.learner.reset()
    s.shadow(BASE, [1.0] * 48)
    assert s.decide(ctx(4.0, "MAXN"), DW, 1.0).variant_id == DW  # held until 5 s
    s.shadow(BASE, [1.0] * 48)
    assert s.decide(ctx(5.5, "MAXN"), DW, 1.0).variant_id == BASE  # the hold ran out


def test_the_loop_measures_through_its_prober_and_steps_up() -> None:
    s, clock = exploring()
    source = ReplaySource([ctx(float(i)) for i in range(40)], clock=clock)
    measured: list[str] = []

    def prober(variant_id: str) -> list[float]:
        measured.append(variant_id)
        return [1.5] * 24

    pool = EnginePool(ConstantEngine)
    loop = AdaptationLoop(source=source, pool=pool, strategy=s, events=EventLog(16), prober=prober)
    served = []
    for i in range(40):
        clock.t = float(i)
        loop.tick()
        assert loop.shadow_runs.wait(WAIT_S)  # the run is on a thread of its own
        served.append(pool.active_id)
        loop.shadow_runs.allow_now()  # the duty cycle runs on wall time; this test on its own
    assert served[0] == DW and served[-1] == BASE
    assert measured and set(measured) == {BASE} and loop.probes == len(measured)
    up = next(e for e in loop.events.recent() if e.to_variant == BASE)
    assert up.prediction is not None and up.prediction["confidence"] > 0.5


def test_shadow_runs_are_timed_by_the_batcher_between_requests() -> None:
    pool = EnginePool(ConstantEngine)
    pool.activate(DW)
    batcher = MicroBatcher(pool)
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    try:
        futures = [batcher.submit(lambda _vid: x, 1) for _ in range(20)]
        times = batcher.shadow(BASE, x, 10, gap_s=0.0)
        assert len(times) == 10 and all(t >= 0 for t in times)
        assert all(f.result(timeout=10).variant_id == DW for f in futures)
        assert pool.active_id == DW  # measuring never swaps the served engine
    finally:
        batcher.close()


def test_a_shadow_run_of_a_failing_engine_raises_an_engine_error() -> None:
    def loader(variant_id: str) -> ConstantEngine:
        if variant_id == BASE:
            raise EngineError("corrupt artifact")
        return ConstantEngine(variant_id)

    pool = EnginePool(loader)
    pool.activate(DW)
    batcher = MicroBatcher(pool)
    try:
        with pytest.raises(EngineError, match="shadow run of base@fp32"):
            batcher.shadow(BASE, np.zeros((1, 1, 4, 4), dtype=np.float32), 5)
    finally:
        batcher.close()


def test_a_shadow_run_after_close_measures_nothing() -> None:
    pool = EnginePool(ConstantEngine)
    batcher = MicroBatcher(pool)
    batcher.close()
    assert batcher.shadow(BASE, np.zeros((1, 1, 4, 4), dtype=np.float32), 5) == []


@pytest.mark.parametrize(
    ("threads", "backends", "safe"),
    [
        (1, {"onnxruntime"}, True),  # no worker threads: nothing spins between calls
        (2, {"onnxruntime"}, False),  # a measured engine's spinning workers slow the served
        (4, {"onnxruntime", "tensorrt"}, False),
        (4, {"tensorrt"}, True),  # GPU engines: no CPU thread pool to compete
    ],
)
def test_shadow_runs_are_made_only_where_they_leave_the_served_engine_alone(
    threads: int, backends: set[str], safe: bool
) -> None:
    assert shadow_runs_are_safe(threads, backends) is safe


def _held_prober(ms: float = 1.5) -> tuple[list[str], threading.Event, object]:
    measured: list[str] = []
    release = threading.Event()

    def prober(variant_id: str) -> list[float]:
        measured.append(variant_id)
        assert release.wait(WAIT_S)
        return [ms] * 24

    return measured, release, prober


def test_the_loop_decides_on_while_a_shadow_run_is_under_way() -> None:
    s, clock = exploring()
    source = ReplaySource([ctx(float(i)) for i in range(40)], clock=clock)
    measured, release, prober = _held_prober()
    pool = EnginePool(ConstantEngine)
    loop = AdaptationLoop(
        source=source,
        pool=pool,
        strategy=s,
        events=EventLog(16),
        prober=prober,  # type: ignore[arg-type]
    )
    loop.tick()
    assert loop.shadow_runs.running and measured == [BASE]  # a detector's run takes seconds ...
    clock.t = 1.0
    loop.shadow_runs.allow_now()  # past the duty cycle: still one run at a time
    loop.tick()  # ... and the loop does not wait for it
    assert loop.state().ticks == 2 and measured == [BASE] and loop.probes == 0
    release.set()
    assert loop.shadow_runs.wait(WAIT_S) and loop.probes == 1
    assert s.estimate_of(BASE).samples >= 24  # type: ignore[union-attr]
    loop.stop()


def test_a_competitor_that_left_lets_a_shadow_run_start_at_once() -> None:
    s, clock = exploring()
    source = ReplaySource([ctx(float(i)) for i in range(40)], clock=clock)
    measured, release, prober = _held_prober(ms=150.0)  # 3.6 s of calls: the 8 s cap
    release.set()
    loop = AdaptationLoop(
        source=source, pool=EnginePool(ConstantEngine), strategy=s, events=EventLog(16),
        prober=prober,  # type: ignore[arg-type]
    )  # fmt: skip
    loop.tick()
    assert loop.shadow_runs.wait(WAIT_S) and measured == [BASE]
    for t, regime in ((1.0, None), (2.0, False), (3.0, True)):
        clock.t = t
        if regime is not None:
            loop.new_regime(improved=regime)
        s.predictor.learner.reset()  # base unmeasured again: worth measuring
        loop.tick()
        assert loop.shadow_runs.wait(WAIT_S)
    # the duty cycle held the run at 1 s, a competitor that came held it still, one that
    # left let it start
    assert measured == [BASE, BASE]


def test_a_long_shadow_run_keeps_the_next_one_at_most_eight_seconds_away() -> None:
    s, _ = exploring()
    s.decide(ctx(0.0), None, None)
    fast = ShadowRuns(lambda _vid: [1.0] * 24, lambda: None)
    fast.start(s, BASE)
    assert fast.wait(WAIT_S) and fast.count == 1
    assert fast.next_in_s() <= 24 * 1e-3 / PROBE_DUTY  # a classifier's: 0.5 s of duty cycle
    slow = ShadowRuns(lambda _vid: [100.0] * 26, lambda: None)  # a detector's 2.6 s of calls
    slow.start(s, BASE)
    assert slow.wait(WAIT_S)
    assert 2.6 / PROBE_DUTY > PROBE_MAX_GAP_S >= slow.next_in_s() > PROBE_MAX_GAP_S - WAIT_S / 10


def test_a_failed_shadow_run_waits_and_the_measuring_goes_on() -> None:
    s, _ = exploring()
    s.decide(ctx(0.0), None, None)
    woken: list[bool] = []

    def broken(_vid: str) -> list[float]:
        raise EngineError("shadow run of base@fp32 failed: broken kernel")

    runs = ShadowRuns(broken, lambda: woken.append(True))
    runs.start(s, BASE)
    assert runs.wait(WAIT_S) and runs.count == 0 and woken == [True]
    assert not runs.due() and runs.next_in_s() <= PROBE_FAILED_WAIT_S
