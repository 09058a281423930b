"""The loop under the budget strategy: power-mode changes and contention move the engine."""

from __future__ import annotations

from support import PROFILED, ConstantEngine, mode_context, profiled_catalog, profiled_variant

from edge_service.control.budget_strategy import BudgetStrategy
from edge_service.control.events import EventLog
from edge_service.control.limits import Policy
from edge_service.control.loop import AdaptationLoop
from edge_service.control.predictor import Predictor
from edge_service.control.pressure_rule import Candidate, PressureRule
from edge_service.control.strategy import PressureStrategy
from edge_service.errors import EngineError
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.runtime.pool import EnginePool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_ctx = mode_context


def _loop(modes: list[str], cooldown: float = 0.0):
    clock = Clock()
    source = ReplaySource([_ctx(float(i), m) for i, m in enumerate(modes)], clock=clock)
    strategy = BudgetStrategy(
        Predictor(PROFILED, "dev"), Policy(latency_budget_ms=2.0, cooldown_s=cooldown)
    )
    pool = EnginePool(ConstantEngine)
    loop = AdaptationLoop(source=source, pool=pool, strategy=strategy, events=EventLog(16))
    return loop, pool, clock


def test_budget_loop_downgrades_when_power_mode_drops_and_returns_after() -> None:
    loop, pool, clock = _loop(["MAXN", "MIN", "MAXN"])
    served = []
    for now in (0.0, 1.0, 2.0):
        clock.now = now
        loop.tick()
        served.append(pool.active_id)
    assert served == ["base@fp32", "dw@fp32", "base@fp32"]
    assert loop.events.recent()[1].predicted_latency_ms == 0.9


def test_observed_contention_moves_to_faster_variant_when_engine_runs_slow() -> None:
    loop, pool, clock = _loop(["MAXN"] * 3)
    loop.tick()
    assert pool.active_id == "base@fp32"
    for _ in range(30):  # base takes 3x its profile: another process is eating the CPU
        loop.strategy.observe("base@fp32", 3.0)
    clock.now = 1.0
    loop.tick()
    assert pool.active_id == "dw@fp32"
    assert "budget" in loop.events.recent()[-1].reason


def test_default_is_most_accurate_when_monitor_cannot_be_read() -> None:
    strategy = BudgetStrategy(Predictor(PROFILED, "dev"), Policy(latency_budget_ms=2.0))
    assert strategy.default() == "base@fp32"
    candidates = [Candidate("a", 0.9, 1.0), Candidate("b", 0.8, 0.1)]
    pressure = PressureStrategy(candidates, PressureRule())
    assert pressure.default() == "a" and pressure.predicted_ms("b") == 0.1


def test_unhealthy_variant_is_not_chosen_again_when_its_load_failed() -> None:
    clock = Clock()
    source = ReplaySource([_ctx(float(i), "MAXN") for i in range(3)], clock=clock)

    def loader(vid: str) -> ConstantEngine:
        if vid == "base@fp32":
            raise EngineError("corrupt artifact")
        return ConstantEngine(vid)

    pool = EnginePool(loader)
    loop = AdaptationLoop(
        source=source,
        pool=pool,
        events=EventLog(16),
        strategy=BudgetStrategy(
            Predictor(PROFILED, "dev"), Policy(latency_budget_ms=2.0, cooldown_s=0)
        ),
    )
    for now in (0.0, 1.0, 2.0):
        clock.now = now
        loop.tick()
    failed = [e for e in loop.events.recent() if e.error]
    assert len(failed) == 1  # tried once, then excluded
    assert pool.active_id == "dw@fp32"


def _preloading(catalog=PROFILED, pool: EnginePool | None = None, **budget: object):
    """A budget loop in MAXN over ``catalog`` with the preload ``budget`` settings."""
    pool = pool or EnginePool(ConstantEngine)
    loop = AdaptationLoop(
        source=ReplaySource([_ctx(0.0, "MAXN")], clock=Clock()),
        pool=pool,
        events=EventLog(16),
        strategy=BudgetStrategy(Predictor(catalog, "dev"), Policy(latency_budget_ms=2.0)),
        **budget,  # type: ignore[arg-type]
    )
    return loop, pool


def test_neighbours_are_preloaded_within_budget_when_a_switch_happens() -> None:
    loop, pool = _preloading(preload_memory_mb=10.0, engine_memory_mb=lambda _: 8.0)
    loop.tick()
    assert pool.active_id == "base@fp32" and pool.standby == ("dw@fp32",)


def test_a_variant_whose_memory_nobody_measured_is_loaded_then_kept_only_if_it_fits() -> None:
    pool = EnginePool(ConstantEngine)
    measured: dict[str, float] = {}
    loaded: list[tuple[str, ...]] = []

    def cost(vid: str) -> float | None:
        return measured.get(vid)

    real_preload = pool.preload

    def preload(ids: list[str]) -> None:
        real_preload(ids)
        loaded.append(pool.standby)
        for vid in ids:  # what the pool's load measured
            measured[vid] = 12.0

    pool.preload = preload  # type: ignore[method-assign]
    loop, _ = _preloading(pool=pool, preload_memory_mb=10.0, engine_memory_mb=cost)
    loop.tick()
    assert loaded == [("dw@fp32",), ()]  # loaded to be measured, then over the budget
    assert pool.standby == ()


def test_the_pool_measures_what_loading_an_engine_adds_to_the_process() -> None:
    held: list[bytearray] = []

    def loader(vid: str) -> ConstantEngine:
        held.append(bytearray(32 * 2**20))  # 32 MiB the "engine" keeps
        for i in range(0, len(held[-1]), 4096):
            held[-1][i] = 1  # touch the pages, so they are resident
        return ConstantEngine(vid)

    pool = EnginePool(loader)
    assert pool.measured_mb("a") is None
    pool.activate("a")
    figure = pool.measured_mb("a")
    assert figure is not None and 24.0 <= figure <= 64.0


def _slow(predictor: Predictor, variant_id: str, ms: float = 50.0) -> None:
    """One served call of ``variant_id`` (in MAXN) taking ``ms``."""
    predictor.observe(predictor.estimate(variant_id, _ctx(0.0, "MAXN")), ms)


def _contended(t: float) -> Context:
    return _ctx(t, "MAXN")


def test_a_variant_left_on_a_violation_is_not_retaken_at_once_and_backs_off_longer() -> None:
    predictor = Predictor(PROFILED, "dev")
    strategy = BudgetStrategy(predictor, Policy(latency_budget_ms=2.0, cooldown_s=1.0))
    first = strategy.decide(_contended(0.0), None, None)
    top = first.variant_id
    assert top == "base@fp32"
    for _ in range(30):  # the served engine runs slow: its p99 breaks the budget
        _slow(predictor, top)
    left = strategy.decide(_contended(1.0), top, 0.0)
    assert left.changed and left.variant_id != top
    predictor.learner.reset()  # the contention is gone: on paper `top` fits again
    held = strategy.decide(_contended(2.5), left.variant_id, 1.0)
    assert held.variant_id == left.variant_id  # held off for 2 x cooldown after leaving
    back = strategy.decide(_contended(3.5), left.variant_id, 1.0)
    assert back.variant_id == top
    for _ in range(30):  # it breaks again at once: the hold doubles
        _slow(predictor, top)
    strategy.decide(_contended(4.0), top, 3.5)
    predictor.learner.reset()
    assert strategy.decide(_contended(7.5), left.variant_id, 4.0).variant_id != top
    assert strategy.decide(_contended(8.5), left.variant_id, 4.0).variant_id == top


def test_a_power_mode_change_clears_the_holds() -> None:
    predictor = Predictor(PROFILED, "dev")
    strategy = BudgetStrategy(predictor, Policy(latency_budget_ms=2.0, cooldown_s=1.0))
    for _ in range(30):
        _slow(predictor, "base@fp32")
    left = strategy.decide(_ctx(1.0, "MAXN"), "base@fp32", 0.0)
    predictor.learner.reset()
    assert left.variant_id != "base@fp32"
    assert strategy.decide(_ctx(2.0, "MIN"), left.variant_id, 1.0).variant_id != "base@fp32"
    assert strategy.decide(_ctx(3.5, "MAXN"), left.variant_id, 1.0).variant_id == "base@fp32"


def _preloading_loop(load_ms: dict[str, float], budget_ms: float, **memory: object):
    """Four variants, loads that took ``load_ms`` before, ``budget_ms`` of loading (and
    1000 MB of memory, or the ``memory`` settings)."""
    catalog = profiled_catalog(
        *(
            profiled_variant(stages, acc, {"MAXN": ms})
            for stages, acc, ms in [
                (("id",), 0.93, 1.0), (("p25",), 0.92, 0.8), (("p50",), 0.91, 0.6),
                (("dw",), 0.90, 0.3),
            ]
        )
    )  # fmt: skip
    pool = EnginePool(ConstantEngine)
    pool.load_ms = load_ms.get  # type: ignore[method-assign]  # what earlier loads took
    budget = {"preload_memory_mb": 1000.0, "preload_load_ms": budget_ms, **memory}
    loop, _ = _preloading(catalog, pool, **budget)
    return loop, pool, [v.id for v in catalog.variants]


def test_preloads_stop_where_loading_them_would_take_longer_than_the_time_budget() -> None:
    _, _, ids = _preloading_loop({}, 150.0)
    loop, pool, _ = _preloading_loop(dict.fromkeys(ids, 100.0), 150.0)
    loop.tick()
    assert pool.active_id == ids[0]
    everyone = loop.strategy.neighbours(ids[0])
    assert len(everyone) == 3
    assert pool.standby == (everyone[0],)  # the nearest: one 100 ms load fits 150 ms

    roomy, pool, _ = _preloading_loop(dict.fromkeys(ids, 10.0), 150.0)
    roomy.tick()
    assert pool.standby == tuple(everyone)  # cheap loads: every neighbour


def test_where_the_pool_loads_on_its_idle_thread_only_memory_bounds_the_preloads() -> None:
    _, _, ids = _preloading_loop({}, 150.0)
    loop, pool, _ = _preloading_loop(dict.fromkeys(ids, 100.0), 150.0)
    pool.set_loader(ConstantEngine, idle_loads=True)  # engines at one thread
    loop.tick()
    assert pool.idle.done(30.0)
    assert pool.standby == tuple(loop.strategy.neighbours(ids[0]))  # all three, 300 ms
    pool.close()

    two_fit = {"preload_memory_mb": 10.0, "engine_memory_mb": lambda _: 4.0}
    tight, pool, _ = _preloading_loop(dict.fromkeys(ids, 100.0), 150.0, **two_fit)
    pool.set_loader(ConstantEngine, idle_loads=True)
    tight.tick()
    assert pool.idle.done(30.0)
    assert pool.standby == tuple(tight.strategy.neighbours(ids[0])[:2])
    pool.close()


def test_a_variant_whose_load_time_is_unknown_is_loaded_once_while_time_is_left() -> None:
    loop, pool, _ = _preloading_loop({}, 150.0)
    loop.tick()
    assert len(pool.standby) == 1  # the first one's load fills the time


def test_engines_already_loaded_cost_no_load_time() -> None:
    loop, pool, ids = _preloading_loop({}, 150.0)
    pool.activate(ids[2])
    pool.preload([ids[1], ids[3]])
    loop.tick()  # to the most accurate; its neighbours are loaded (standby, or pinned)
    assert pool.active_id == ids[0]
    assert set(pool.standby) == set(ids[1:])  # no load time spent: all three kept


def test_standby_engines_a_reload_dropped_are_preloaded_again_without_a_switch() -> None:
    _, _, ids = _preloading_loop({}, 150.0)
    loop, pool, _ = _preloading_loop(dict.fromkeys(ids, 100.0), 150.0)
    loop.tick()
    standby = pool.standby
    assert standby and pool.active_id == ids[0]
    pool.reload()  # a new thread count: the standby engines are dropped
    assert pool.standby == ()
    loop.tick()  # nothing to switch, but the step down is loaded again
    assert pool.active_id == ids[0] and pool.standby == standby
